"""Dataset catalog: dataset name + root directory -> the videos, labels and splits on disk.

The few-shot benchmark splits are the published split lists shipped as package data
(``fsar/datasets/splits``, see ``SOURCES.md`` there): one ``<class>/<video_id>`` line per video.
A dataset is selected by name (:func:`list_datasets` lists them) and a root directory:

* ``ssv2`` -- ``<root>/<id>.mp4`` (converted, preferred) or ``<root>/<id>.webm``, also in
  ``<root>/20bn-something-something-v2/``. Split sets ``full`` (OTAM, default; anonymised class
  names ``trainN``/``valN``/``testN`` kept as they are) and ``small`` (CMN; label-text classes).
* ``kinetics100`` -- ``<root>/<class>/<youtube_id>_<start>_<end>.mp4``, matched on the 11-character
  YouTube id (file names vary between downloads), class folders with spaces or underscores; also
  under ``train/ val/ test/ train_256/ val_256/ test_256/``. Split set ``cmn``.
* ``ucf101`` -- ``<root>/<class>/<stem>.avi``, also under ``UCF-101/``. Split set ``arn``.
* ``hmdb51`` -- ``<root>/<class>/<stem>.avi``, also under ``videos/``. Split set ``arn``.
* ``synthetic`` -- ``<root>/videos/<class>/<id>.mp4`` with lists ``<root>/splits/{train,val,test}list.txt``
  (the layout written by :mod:`fsar.datasets.synthetic`). Split set ``user``.
* ``folder`` -- any ``<root>/<class>/<id>.<ext>`` tree with user lists from ``split_dir``. Split set ``user``.

Any dataset accepts user lists through ``split_dir`` instead of the packaged ones.
Everywhere a directory of ``.jpg`` frames named like the video id (the format most FSAR code bases
use) is accepted in place of the video file. For ``ssv2`` split set ``small`` the class names
(label text) are checked against the official ``labels.json``/``train.json``/``validation.json``
when they are found in ``<root>/labels/`` or ``<root>``.

Video ids are the split-file ids (the part after the class) because episode lists refer to
videos by id. Videos of the split lists that are not on disk are reported in
:attr:`DatasetListing.missing` (many Kinetics videos are gone from YouTube), never silently dropped.

Listing never stops on a folder or entry under the root that cannot be read (a symlink loop, a
dangling symlink, a folder without read permission): it is recorded in
:attr:`DatasetListing.walk_errors`, and a line whose video can only be at such a path is listed with
that path (:meth:`DatasetListing.unreadable`), so extraction tries it and records it as unreadable.
In a class tree an unreadable class folder is the path of all its lines; for ``ssv2`` an unreadable
``<id>`` frame folder or a looping ``<id>.webm`` is that video's path; an unreadable base folder
(``<root>`` or a subfolder above) is recorded only, and the lines not found elsewhere stay missing.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from fsar.datasets._formats import VIDEO_EXTENSIONS, Layout, youtube_id
from fsar.datasets._splitfiles import (
    SPLITS,
    DatasetError,
    SplitLines,
    check_lines,
    check_ssv2_labels,
    find_ssv2_labels,
    package_lines,
    package_split_file,
    read_split_file,
    user_lines,
)

__all__ = [
    "SPLITS",
    "DatasetError",
    "DatasetInfo",
    "DatasetListing",
    "SplitSetInfo",
    "SplitSize",
    "VideoEntry",
    "check_ssv2_labels",
    "list_datasets",
    "load_dataset",
    "package_split_file",
    "read_split_file",
]

_USER = "user"


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split list found on disk.

    Attributes:
        id: split-file video id (unique within the dataset), e.g. ``"51958"`` for SSv2.
        class_name: class as written in the split list.
        split: ``"train"``, ``"val"`` or ``"test"``.
        path: the video file, or the directory of frames; for a video that can only be at a path
            the walk could not read, that path (named in :attr:`DatasetListing.walk_errors`).
        kind: ``"file"`` (a video to decode) or ``"frames"`` (a folder of images).
    """

    id: str
    class_name: str
    split: str
    path: Path
    kind: Literal["file", "frames"]


