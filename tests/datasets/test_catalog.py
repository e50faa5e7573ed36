"""Tests for the dataset catalog: packaged split lists and listing tiny fake dataset trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsar.datasets.catalog import (
    SPLITS,
    DatasetError,
    list_datasets,
    load_dataset,
    package_split_file,
    read_split_file,
)
from tests.conftest import build_split_lists as _write_lists

# (package folder, split) -> (lines, classes, min videos/class, max videos/class), from splits/SOURCES.md
PACKAGED = {
    ("kinetics_CMN", "train"): (6400, 64, 100, 100),
    ("kinetics_CMN", "val"): (1200, 12, 100, 100),
    ("kinetics_CMN", "test"): (2400, 24, 100, 100),
    ("ssv2_CMN", "train"): (6400, 64, 100, 100),
    ("ssv2_CMN", "val"): (1200, 12, 100, 100),
    ("ssv2_CMN", "test"): (2400, 24, 100, 100),
    ("ssv2_OTAM", "train"): (67013, 64, 156, 3170),
    ("ssv2_OTAM", "val"): (1926, 12, 56, 360),
    ("ssv2_OTAM", "test"): (2857, 24, 17, 272),
    ("hmdb_ARN", "train"): (4280, 31, 102, 548),
    ("hmdb_ARN", "val"): (1194, 10, 102, 143),
    ("hmdb_ARN", "test"): (1292, 10, 103, 232),
    ("ucf_ARN", "train"): (9154, 70, 100, 164),
    ("ucf_ARN", "val"): (1421, 10, 114, 167),
    ("ucf_ARN", "test"): (2745, 21, 109, 166),
}
SOURCES = sorted({source for source, _ in PACKAGED})


@pytest.mark.parametrize(("source", "split"), sorted(PACKAGED))
def test_packaged_split_list_counts(source: str, split: str) -> None:
    lines, n_classes, lo, hi = PACKAGED[(source, split)]
    pairs = read_split_file(package_split_file(source, split))
    per_class: dict[str, int] = {}
    for cls, _ in pairs:
        per_class[cls] = per_class.get(cls, 0) + 1
    assert len(pairs) == lines
    assert len(per_class) == n_classes
    assert (min(per_class.values()), max(per_class.values())) == (lo, hi)


@pytest.mark.parametrize("source", SOURCES)
def test_packaged_splits_disjoint_classes_unique_ids(source: str) -> None:
    by_split = {s: read_split_file(package_split_file(source, s)) for s in SPLITS}
    classes = [{c for c, _ in by_split[s]} for s in SPLITS]
    assert not (classes[0] & classes[1] or classes[0] & classes[2] or classes[1] & classes[2])
    ids = [vid for s in SPLITS for _, vid in by_split[s]]
    assert len(ids) == len(set(ids))


def test_list_datasets_sizes() -> None:
    infos = {info.name: info for info in list_datasets()}
    assert set(infos) == {"ssv2", "kinetics100", "ucf101", "hmdb51", "synthetic", "folder"}
    ssv2 = {s.name: s for s in infos["ssv2"].split_sets}
    assert infos["ssv2"].default_split_set == "full"
    assert ssv2["full"].sizes["train"].classes == 64 and ssv2["full"].sizes["train"].videos == 67013
    assert ssv2["small"].sizes["test"].videos == 2400
    assert infos["folder"].split_sets[0].sizes == {}


def test_read_split_file_formats(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# comment\r\nA b/x1\r\n\nB/v_x2.avi 3\nC/x3\n", encoding="utf-8")
    assert read_split_file(path) == [("A b", "x1"), ("B", "v_x2"), ("C", "x3")]
    path.write_text("no_slash_here\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="list.txt:1"):
        read_split_file(str(path))


# --------------------------------------------------------------------------- fake trees


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _lines(source: str, split: str) -> list[tuple[str, str]]:
    return read_split_file(package_split_file(source, split))


def test_kinetics_matches_youtube_id_and_counts_missing(tmp_path: Path) -> None:
    (c0, v0), (c1, v1), (c2, v2) = _lines("kinetics_CMN", "test")[::100][:3]
    renamed = _touch(tmp_path / c0.replace(" ", "_") / f"{v0[:11]}_renamed.mp4")
    exact = _touch(tmp_path / "val_256" / c1 / f"{v1}.mp4")
    listing = load_dataset("kinetics100", tmp_path)
    found = {v.id: v for v in listing.videos}
    assert found[v0].path == renamed and found[v0].class_name == c0 and found[v0].kind == "file"
    assert found[v1].path == exact
    assert len(listing.videos) == 2
    assert len(listing.missing) == 10000 - 2 and ("test", f"{c2}/{v2}") in listing.missing


@pytest.mark.parametrize("split_set", ["full", "small"])
def test_ssv2_webm_mp4_and_frames(tmp_path: Path, split_set: str) -> None:
    source = {"full": "ssv2_OTAM", "small": "ssv2_CMN"}[split_set]
    (c0, v0), (_, v1), (_, v2) = _lines(source, "val")[:3]
    _touch(tmp_path / f"{v0}.webm")
    _touch(tmp_path / "20bn-something-something-v2" / f"{v1}.mp4")
    _touch(tmp_path / v2 / "00001.jpg")
    listing = load_dataset("ssv2", tmp_path, split_set=split_set)
    found = {v.id: v for v in listing.videos}
    assert set(found) == {v0, v1, v2}
    assert found[v0].path.suffix == ".webm" and found[v0].class_name == c0
    assert found[v1].path.suffix == ".mp4" and found[v2].kind == "frames"
    assert listing.split_set == split_set
    assert len(listing.classes["train"]) == 64


def test_ssv2_prefers_converted_mp4(tmp_path: Path) -> None:
    _, vid = _lines("ssv2_OTAM", "test")[0]
    _touch(tmp_path / f"{vid}.webm")
    mp4 = _touch(tmp_path / f"{vid}.mp4")
    assert load_dataset("ssv2", tmp_path).split("test")[0].path == mp4


def test_ssv2_small_labels_validation(tmp_path: Path) -> None:
    (c0, v0), (c1, v1) = _lines("ssv2_CMN", "test")[0], _lines("ssv2_CMN", "test")[100]
    assert c1 != c0
    _touch(tmp_path / f"{v0}.webm")
    all_classes = {c for s in SPLITS for c, _ in _lines("ssv2_CMN", s)}
    labels = {c.replace("something", "[something]", 1): str(i) for i, c in enumerate(sorted(all_classes))}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    templates = [{"id": v0, "template": c0}, {"id": v1, "template": c0}]
    (tmp_path / "labels" / "validation.json").write_text(json.dumps(templates), encoding="utf-8")
    with pytest.warns(UserWarning, match="1 SSv2-small ids"):
        load_dataset("ssv2", tmp_path, split_set="small")
    del labels[next(iter(labels))]
    (tmp_path / "labels" / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    with pytest.raises(DatasetError, match="not in .*labels.json"):
        load_dataset("ssv2", tmp_path, split_set="small")


@pytest.mark.parametrize(
    ("name", "source", "subdir"), [("ucf101", "ucf_ARN", "UCF-101"), ("hmdb51", "hmdb_ARN", ".")]
)
def test_ucf_hmdb_avi_and_frame_folders(tmp_path: Path, name: str, source: str, subdir: str) -> None:
    (c0, v0), (c1, v1) = _lines(source, "train")[0], _lines(source, "test")[0]
    avi = _touch(tmp_path / subdir / c0 / f"{v0}.avi")
    _touch(tmp_path / subdir / c1 / v1 / "img_00001.jpg")
    (tmp_path / subdir / c1 / "empty_dir").mkdir()
    listing = load_dataset(name, tmp_path)
    assert [(v.id, v.kind) for v in listing.videos] == [(v0, "file"), (v1, "frames")]
    assert listing.videos[0].path == avi
    assert listing.class_index(listing.videos[0]) == listing.classes["train"].index(c0)
    n_train_val = len(listing.classes["train"]) + len(listing.classes["val"])
    assert listing.labels()[1] == n_train_val + listing.classes["test"].index(c1)


def test_synthetic_layout(tmp_path: Path) -> None:
    _write_lists(tmp_path / "splits", {"train": ["a/a0", "a/a1", "b/b0"], "val": ["c/c0"], "test": ["d/d0"]})
    for line in ("a/a0", "a/a1", "b/b0", "c/c0", "d/d0"):
        _touch(tmp_path / "videos" / f"{line}.mp4")
    (tmp_path / "classes.json").write_text("{}", encoding="utf-8")
    listing = load_dataset("synthetic", tmp_path)
    assert listing.classes == {"train": ("a", "b"), "val": ("c",), "test": ("d",)}
    assert listing.class_names == ("a", "b", "c", "d")
    assert listing.labels() == (0, 0, 1, 2, 3)
    assert listing.missing == ()


def test_folder_with_user_split_lists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _touch(data / "jump" / "j1.mkv")
    _touch(data / "run" / "r1" / "f.png")
    lists = _write_lists(tmp_path / "lists", {"train": ["jump/j1.mkv"], "test": ["run/r1", "run/r2"]})
    listing = load_dataset("folder", data, split_dir=lists)
    assert [(v.split, v.id, v.kind) for v in listing.videos] == [
        ("train", "j1", "file"),
        ("test", "r1", "frames"),
    ]
    assert listing.missing == (("test", "run/r2"),)
    with pytest.raises(DatasetError, match="split_dir"):
        load_dataset("folder", data)


def test_wrong_root_and_no_videos(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist.*Check --root"):
        load_dataset("ucf101", tmp_path / "nope")
    with pytest.raises(DatasetError, match="no video of the ucf101 split lists.*<class>/<stem>.avi"):
        load_dataset("ucf101", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="split sets"):
        load_dataset("ssv2", tmp_path, split_set="medium")


def test_duplicate_ids_and_shared_classes_raise(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.mp4")
    lists = _write_lists(tmp_path / "dup", {"train": ["a/x"], "test": ["b/x"]})
    with pytest.raises(DatasetError, match="more than once"):
        load_dataset("folder", tmp_path, split_dir=lists)
    lists = _write_lists(tmp_path / "shared", {"train": ["a/x"], "test": ["a/y"]})
    with pytest.raises(DatasetError, match="disjoint"):
        load_dataset("folder", tmp_path, split_dir=lists)
