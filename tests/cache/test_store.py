from __future__ import annotations

import multiprocessing as mp
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from fsar.cache import schema
from fsar.cache.create import create_cache
from fsar.cache.schema import CacheSpec, Status
from fsar.cache.store import CacheError, open_cache, shard_ranges
from tests.conftest import SMALL_TABLE
from tests.conftest import build_small_features as features
from tests.conftest import build_small_fill as fill
from tests.conftest import build_small_spec as make_spec

IDS, LABELS, SPLITS, CLASSES = SMALL_TABLE


def test_round_trip_and_table(tmp_path: Path) -> None:
    spec = make_spec()
    path = tmp_path / "c.zarr"
    cache = create_cache(path, spec, IDS, LABELS, SPLITS, CLASSES)
    fill(path, spec, cache.chunk_ranges())
    back = open_cache(path)
    assert back.spec.identity() == spec.identity() and back.spec.fsar_version
    assert back.ids.tolist() == IDS
    assert back.class_of(back.rows_of_split("val")).tolist() == ["c", "c"]
    rows = np.array([9, 2, 9, 5])
    expected = np.concatenate([features(range(s, e), spec, s)[0] for s, e in cache.chunk_ranges()])
    np.testing.assert_array_equal(back.frames("rgb", rows, view=1), expected[rows, 1].astype(np.float16))
    patches = np.concatenate([features(range(s, e), spec, s)[1] for s, e in cache.chunk_ranges()])
    np.testing.assert_array_equal(back.patches("rgb", rows), patches[rows, 0].astype(np.float16))
    assert back.done("rgb").all()
    assert back.rows_for(["v03", "v10"]).tolist() == [3, 10]


def test_unknown_ids_and_missing_modality_are_clear(tmp_path: Path) -> None:
    cache = create_cache(tmp_path / "c.zarr", make_spec(patches=0), IDS, LABELS, SPLITS, CLASSES)
    with pytest.raises(CacheError, match="not in cache"):
        cache.rows_for(["v01", "nope"])
    with pytest.raises(CacheError, match="fsar extract"):
        cache.frames("flow")
    with pytest.raises(CacheError, match="--patches"):
        cache.patches("rgb")


def test_write_must_be_whole_chunks(tmp_path: Path) -> None:
    spec = make_spec()
    cache = create_cache(tmp_path / "c.zarr", spec, IDS, LABELS, SPLITS, CLASSES)
    frames, patches = features(range(2), spec, 0)
    with pytest.raises(ValueError, match="whole chunk"):
        cache.write_chunk("rgb", 2, frames, np.zeros(2, np.int8), ["", ""], np.ones(2, np.int32), patches)


def test_failures_are_recorded(tmp_path: Path) -> None:
    spec = make_spec(patches=0)
    cache = create_cache(tmp_path / "c.zarr", spec, IDS, LABELS, SPLITS, CLASSES)
    frames, _ = features(range(4), spec, 0)
    status = np.array([Status.OK, Status.UNREADABLE, Status.PADDED, Status.OK], np.int8)
    cache.write_chunk("rgb", 0, frames, status, ["", "moov atom not found", "", ""], np.array([9, 0, 3, 9]))
    assert open_cache(cache.path).errors("rgb") == {"v01": "moov atom not found"}


def test_incompatible_append_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    create_cache(path, make_spec(), IDS, LABELS, SPLITS, CLASSES)
    with pytest.raises(CacheError, match="backbone"):
        create_cache(path, make_spec(backbone="other"), IDS, LABELS, SPLITS, CLASSES)
    with pytest.raises(CacheError, match="other videos"):
        create_cache(path, make_spec(), IDS[:-1], LABELS[:-1], SPLITS[:-1], CLASSES)
    flow = create_cache(path, make_spec(modalities=("flow",)), IDS, LABELS, SPLITS, CLASSES)
    assert flow.modalities == ("rgb", "flow")


def test_schema_version_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    create_cache(path, make_spec(), IDS, LABELS, SPLITS, CLASSES)
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs[schema.ATTRS_KEY])
    attrs["schema_version"] = 99
    group.attrs[schema.ATTRS_KEY] = attrs
    with pytest.raises(CacheError, match="schema version 99"):
        open_cache(path)
    with pytest.raises(CacheError, match="no feature cache"):
        open_cache(tmp_path / "absent.zarr")


def test_shards_cover_chunks_once(tmp_path: Path) -> None:
    cache = create_cache(tmp_path / "c.zarr", make_spec(chunk_videos=2), IDS, LABELS, SPLITS, CLASSES)
    owned = [r for i in range(3) for r in shard_ranges(cache, i, 3)]
    assert sorted(owned) == cache.chunk_ranges()


def _writer(path: str, spec: CacheSpec, ranges: list[tuple[int, int]]) -> None:
    fill(Path(path), spec, ranges)


def test_concurrent_shard_writers_equal_one_writer(tmp_path: Path) -> None:
    spec = make_spec(chunk_videos=2)
    one = tmp_path / "one.zarr"
    two = tmp_path / "two.zarr"
    create_cache(one, spec, IDS, LABELS, SPLITS, CLASSES)
    cache = create_cache(two, spec, IDS, LABELS, SPLITS, CLASSES)
    fill(one, spec, cache.chunk_ranges())
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(two), spec, shard_ranges(cache, i, 2))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    a, b = open_cache(one), open_cache(two)
    np.testing.assert_array_equal(a.frames("rgb"), b.frames("rgb"))
    np.testing.assert_array_equal(a.patches("rgb", view=1), b.patches("rgb", view=1))
    assert b.done("rgb").all()


def test_spec_json_round_trip() -> None:
    spec = make_spec(modalities=("rgb", "flow"))
    assert CacheSpec.from_json(spec.to_json()) == spec
    assert replace(spec, created="later").identity() == spec.identity()
    with pytest.raises(ValueError, match="modalities"):
        make_spec(modalities=("depth",))


def test_fsspec_url_store_round_trip_and_resume() -> None:
    """An fsspec URL (here fsspec's in-memory file system) works like a local path, resume included."""
    spec = make_spec(patches=0, chunk_videos=4)
    url = "memory://fsar-test/url.zarr"
    cache = create_cache(url, spec, IDS, LABELS, SPLITS, CLASSES)
    frames, _ = features(range(4), spec, 0)
    cache.write_chunk("rgb", 0, frames, np.zeros(4, np.int8), [""] * 4, np.ones(4, np.int32))
    again = create_cache(url, spec, IDS, LABELS, SPLITS, CLASSES)  # reopens, does not overwrite
    assert again.done("rgb")[:4].all() and not again.done("rgb")[4:].any()
    np.testing.assert_array_equal(open_cache(url).frames("rgb", np.arange(4)), frames[:, 0].astype(np.float16))
    with pytest.raises(CacheError, match="no feature cache"):
        open_cache("memory://fsar-test/absent.zarr")
