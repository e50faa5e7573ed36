"""On-disk layouts of video datasets: where the video (or frame folder) of a split-file line lives.

A layout scans the dataset root once and builds an index from a normalised key to the candidate
paths, so that resolving tens of thousands of split-file lines costs one directory listing per
folder rather than several ``stat`` calls per line. Nothing here decodes video.

Two shapes are supported:

* class tree -- ``<base>/<class>/<stem>.<ext>`` or ``<base>/<class>/<stem>/*.jpg`` (UCF101, HMDB51,
  Kinetics, the synthetic dataset, any user ``folder``);
* flat -- ``<base>/<stem>.<ext>`` or ``<base>/<stem>/*.jpg`` (Something-Something v2).

A directory whose name matches a video id is a pre-extracted frame folder when it holds at least
one ``.jpg``/``.jpeg``/``.png`` file.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Video file extensions, in order of preference when one id has several files
#: (an already converted ``.mp4`` wins over the original ``.webm``).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
#: Image extensions that make a directory a pre-extracted frame folder.
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")

VideoKind = Literal["file", "frames"]
Key = tuple[str, str]

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_class(name: str) -> str:
    """Folder-insensitive class key: lower case, any run of non-alphanumerics becomes ``_``.

    ``"hurling (sport)"``, ``"hurling_(sport)"`` and ``"Hurling_sport"`` share one key, which is
    how Kinetics class folders written with spaces or underscores are matched.
    """
    return _NON_ALNUM.sub("_", name.lower()).strip("_")


def is_frame_dir(path: Path) -> bool:
    """True when ``path`` is a directory holding at least one image file."""
    try:
        with os.scandir(path) as it:
            return any(e.name.lower().endswith(FRAME_EXTENSIONS) and e.is_file() for e in it)
    except OSError:
        return False


def _entry_stem(entry: os.DirEntry[str]) -> str | None:
    """The id part of a directory entry: a video file's stem, a directory's name, else None."""
    if entry.name.startswith("."):
        return None
    if entry.is_dir():
        return entry.name
    stem, ext = os.path.splitext(entry.name)
    return stem if ext.lower() in VIDEO_EXTENSIONS else None


def _scan(folder: Path) -> Iterable[tuple[str, Path]]:
    """(stem, path) of every video file or sub-directory directly in ``folder``."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return []
    out = []
    for entry in entries:
        stem = _entry_stem(entry)
        if stem is not None:
            out.append((stem, Path(entry.path)))
    return out


def _preference(path: Path) -> int:
    """Sort key among candidates of one id: frame folders, then videos in VIDEO_EXTENSIONS order."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS and not path.is_dir():
        return 1 + VIDEO_EXTENSIONS.index(suffix)
    return 0


@dataclass(frozen=True)
class Layout:
    """How one dataset stores its videos below the root.

    Attributes:
        pattern: human-readable pattern for error messages, e.g. ``<root>/<class>/<video_id>.avi``.
        subdirs: folders below the root searched besides the root itself (``"."`` = the root).
        class_tree: videos sit in one folder per class (else directly in the base folder).
        id_key: maps a video id (split file) or a file stem (disk) to the matching key; Kinetics
            keys on the 11-character YouTube id because file names vary between downloads.
        match_any_class: when the class folder does not match, accept a video whose key is found
            under exactly one other class folder (ids that are unique across the dataset).
    """

    pattern: str
    subdirs: tuple[str, ...] = (".",)
    class_tree: bool = True
    id_key: Callable[[str], str] = str
    match_any_class: bool = False

    def index(self, root: Path) -> LayoutIndex:
        """Scan ``root`` (one directory listing per class folder) and return the lookup index."""
        by_key: dict[Key, list[Path]] = defaultdict(list)
        for sub in self.subdirs:
            base = root if sub == "." else root / sub
            if not base.is_dir():
                continue
            if not self.class_tree:
                for stem, path in _scan(base):
                    by_key[("", self.id_key(stem))].append(path)
                continue
            for class_name, class_dir in _scan(base):
                if not class_dir.is_dir():
                    continue
                cls = normalise_class(class_name)
                for stem, path in _scan(class_dir):
                    by_key[(cls, self.id_key(stem))].append(path)
        return LayoutIndex(self, dict(by_key))


@dataclass(frozen=True)
class LayoutIndex:
    """Result of :meth:`Layout.index`: resolves split-file lines to paths on disk."""

    layout: Layout
    by_key: dict[Key, list[Path]]

    def _by_id(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = defaultdict(list)
        for (_, vid), paths in self.by_key.items():
            out[vid].extend(paths)
        return out

    def resolve_all(self, lines: Sequence[Key]) -> list[tuple[Path, VideoKind] | None]:
        """Path and kind of every ``(class, video_id)`` line, or None where nothing usable is found."""
        by_id = self._by_id() if self.layout.match_any_class else {}
        out: list[tuple[Path, VideoKind] | None] = []
        for class_name, video_id in lines:
            vid = self.layout.id_key(video_id)
            cls = normalise_class(class_name) if self.layout.class_tree else ""
            candidates = self.by_key.get((cls, vid))
            if not candidates and vid in by_id:
                found = by_id[vid]
                candidates = found if len({p.parent for p in found}) == 1 else None
            out.append(_pick(candidates or []))
        return out


def _pick(candidates: list[Path]) -> tuple[Path, VideoKind] | None:
    """The preferred usable candidate: a non-empty frame folder or a video file."""
    for path in sorted(candidates, key=lambda p: (_preference(p), str(p))):
        if path.is_dir():
            if is_frame_dir(path):
                return path, "frames"
        else:
            return path, "file"
    return None


def youtube_id(stem: str) -> str:
    """The 11-character YouTube id that starts a Kinetics file name or split-file id."""
    return stem[:11]
