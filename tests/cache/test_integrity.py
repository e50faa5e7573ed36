"""Faults a cache can suffer never turn into a number: partial caches, lost or damaged chunks, mixed settings.

Each test injects one fault into a small cache the test makes itself and checks that fsar refuses, saying
which videos are affected and what to do, instead of scoring fill values or damaged bytes.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fsar.cache import schema
from fsar.cache.create import create_cache
from fsar.cache.store import CacheError, open_cache
from fsar.cache.tools import verify_cache
from fsar.episodes import load_episodes
from fsar.runner.evaluate import EvalRun, evaluate


def chunk_file(cache_path: Path, array: str, chunk: int) -> Path:
    """The file of chunk ``chunk`` (along the videos) of ``array``; every other axis is one chunk."""
    opened = open_cache(cache_path)
    zarray = opened.group[array]
    key = zarray.metadata.encode_chunk_key((chunk,) + (0,) * (zarray.ndim - 1))
    path = cache_path / array / key
    assert path.is_file(), path
    return path


def test_a_list_naming_videos_that_are_not_done_is_refused(
        tmp_path: Path, toy_cache: Callable[..., Path], write_list: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = write_list(tmp_path, cache_path, n=20, shot=1)
    complete = evaluate(EvalRun("otam"), cache_path, episodes, progress=False)
    # As if extraction had been killed before the chunk of rows 56-63 was committed.
    cache = open_cache(cache_path, mode="a")
    cache.group[schema.done_path("rgb")][56:64] = False
    cache.group[schema.frames_path("rgb")][56:64] = 0
    used = set(load_episodes(episodes).ids.tolist())
    lost = sorted(used & set(cache.ids[56:64].tolist()))
    assert lost  # the list uses some of them
    with pytest.raises(CacheError) as err:
        evaluate(EvalRun("otam"), cache_path, episodes, progress=False)
    message = str(err.value)
    assert lost[0] in message and "fsar extract" in message
    assert open_cache(cache_path).content_hash() != complete.cache_sha256  # the set of done rows is identity


def test_a_deleted_feature_chunk_is_never_read_as_fill_values(
        tmp_path: Path, toy_cache: Callable[..., Path], write_list: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = write_list(tmp_path, cache_path, n=20, shot=1)
    chunk_file(cache_path, schema.frames_path("rgb"), 7).unlink()  # rows 56-63
    with pytest.raises(CacheError, match=r"rgb/frames.*missing") as err:
        evaluate(EvalRun("otam"), cache_path, episodes, progress=False)
    assert "fsar cache verify" in str(err.value)
    report = verify_cache(cache_path)
    assert not report.ok
    assert set(report.modalities[0].damaged) == set(open_cache(cache_path).ids[56:64].tolist())


def test_a_deleted_label_chunk_is_refused_when_the_cache_opens(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    chunk_file(cache_path, schema.VIDEO_LABEL, 2).unlink()
    with pytest.raises(CacheError, match=r"videos/label.*missing"):
        open_cache(cache_path)


def test_a_flipped_bit_is_detected_on_read(
        tmp_path: Path, toy_cache: Callable[..., Path], write_list: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = write_list(tmp_path, cache_path, n=20, shot=1)
    path = chunk_file(cache_path, schema.frames_path("rgb"), 7)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"damaged") as err:
        evaluate(EvalRun("otam"), cache_path, episodes, progress=False)
    assert "fsar cache verify" in str(err.value)
    report = verify_cache(cache_path)
    assert not report.ok and open_cache(cache_path).ids[56] in report.modalities[0].damaged


def test_a_truncated_chunk_is_detected(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    path = chunk_file(cache_path, schema.frames_path("rgb"), 3)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    cache = open_cache(cache_path)
    with pytest.raises(CacheError, match="damaged"):
        cache.frames("rgb", np.arange(24, 32))
    assert cache.ids[24] in verify_cache(cache_path).modalities[0].damaged


def test_repair_marks_damaged_rows_not_done(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    chunk_file(cache_path, schema.frames_path("rgb"), 1).unlink()
    report = verify_cache(cache_path, repair=True)
    assert not report.ok
    done = open_cache(cache_path).done("rgb")
    assert not done[8:16].any() and done[:8].all() and done[16:].all()
    again = verify_cache(cache_path)
    assert not again.modalities[0].damaged  # what is left is incomplete, not damaged
    assert again.modalities[0].done == open_cache(cache_path).n_videos - 8


def test_precision_is_part_of_the_cache_identity(tmp_path: Path) -> None:
    spec = schema.CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=4,
                            frames=2, precision="bf16")
    ids, labels, splits, names = ["a", "b"], [0, 1], ["test", "test"], ["x", "y"]
    create_cache(tmp_path / "c.zarr", spec, ids, labels, splits, names)
    other = dataclasses.replace(spec, precision="fp32")
    with pytest.raises(CacheError, match="precision"):
        create_cache(tmp_path / "c.zarr", other, ids, labels, splits, names)


def test_copies_of_a_cache_verify_alike(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
    # The checks read the store's own files: a copied cache (another path) is as good as the original.
    cache_path = toy_cache(tmp_path / "c.zarr")
    shutil.copytree(cache_path, tmp_path / "copy.zarr")
    assert verify_cache(tmp_path / "copy.zarr").ok


def test_verify_command_names_damaged_videos_and_repairs(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
    from click.testing import CliRunner

    from fsar.cli import main

    cache_path = toy_cache(tmp_path / "c.zarr")
    chunk_file(cache_path, schema.frames_path("rgb"), 2).unlink()
    first = open_cache(cache_path).ids[16]
    result = CliRunner().invoke(main, ["cache", "verify", str(cache_path)])
    assert result.exit_code == 1
    assert f"damaged {first}: chunk 2 of rgb/frames is missing" in result.output
    assert "fsar cache verify --repair" in result.output
    result = CliRunner().invoke(main, ["cache", "verify", "--repair", str(cache_path)])
    assert result.exit_code == 1 and "marked not done" in result.output
    result = CliRunner().invoke(main, ["cache", "verify", str(cache_path)])
    assert result.exit_code == 1 and "0 damaged" in result.output and "incomplete" in result.output


def test_non_finite_features_are_refused_naming_the_video(
        tmp_path: Path, toy_cache: Callable[..., Path], write_list: Callable[..., Path]) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = write_list(tmp_path, cache_path, n=20, shot=1)
    cache = open_cache(cache_path, mode="a")
    row = int(cache.rows_for(load_episodes(episodes).query_ids[0, 0].ravel())[0])
    frames = cache.group[schema.frames_path("rgb")]
    block = frames[row]
    block[0, 1, 2] = np.inf  # as an fp16 overflow of the backbone would leave it
    frames[row] = block
    with pytest.raises(CacheError, match=rf"NaN or inf features .*\({cache.ids[row]}\).*--precision fp32"):
        evaluate(EvalRun("otam"), cache_path, episodes, progress=False)


def test_a_cache_without_checksums_is_said_to_be_so(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
    from click.testing import CliRunner

    from fsar.cli import main

    cache_path = toy_cache(tmp_path / "c.zarr")
    group = open_cache(cache_path, mode="a").group
    attrs = dict(group.attrs[schema.ATTRS_KEY])
    group.attrs[schema.ATTRS_KEY] = {**attrs, "integrity": 0}  # as a cache written before checksums
    result = CliRunner().invoke(main, ["cache", "verify", str(cache_path)])
    assert result.exit_code == 0 and "written before chunk checksums" in result.output
    info = CliRunner().invoke(main, ["cache", "info", str(cache_path)]).output
    assert "integrity  none" in info and "integrity  every chunk checksummed" in CliRunner().invoke(
        main, ["cache", "info", str(toy_cache(tmp_path / "new.zarr"))]).output
