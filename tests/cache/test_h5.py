"""HDF5 import keeps the dump's numbers and names: dtype, values beyond float16, dataset names, preprocessing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from fsar.cache import schema
from fsar.cache.create import create_cache
from fsar.cache.h5 import export_h5, import_h5
from fsar.cache.store import CacheError, open_cache, store_exists
from fsar.cache.tools import describe_cache
from fsar.episodes import save_episodes
from fsar.episodes.pool import episodes_for
from fsar.runner.evaluate import EvalRun, evaluate
from tests.conftest import SmallStore

N, T, D = 12, 4, 8


def write_dump(path: Path, all_feats: np.ndarray, **datasets: object) -> Path:
    """An HDF5 dump holding ``all_feats``, labels as all_labels, plus ``datasets`` by name."""
    with h5py.File(path, "w") as f:
        f["all_feats"] = all_feats
        for name, data in {"all_labels": np.arange(len(all_feats)) % 3, **datasets}.items():
            if isinstance(data, list):
                f.create_dataset(name, data=np.asarray(data, dtype=object), dtype=h5py.string_dtype())
            else:
                f[name] = data
    return path


def features(dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, T, D)).astype(dtype)


def test_float32_dump_round_trips_exactly(tmp_path: Path) -> None:
    feats = features()
    dump = write_dump(tmp_path / "dump.h5", feats, splits=["test"] * N)
    imported = import_h5(dump, tmp_path / "c.zarr", chunk_videos=5)
    cache = open_cache(tmp_path / "c.zarr")
    back = cache.frames("rgb")
    np.testing.assert_array_equal(back, feats)
    assert back.dtype == np.float32
    assert cache.spec.feature_dtype == "float32" and imported.source_dtype == "float32" and not imported.notes
    assert export_h5(tmp_path / "c.zarr", tmp_path / "again.h5") == N
    with h5py.File(tmp_path / "again.h5") as f:
        again = f["all_feats"][()]
    assert again.dtype == np.float32
    np.testing.assert_array_equal(again, feats)


def test_float16_dump_stays_float16_and_float64_becomes_float32_saying_so(tmp_path: Path) -> None:
    half = features(np.float16)
    imported = import_h5(write_dump(tmp_path / "h.h5", half), tmp_path / "h.zarr", split="test")
    assert imported.cache.spec.feature_dtype == "float16"
    np.testing.assert_array_equal(imported.cache.frames("rgb"), half)
    double = features(np.float64)
    imported = import_h5(write_dump(tmp_path / "d.h5", double), tmp_path / "d.zarr", split="test")
    assert imported.cache.spec.feature_dtype == "float32"
    assert imported.notes == ("all_feats is float64: stored as float32",)
    np.testing.assert_array_equal(imported.cache.frames("rgb"), double.astype(np.float32))


def test_values_beyond_float16_are_refused_when_float16_is_asked(tmp_path: Path) -> None:
    feats = features()
    feats[7, 2, 3] = 1e5
    dump = write_dump(tmp_path / "dump.h5", feats)
    with pytest.raises(CacheError, match=r"all_feats holds values up to 100000, beyond float16's range "
                                         r"\(±65504\): import with --dtype keep") as err:
        import_h5(dump, tmp_path / "half.zarr", split="test", dtype="float16")
    assert "\n" not in str(err.value)
    assert not store_exists(tmp_path / "half.zarr")
    kept = import_h5(dump, tmp_path / "kept.zarr", split="test").cache
    assert kept.frames("rgb")[7, 2, 3] == 1e5
    np.testing.assert_array_equal(kept.frames("rgb"), feats)
    small = import_h5(write_dump(tmp_path / "small.h5", features()), tmp_path / "small.zarr", split="test",
                      dtype="float16").cache
    assert small.spec.feature_dtype == "float16"
    np.testing.assert_array_equal(small.frames("rgb"), features().astype(np.float16))


def test_non_finite_dumps_stay_refused(tmp_path: Path) -> None:
    feats = features()
    feats[3, 0, 0] = np.inf
    feats[5, 1, 2] = feats[5, 2, 1] = np.nan
    with pytest.raises(CacheError, match=r"all_feats holds NaN or inf values \(in 2 video\(s\)\)"):
        import_h5(write_dump(tmp_path / "dump.h5", feats), tmp_path / "c.zarr", split="test")


@pytest.mark.parametrize("names", [
    ("all_feats", "all_labels", "video_ids", "classes", "splits"),
    ("features", "labels", "video_names", "class_names", "split"),
    ("feats", "all_labels", "names", "classes", "split"),
])
def test_common_dataset_names_are_used(tmp_path: Path, names: tuple[str, ...]) -> None:
    feats_name, labels_name, ids_name, classes_name, splits_name = names
    ids = [f"clip_{i}" for i in range(N)]
    with h5py.File(tmp_path / "dump.h5", "w") as f:
        f[feats_name] = features()
        f[labels_name] = np.arange(N) % 3
        for name, values in ((ids_name, ids), (classes_name, ["run", "jump", "swim"]),
                             (splits_name, ["train"] * 6 + ["test"] * 6)):
            f.create_dataset(name, data=np.asarray(values, dtype=object), dtype=h5py.string_dtype())
    cache = import_h5(tmp_path / "dump.h5", tmp_path / "c.zarr").cache
    assert cache.ids.tolist() == ids
    assert cache.class_names == ("run", "jump", "swim")
    assert cache.splits.tolist() == ["train"] * 6 + ["test"] * 6
    np.testing.assert_array_equal(cache.frames("rgb"), features())


def test_an_unknown_dataset_name_is_refused_with_the_list(tmp_path: Path) -> None:
    dump = write_dump(tmp_path / "dump.h5", features(), video_id=[f"clip_{i}" for i in range(N)])
    with pytest.raises(CacheError) as err:
        import_h5(dump, tmp_path / "c.zarr", split="test")
    message = str(err.value)
    assert "dataset(s) video_id are not known" in message
    assert "all_feats [12, 4, 8] float32" in message and "all_labels [12]" in message  # what the file holds
    assert "ids: ids | video_ids | video_names | names" in message  # the names accepted
    assert not store_exists(tmp_path / "c.zarr")


def test_missing_features_or_labels_list_what_the_file_holds(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["feats"] = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(CacheError, match=r"has no labels dataset \(labels: all_labels \| labels\); the file holds "
                                         r"feats \[2, 3, 4\] float32"):
        import_h5(tmp_path / "bad.h5", tmp_path / "c.zarr", split="test")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["labels"] = np.zeros(2, np.int64)
    with pytest.raises(CacheError, match=r"has no features dataset \(features: all_feats \| features \| feats\)"):
        import_h5(tmp_path / "empty.h5", tmp_path / "c.zarr", split="test")
    dump = write_dump(tmp_path / "two.h5", features(), features=features())
    with pytest.raises(CacheError, match="all_feats and features both name the features"):
        import_h5(dump, tmp_path / "c.zarr", split="test")


def test_an_imported_cache_says_its_preprocessing_is_unknown(tmp_path: Path) -> None:
    import_h5(write_dump(tmp_path / "dump.h5", features()), tmp_path / "c.zarr", split="test")
    spec = open_cache(tmp_path / "c.zarr").spec
    assert (spec.short_side, spec.input_size, spec.mean, spec.std, spec.sampling) == (0, 0, (), (), "imported")
    text = describe_cache(tmp_path / "c.zarr")
    assert "input      unknown (imported from dump.h5)" in text
    assert "short side" not in text and "0.485" not in text
    assert "D=8 views=1 patches=none float32" in text


def test_an_imported_float32_cache_is_evaluated(tmp_path: Path) -> None:
    # Features far beyond float16's range: stored as float16 they would be inf, and refused.
    rng = np.random.default_rng(1)
    classes, per_class = 5, 4
    labels = np.repeat(np.arange(classes), per_class)
    centres = rng.standard_normal((classes, T, D))
    feats = (1e5 * (centres[labels] + 0.1 * rng.standard_normal((len(labels), T, D)))).astype(np.float32)
    dump = write_dump(tmp_path / "dump.h5", feats, all_labels=labels)
    cache = import_h5(dump, tmp_path / "c.zarr", split="test", chunk_videos=8).cache
    episodes = episodes_for(cache, split="test", way=5, shot=1, query=2, n=10, seed=0, protocol="custom")
    ep_path = save_episodes(episodes, tmp_path / "ep.npz")
    record = evaluate(EvalRun("otam"), tmp_path / "c.zarr", ep_path, progress=False)
    assert record.accuracy == 100.0 and record.correct.shape == (10, 10)
    assert cache.spec.feature_dtype == "float32"


def test_feature_dtype_is_part_of_the_identity_and_old_caches_read_as_float16(tmp_path: Path,
                                                                                small_store: SmallStore) -> None:
    spec = small_store.spec(patches=0)
    assert "feature_dtype" not in spec.identity()  # float16 caches keep the identity (and hash) they had
    ids, labels, splits, names = ["a", "b"], [0, 1], ["test", "test"], ["x", "y"]
    create_cache(tmp_path / "c.zarr", spec, ids, labels, splits, names)
    wide = dataclasses.replace(spec, feature_dtype="float32")
    with pytest.raises(CacheError, match="feature_dtype: cache has 'float16', this run 'float32'"):
        create_cache(tmp_path / "c.zarr", wide, ids, labels, splits, names)
    create_cache(tmp_path / "w.zarr", wide, ids, labels, splits, names)
    with pytest.raises(CacheError, match="feature_dtype: cache has 'float32', this run 'float16'"):
        create_cache(tmp_path / "w.zarr", spec, ids, labels, splits, names)
    assert zarr.open_array(str(tmp_path / "w.zarr" / "rgb" / "frames")).dtype == np.float32
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="r+")
    attrs = json.loads(json.dumps(group.attrs[schema.ATTRS_KEY]))
    attrs.pop("feature_dtype")  # as written before the field existed
    group.attrs[schema.ATTRS_KEY] = attrs
    assert open_cache(tmp_path / "c.zarr").spec.feature_dtype == "float16"
    with pytest.raises(ValueError, match="feature_dtype"):
        small_store.spec(feature_dtype="int8")


def test_import_command_dtype_option(tmp_path: Path, cli_run: Callable[..., tuple[int, str]]) -> None:
    run = cli_run
    feats = features()
    feats[0, 0, 0] = -2e5
    dump = write_dump(tmp_path / "dump.h5", feats)
    code, out = run("cache", "import-h5", str(dump), str(tmp_path / "h.zarr"), "--split", "test", "--dtype",
                    "float16")
    assert code == 1 and "all_feats holds values up to 200000" in out and "--dtype keep" in out
    code, out = run("cache", "import-h5", str(dump), str(tmp_path / "k.zarr"), "--split", "test")
    assert code == 0 and f"imported {N} videos" in out and "float32 features" in out
    code, out = run("cache", "import-h5", "--help")
    assert "--dtype [keep|float16]" in out and "65504" in out
