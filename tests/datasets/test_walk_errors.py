"""Directory-walk errors (symlink loops, unreadable folders, dangling links) under a dataset root.

The catalog never raises OSError for them: it records each in ``DatasetListing.walk_errors`` and
lists the split-file lines that can only be resolved to such a path as entries with that path, which
extraction then records as unreadable. Running as root, ``chmod 000`` does not stop a read, so
"Permission denied" is simulated by making ``os.scandir`` fail for one path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from fsar.datasets.catalog import DatasetError, DatasetListing, load_dataset, package_split_file, read_split_file
from tests.conftest import build_split_lists as _write_lists

ELOOP = os.strerror(errno.ELOOP)  # "Too many levels of symbolic links"
EACCES = os.strerror(errno.EACCES)  # "Permission denied"
ENOENT = os.strerror(errno.ENOENT)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _loop(path: Path) -> Path:
    """A symlink to itself: every stat or listing of it fails with ELOOP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.name)
    return path


def _deny(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """``os.scandir`` of exactly these folders fails with EACCES, as for a folder without read permission."""
    real = os.scandir
    blocked = {str(p) for p in denied}

    def scandir(path: str | os.PathLike[str] = ".") -> object:
        if os.fspath(path) in blocked:
            raise PermissionError(errno.EACCES, EACCES, os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def _lines(source: str, split: str) -> list[tuple[str, str]]:
    return read_split_file(package_split_file(source, split))


def _entries(listing: DatasetListing) -> list[tuple[str, str, Path]]:
    return [(v.split, v.id, v.path) for v in listing.videos]


def _assert_recorded(listing: DatasetListing, unreadable: Iterable[Path]) -> None:
    """Each unreadable entry's path is named in walk_errors (extraction looks its reason up there)."""
    errors = dict(listing.walk_errors)
    assert {str(p) for p in unreadable} <= set(errors)


def test_class_tree_symlink_loops_become_unreadable_entries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j1 = _touch(data / "jump" / "j1.mkv")
    j2 = _loop(data / "jump" / "j2.mkv")
    j3 = data / "jump" / "j3.mkv"
    j3.symlink_to(tmp_path / "gone.mkv")  # dangling: still the only path of j3
    spin = _loop(data / "spin")  # a whole class folder that loops
    lists = _write_lists(tmp_path / "lists", {
        "train": ["jump/j1", "jump/j2", "jump/j3"], "test": ["spin/s1", "spin/s2", "run/r1"],
    })
    listing = load_dataset("folder", data, split_dir=lists)
    assert _entries(listing) == [
        ("train", "j1", j1), ("train", "j2", j2), ("train", "j3", j3), ("test", "s1", spin), ("test", "s2", spin),
    ]
    assert listing.missing == (("test", "run/r1"),)
    assert dict(listing.walk_errors) == {str(j2): ELOOP, str(j3): ENOENT, str(spin): ELOOP}
    assert [v.id for v in listing.unreadable()] == ["j2", "j3", "s1", "s2"]


@pytest.mark.parametrize(("name", "source", "base"), [
    ("ucf101", "ucf_ARN", "UCF-101"), ("hmdb51", "hmdb_ARN", "."), ("kinetics100", "kinetics_CMN", "val_256"),
])
def test_packaged_class_tree_loop_folder(tmp_path: Path, name: str, source: str, base: str) -> None:
    (c0, v0), (c1, _) = _lines(source, "train")[0], _lines(source, "test")[0]
    video = _touch(tmp_path / base / c0 / f"{v0}.{'mp4' if name == 'kinetics100' else 'avi'}")
    loop = _loop(tmp_path / base / c1.replace(" ", "_"))
    listing = load_dataset(name, tmp_path)
    assert listing.videos[0].path == video
    c1_lines = [vid for cls, vid in _lines(source, "test") if cls == c1]
    assert [(v.id, v.path) for v in listing.unreadable()] == [(vid, loop) for vid in c1_lines]
    assert listing.walk_errors == ((str(loop), ELOOP),)
    assert len(listing.videos) + len(listing.missing) == sum(len(_lines(source, s)) for s in ("train", "val", "test"))


def test_ssv2_loop_file_and_unreadable_frame_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (_, v0), (_, v1), (_, v2), (_, v3) = _lines("ssv2_OTAM", "val")[:4]
    webm = _loop(tmp_path / f"{v0}.webm")
    frames = _touch(tmp_path / v1 / "00001.jpg").parent
    ok = _touch(tmp_path / "20bn-something-something-v2" / f"{v2}.mp4")
    shadowed = _loop(tmp_path / f"{v3}.webm")
    converted = _touch(tmp_path / f"{v3}.mp4")
    _deny(monkeypatch, frames)
    listing = load_dataset("ssv2", tmp_path)
    found = {v.id: (v.path, v.kind) for v in listing.videos}
    assert found == {v0: (webm, "file"), v1: (frames, "frames"), v2: (ok, "file"), v3: (converted, "file")}
    assert dict(listing.walk_errors) == {str(webm): ELOOP, str(frames): EACCES, str(shadowed): ELOOP}
    assert {v.id for v in listing.unreadable()} == {v0, v1}


def test_unreadable_class_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _touch(data / "jump" / "j1.mkv")
    spin = _touch(data / "spin" / "s1.mkv").parent
    lists = _write_lists(tmp_path / "lists", {"train": ["jump/j1"], "test": ["spin/s1", "spin/s2"]})
    _deny(monkeypatch, spin)
    listing = load_dataset("folder", data, split_dir=lists)
    assert [(v.id, v.path, v.kind) for v in listing.unreadable()] == [("s1", spin, "frames"), ("s2", spin, "frames")]
    assert listing.walk_errors == ((str(spin), EACCES),) and listing.missing == ()


def test_unreadable_base_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _deny(monkeypatch, tmp_path)
    with pytest.raises(DatasetError, match=f"{tmp_path}: {EACCES}"):
        load_dataset("ucf101", tmp_path)
    monkeypatch.undo()
    # A base folder holds videos of any line, so no line is attributed to it: they stay missing.
    (_, v0), (_, v1) = _lines("ssv2_OTAM", "test")[:2]
    _touch(tmp_path / f"{v0}.webm")
    sub = tmp_path / "20bn-something-something-v2"
    _touch(sub / f"{v1}.webm")
    _deny(monkeypatch, sub)
    listing = load_dataset("ssv2", tmp_path)
    assert [v.id for v in listing.videos] == [v0]
    assert listing.walk_errors == ((str(sub), EACCES),)
    assert ("test", f"{_lines('ssv2_OTAM', 'test')[1][0]}/{v1}") in listing.missing


def test_only_unreadable_videos_is_an_error_naming_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    loop = _loop(data / "spin")
    lists = _write_lists(tmp_path / "lists", {"test": ["spin/s1"]})
    with pytest.raises(DatasetError, match=f"could not be read.*{loop}: {ELOOP}"):
        load_dataset("folder", data, split_dir=lists)


def test_directory_loops_do_not_hang_or_count_as_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j1 = _touch(data / "jump" / "j1.mkv")
    frames = _touch(data / "run" / "r1" / "f.png").parent
    (data / "jump" / "back").symlink_to(data / "jump")  # loops back to its own class folder
    (data / "run" / "r1" / "up").symlink_to(data)  # a frame folder that links to the root
    (data / "alias").symlink_to(data)  # a "class folder" that is the root again
    lists = _write_lists(tmp_path / "lists", {"train": ["jump/j1", "jump/back"], "test": ["run/r1"]})
    listing = load_dataset("folder", data, split_dir=lists)
    assert [(v.id, v.path, v.kind) for v in listing.videos] == [("j1", j1, "file"), ("r1", frames, "frames")]
    assert listing.missing == (("train", "jump/back"),)
    assert listing.walk_errors == () and listing.unreadable() == ()


def test_normal_tree_has_no_walk_errors(tmp_path: Path) -> None:
    (c0, v0), (c1, v1) = _lines("ucf_ARN", "train")[0], _lines("ucf_ARN", "test")[0]
    avi = _touch(tmp_path / c0 / f"{v0}.avi")
    frames = _touch(tmp_path / c1 / v1 / "img_00001.jpg").parent
    (tmp_path / c1 / "empty_dir").mkdir()
    listing = load_dataset("ucf101", tmp_path)
    assert [(v.id, v.path, v.kind) for v in listing.videos] == [(v0, avi, "file"), (v1, frames, "frames")]
    assert listing.walk_errors == () and listing.unreadable() == ()


def test_extraction_records_the_entry_unreadable(tmp_path: Path) -> None:
    from fsar.cache.schema import Status
    from fsar.extract.source import SourceConfig, load_video

    data = tmp_path / "data"
    _touch(data / "jump" / "j1.mkv")
    loop = _loop(data / "jump" / "j2.mkv")
    lists = _write_lists(tmp_path / "lists", {"train": ["jump/j1", "jump/j2"]})
    listing = load_dataset("folder", data, split_dir=lists)
    (entry,) = listing.unreadable()
    item = load_video(0, entry.id, entry.path, SourceConfig())
    assert item.status == Status.UNREADABLE and str(loop) in item.error


def test_looping_root_says_so(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"cannot be read: {ELOOP}"):
        load_dataset("ucf101", _loop(tmp_path / "root"))