@dataclass(frozen=True)
class DatasetListing:
    """Everything the catalog knows about a dataset on disk.

    Attributes:
        name: catalog name (``"ssv2"``, ...).
        root: the dataset root directory.
        split_set: the split set the lists come from (``"full"``, ``"small"``, ``"cmn"``, ...).
        classes: split -> sorted class names of that split (from the split lists).
        videos: videos found on disk (also those at an unreadable path, see :meth:`unreadable`), in
            split order then split-file order.
        missing: ``(split, "class/video_id")`` for each split-file line whose video was not found.
        walk_errors: ``(path, reason)`` for each folder or entry under the root that could not be read,
            sorted by path, e.g. ``(".../jump/x.avi", "Too many levels of symbolic links")``. The
            path of every entry of :meth:`unreadable` is one of them.
        lines: ``(split, class, video_id)`` of every split-file line, found or not, in split order then
            split-file order: what a cache's video table is made of, so that it stays the same as a
            partial download completes.
    """

    name: str
    root: Path
    split_set: str
    classes: dict[str, tuple[str, ...]]
    videos: tuple[VideoEntry, ...]
    missing: tuple[tuple[str, str], ...] = ()
    walk_errors: tuple[tuple[str, str], ...] = ()
    lines: tuple[tuple[str, str, str], ...] = ()

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        """All class names in class-index order: sorted within each split, splits train, val, test."""
        order = [s for s in SPLITS if s in self.classes] + [s for s in self.classes if s not in SPLITS]
        return tuple(c for s in order for c in self.classes[s])

    @cached_property
    def class_to_index(self) -> dict[str, int]:
        """Class name -> stable class index (position in :attr:`class_names`)."""
        return {c: i for i, c in enumerate(self.class_names)}

    def class_index(self, video: VideoEntry) -> int:
        """The stable class index of one video."""
        return self.class_to_index[video.class_name]

    def labels(self) -> tuple[int, ...]:
        """Class index of every entry of :attr:`videos`, in the same order."""
        return tuple(self.class_to_index[v.class_name] for v in self.videos)

    def split(self, name: str) -> tuple[VideoEntry, ...]:
        """The videos of one split."""
        return tuple(v for v in self.videos if v.split == name)

    def unreadable(self) -> tuple[VideoEntry, ...]:
        """The videos listed at a path the walk could not read (their reason: :attr:`walk_errors`)."""
        bad = dict(self.walk_errors)
        return tuple(v for v in self.videos if str(v.path) in bad)


@dataclass(frozen=True)
class SplitSize:
    """Number of classes and videos (split-file lines) of one split."""

    classes: int
    videos: int


@dataclass(frozen=True)
class SplitSetInfo:
    """One packaged split set: its name, package folder and per-split sizes (empty for user lists)."""

    name: str
    source: str
    sizes: Mapping[str, SplitSize] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """A catalog entry as shown by ``fsar datasets``."""

    name: str
    description: str
    layout: str
    split_sets: tuple[SplitSetInfo, ...]
    default_split_set: str


@dataclass(frozen=True)
class _Spec:
    name: str
    description: str
    layout: Layout
    split_sets: dict[str, str]  # split-set name -> package folder ("" = user lists)
    default_split_set: str
    default_split_dir: str | None = None  # below the root, for user lists


_CLASS_TREE_EXT = "{" + ",".join(e.lstrip(".") for e in VIDEO_EXTENSIONS) + "}"
_SPECS: dict[str, _Spec] = {
    s.name: s
    for s in (
        _Spec(
            "ssv2",
            "Something-Something v2: full = OTAM split (anonymised class names), small = CMN split",
            Layout(
                "<root>/<video_id>.{webm,mp4} or <root>/<video_id>/*.jpg",
                subdirs=(".", "20bn-something-something-v2"),
                class_tree=False,
            ),
            {"full": "ssv2_OTAM", "small": "ssv2_CMN"},
            "full",
        ),
        _Spec(
            "kinetics100",
            "Kinetics-100, the CMN split of Kinetics-400 (videos matched on the YouTube id)",
            Layout(
                "<root>/<class>/<youtube_id>_<start>_<end>.mp4 or <root>/<class>/<video_id>/*.jpg",
                subdirs=(".", "train", "val", "test", "train_256", "val_256", "test_256"),
                id_key=youtube_id,
                match_any_class=True,
            ),
            {"cmn": "kinetics_CMN"},
            "cmn",
        ),
        _Spec(
            "ucf101",
            "UCF101, the ARN few-shot split",
            Layout(
                "<root>/<class>/<stem>.avi or <root>/<class>/<stem>/*.jpg",
                subdirs=(".", "UCF-101"),
                match_any_class=True,
            ),
            {"arn": "ucf_ARN"},
            "arn",
        ),
        _Spec(
            "hmdb51",
            "HMDB51, the ARN few-shot split",
            Layout(
                "<root>/<class>/<stem>.avi or <root>/<class>/<stem>/*.jpg",
                subdirs=(".", "videos"),
                match_any_class=True,
            ),
            {"arn": "hmdb_ARN"},
            "arn",
        ),
        _Spec(
            "synthetic",
            "procedurally generated action videos (fsar.datasets.synthetic)",
            Layout("<root>/videos/<class>/<video_id>.mp4", subdirs=("videos",)),
            {_USER: ""},
            _USER,
            default_split_dir="splits",
        ),
        _Spec(
            "folder",
            "any <class>/<video> tree, with user split lists (split_dir)",
            Layout(f"<root>/<class>/<video_id>.{_CLASS_TREE_EXT} or <root>/<class>/<video_id>/*.jpg"),
            {_USER: ""},
            _USER,
        ),
    )
}


# --------------------------------------------------------------------------- catalog


