from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from fsar.cache.create import create_cache
from fsar.cache.h5 import export_h5, import_h5
from fsar.cache.schema import Status
from fsar.cache.store import CacheError, open_cache
from fsar.cache.tools import describe_cache, verify_cache
from tests.conftest import SmallStore


def test_verify_counts_missing_failed_and_non_finite(tmp_path: Path, small_store: SmallStore) -> None:
    spec = small_store.spec(patches=0, chunk_videos=4)
    path = tmp_path / "c.zarr"
    cache = create_cache(path, spec, *small_store.table)
    frames = np.ones((4, spec.views, spec.frames, spec.feature_dim), np.float32)
    frames[2, 0, 1, 3] = np.nan
    status = np.array([0, Status.UNREADABLE, 0, Status.PADDED], np.int8)
    cache.write_chunk("rgb", 0, frames, status, ["", "bad file", "", ""], np.ones(4, np.int32))
    report = verify_cache(path)
    (rgb,) = report.modalities
    assert (rgb.total, rgb.done, rgb.non_finite_videos) == (11, 4, 1)
    assert rgb.status_counts == {"ok": 2, "unreadable": 1, "padded": 1}
    assert rgb.failures == {"v01": "bad file"}
    assert not report.ok
    text = describe_cache(path)
    assert "train          3 extracted, 1 unreadable, 0 missing, 2 not yet extracted, of 6 listed" in text
    assert "test           0 extracted, 0 unreadable, 0 missing, 3 not yet extracted, of 3 listed" in text


def test_h5_round_trip(tmp_path: Path, small_store: SmallStore) -> None:
    ids, labels, splits, classes = small_store.table
    spec = small_store.spec(patches=0, views=1)
    path = tmp_path / "c.zarr"
    cache = create_cache(path, spec, *small_store.table)
    small_store.fill(path, spec, cache.chunk_ranges())
    n = export_h5(path, tmp_path / "f.h5")
    assert n == len(ids)
    back = import_h5(tmp_path / "f.h5", tmp_path / "back.zarr").cache
    src = open_cache(path)
    np.testing.assert_array_equal(back.frames("rgb"), src.frames("rgb"))
    assert back.ids.tolist() == ids and back.class_names == tuple(classes)
    assert back.splits.tolist() == splits and back.labels.tolist() == labels


def test_import_plain_dump_needs_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "dump.h5", "w") as f:
        f["all_feats"] = rng.standard_normal((6, 8, 16)).astype(np.float32)
        f["all_labels"] = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(CacheError, match="--split"):
        import_h5(tmp_path / "dump.h5", tmp_path / "x.zarr")
    cache = import_h5(tmp_path / "dump.h5", tmp_path / "x.zarr", split="test", chunk_videos=4).cache
    assert cache.class_names == ("class_0", "class_1", "class_2")
    assert len(cache.rows_of_split("test")) == 6
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["feats"] = np.zeros((2, 3))
    with pytest.raises(CacheError, match="no labels dataset"):
        import_h5(tmp_path / "bad.h5", tmp_path / "y.zarr", split="test")