def list_datasets() -> list[DatasetInfo]:
    """Every catalog dataset with its split sets and, for packaged lists, classes/videos per split."""
    infos = []
    for spec in _SPECS.values():
        sets = []
        for set_name, source in spec.split_sets.items():
            sizes = {}
            if source:
                for split, lines in package_lines(source).items():
                    sizes[split] = SplitSize(len({c for c, _ in lines}), len(lines))
            sets.append(SplitSetInfo(set_name, source, sizes))
        infos.append(
            DatasetInfo(spec.name, spec.description, spec.layout.pattern, tuple(sets), spec.default_split_set)
        )
    return infos


def _get_spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(_SPECS)}")
    return _SPECS[name]


def _split_lines(spec: _Spec, split_set: str, root: Path, split_dir: Path | None) -> SplitLines:
    if split_dir is not None:
        return user_lines(Path(split_dir).expanduser())
    source = spec.split_sets[split_set]
    if source:
        return package_lines(source)
    if spec.default_split_dir is None:
        raise DatasetError(f"dataset {spec.name!r} needs split lists: pass split_dir (--split-dir)")
    return user_lines(root / spec.default_split_dir)


def _no_video_error(spec: _Spec, root: Path, lines: SplitLines, walk_errors: tuple[tuple[str, str], ...]
                    ) -> DatasetError:
    first = next(((s, v[0]) for s, v in lines.items() if v), None)
    example = f" (e.g. the {first[0]} video {first[1][0]}/{first[1][1]})" if first else ""
    unread = ""
    if walk_errors:
        shown = "; ".join(f"{path}: {reason}" for path, reason in walk_errors[:5])
        more = " ..." if len(walk_errors) > 5 else ""
        unread = f" {len(walk_errors)} path(s) under it could not be read: {shown}{more}."
    return DatasetError(
        f"no video of the {spec.name} split lists was found under {root}.{unread} "
        f"Expected {spec.layout.pattern}{example}. Check --root points at the folder holding the videos "
        "(or extracted frame folders) and that the dataset name and split set are right."
    )


def _check_root(spec: _Spec, root: Path) -> None:
    """``root`` is a directory; a root that exists but cannot be stat'ed says why."""
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except OSError as err:  # a looping root link would otherwise read as "does not exist"
        if err.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise DatasetError(f"dataset root {root} cannot be read: {err.strerror or err}. Check --root.") from err
        is_dir = False
    if not is_dir:
        raise DatasetError(
            f"dataset root {root} does not exist or is not a directory; expected {spec.layout.pattern}. "
            "Check --root."
        )


def load_dataset(
    name: str, root: Path, *, split_set: str | None = None, split_dir: Path | None = None
) -> DatasetListing:
    """List the videos of dataset ``name`` stored under ``root``.

    Args:
        name: a catalog name (see :func:`list_datasets`).
        root: the dataset root directory.
        split_set: which packaged split set (``ssv2``: ``"full"`` or ``"small"``); None = default.
        split_dir: a folder of user split lists (``{train,val,test}.txt`` or ``{split}list*.txt``)
            used instead of the packaged ones; required for ``folder``.

    Raises:
        DatasetError: unknown name or split set, root missing or unreadable, bad or duplicate
            split lines, or no readable video of the split lists found at all.

    Never raises ``OSError`` for what is under the root: see :attr:`DatasetListing.walk_errors`.
    """
    spec = _get_spec(name)
    root = Path(root).expanduser()
    _check_root(spec, root)
    set_name = spec.default_split_set if split_set is None else split_set
    if set_name not in spec.split_sets:
        raise DatasetError(f"dataset {name!r} has split sets {sorted(spec.split_sets)}, not {set_name!r}")
    lines = _split_lines(spec, set_name, root, split_dir)
    check_lines(name, lines)
    labels_dir = find_ssv2_labels(root) if (name, set_name) == ("ssv2", "small") else None
    if labels_dir is not None:
        check_ssv2_labels(lines, labels_dir)
    index = spec.layout.index(root)
    videos: list[VideoEntry] = []
    missing: list[tuple[str, str]] = []
    readable = 0
    for split, split_lines in lines.items():
        for (cls, vid), found in zip(split_lines, index.resolve_all(split_lines), strict=True):
            if found is None:
                missing.append((split, f"{cls}/{vid}"))
            else:
                videos.append(VideoEntry(vid, cls, split, found.path, found.kind))
                readable += found.error is None
    walk_errors = index.walk_errors()
    if not readable:  # a run that could only record failures helps nobody: say what is wrong instead
        raise _no_video_error(spec, root, lines, walk_errors)
    classes = {s: tuple(sorted({c for c, _ in split_lines})) for s, split_lines in lines.items()}
    every = tuple((split, cls, vid) for split, split_lines in lines.items() for cls, vid in split_lines)
    return DatasetListing(name, root, set_name, classes, tuple(videos), tuple(missing), walk_errors, every)
