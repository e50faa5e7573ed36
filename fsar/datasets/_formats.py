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

Walk errors. The walk never raises ``OSError``: a folder or entry it cannot read (a symlink loop, a
dangling symlink, a folder without read permission) is skipped for matching and recorded with its
reason (:meth:`LayoutIndex.walk_errors`). A split-file line that can only be resolved to such a path
resolves to it, marked unreadable, so that extraction tries it and records the failure:

* an entry ``<stem>.<ext>`` or ``<stem>`` that cannot be stat'ed, or a ``<stem>`` frame folder that
  cannot be listed, is the path of the lines of that id (in a class tree, of that class);
* in a class tree, a class folder that cannot be stat'ed or listed is the path of every line of that
  class not found elsewhere (ucf101/hmdb51/kinetics100 still find an id under exactly one other class);
* a base folder (the root or one of ``Layout.subdirs``) that exists but cannot be listed is only
  recorded: it may hold any line's video, so the lines not found elsewhere stay missing.

The walk has a fixed depth -- base, class folder, entry, frame folder -- and never descends further,
so a directory symlink that points back up (``<class>/loop -> <class>``) cannot make it recurse.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

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


def _reason(err: OSError) -> str:
    """The OS's words for an error ("Too many levels of symbolic links", "Permission denied")."""
    return err.strerror or str(err)


class Resolved(NamedTuple):
    """Where a split-file line's video is: ``error`` is set when the walk could not read ``path``."""

    path: Path
    kind: VideoKind
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One directory entry that may be a video: ``error`` says why its target could not be stat'ed."""

    stem: str
    path: Path
    is_dir: bool
    error: str | None = None


def _is_image(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.name.lower().endswith(FRAME_EXTENSIONS) and entry.is_file()
    except OSError:  # a looping image link is no image, as for decoding, which skips it too
        return False


def _frame_dir(path: Path) -> tuple[bool, str | None]:
    """(holds at least one image file, why ``path`` could not be listed or None)."""
    try:
        with os.scandir(path) as it:
            return any(_is_image(e) for e in it), None
    except OSError as err:
        return False, _reason(err)


def is_frame_dir(path: Path) -> bool:
    """True when ``path`` is a directory holding at least one image file."""
    return _frame_dir(path)[0]


def _entry_type(entry: os.DirEntry[str]) -> tuple[bool, str | None]:
    """(is a directory, why its target could not be stat'ed or None).

    Only symlinks are stat'ed (a loop or a dangling link fails there); other entries take their
    type from the listing, which keeps the scan of a 200k-file folder free of per-file ``stat`` calls.
    """
    try:
        if entry.is_symlink():
            return stat.S_ISDIR(entry.stat().st_mode), None
        return entry.is_dir(follow_symlinks=False), None
    except OSError as err:
        return False, _reason(err)


def _stem(name: str, is_dir: bool, error: str | None) -> str | None:
    """The id part of an entry: a directory's name, a video file's stem, else None.

    An entry that could not be stat'ed may be either: a video extension marks a file, else its name
    is taken as a (frame) folder name.
    """
    if is_dir:
        return name
    stem, ext = os.path.splitext(name)
    if ext.lower() in VIDEO_EXTENSIONS:
        return stem
    return name if error is not None else None


def _scan(folder: Path) -> tuple[list[_Entry], OSError | None]:
    """Every video file or sub-directory directly in ``folder``, and the error listing ``folder`` raised."""
    try:
        with os.scandir(folder) as it:
            raw = list(it)
    except OSError as err:
        return [], err
    out = []
    for entry in raw:
        if entry.name.startswith("."):
            continue
        is_dir, error = _entry_type(entry)
        stem = _stem(entry.name, is_dir, error)
        if stem is not None:
            out.append(_Entry(stem, Path(entry.path), is_dir, error))
    return out, None


def _scan_base(base: Path, errors: dict[str, str]) -> list[_Entry]:
    """The entries of a base folder. An absent base (or a file there) is no error; a dangling link is."""
    entries, err = _scan(base)
    if err is not None and (err.errno not in (errno.ENOENT, errno.ENOTDIR) or os.path.islink(base)):
        errors[str(base)] = _reason(err)
    return entries


def _preference(entry: _Entry) -> tuple[int, str]:
    """Sort key among candidates of one id: frame folders, then videos in VIDEO_EXTENSIONS order."""
    suffix = entry.path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS and not entry.is_dir:
        return 1 + VIDEO_EXTENSIONS.index(suffix), str(entry.path)
    return 0, str(entry.path)


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
        """Scan ``root`` (one directory listing per class folder) and return the lookup index.

        Never raises ``OSError``: what cannot be read is recorded in the index (see the module docstring).
        """
        index = LayoutIndex(self, defaultdict(list))
        for sub in self.subdirs:
            entries = _scan_base(root if sub == "." else root / sub, index.errors)
            if not self.class_tree:
                self._add(index, "", entries)
                continue
            for folder in entries:
                if folder.is_dir or folder.error is not None:
                    self._add_class(index, folder)
        return index

    def _add_class(self, index: LayoutIndex, folder: _Entry) -> None:
        """Index one class folder; one that cannot be stat'ed or listed becomes its class's bad folder."""
        cls = normalise_class(folder.path.name)
        error = folder.error
        if error is None:
            found, err = _scan(folder.path)
            self._add(index, cls, found)
            error = None if err is None else _reason(err)
        if error is not None:
            index.errors[str(folder.path)] = error
            kind: VideoKind = "frames" if folder.is_dir else "file"
            index.bad_folders.setdefault(cls, Resolved(folder.path, kind, error))

    def _add(self, index: LayoutIndex, cls: str, entries: list[_Entry]) -> None:
        for entry in entries:
            index.by_key[(cls, self.id_key(entry.stem))].append(entry)
            if entry.error is not None:
                index.errors[str(entry.path)] = entry.error


@dataclass(frozen=True)
class LayoutIndex:
    """Result of :meth:`Layout.index`: resolves split-file lines to paths on disk.

    Attributes:
        layout: the layout scanned.
        by_key: ``(normalised class, id key)`` -> the entries of that id (``""`` class for flat layouts).
        bad_folders: normalised class -> its class folder, where that folder could not be read.
        errors: path -> reason for everything the walk could not read; :meth:`resolve_all` adds the
            frame folders it fails to list.
    """

    layout: Layout
    by_key: defaultdict[Key, list[_Entry]]
    bad_folders: dict[str, Resolved] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def _by_id(self) -> dict[str, list[_Entry]]:
        """Id key -> readable entries under any class; an unreadable entry only matches in its own class."""
        out: dict[str, list[_Entry]] = defaultdict(list)
        for (_, vid), entries in self.by_key.items():
            out[vid].extend(e for e in entries if e.error is None)
        return out

    def resolve_all(self, lines: Sequence[Key]) -> list[Resolved | None]:
        """Where each ``(class, video_id)`` line's video is, or None where nothing is found.

        A usable video wins: in the line's class folder, else (``match_any_class``) under exactly
        one other class folder. Failing that, an unreadable entry of that id in the class folder,
        else the class folder itself when it could not be read, comes back with its ``error``.
        """
        by_id = self._by_id() if self.layout.match_any_class else {}
        out: list[Resolved | None] = []
        for class_name, video_id in lines:
            vid = self.layout.id_key(video_id)
            cls = normalise_class(class_name) if self.layout.class_tree else ""
            own = self.by_key.get((cls, vid), [])
            found = _pick(own, self.errors)
            if found is None or found.error is not None:
                found = self._elsewhere(own, found, by_id.get(vid, []), cls)
            out.append(found)
        return out

    def _elsewhere(self, own: list[_Entry], found: Resolved | None, others: list[_Entry], cls: str
                   ) -> Resolved | None:
        """The fallback for a line with no usable video in its class folder (``found``: None or unreadable)."""
        if own and found is None:
            return None  # the id is there but not a video (say, an empty folder): not looked for elsewhere
        alt = _pick(others, self.errors) if len({e.path.parent for e in others}) == 1 else None
        if alt is not None and alt.error is None:
            return alt
        return found or self.bad_folders.get(cls) or alt

    def walk_errors(self) -> tuple[tuple[str, str], ...]:
        """``(path, reason)`` of everything the walk could not read, sorted by path."""
        return tuple(sorted(self.errors.items()))


def _pick(candidates: list[_Entry], errors: dict[str, str]) -> Resolved | None:
    """The preferred usable candidate (a non-empty frame folder or a video file), else the preferred
    unreadable one with its error, else None. Frame folders that cannot be listed go into ``errors``."""
    unreadable: Resolved | None = None
    for entry in sorted(candidates, key=_preference):
        if entry.error is not None:
            unreadable = unreadable or Resolved(entry.path, "file", entry.error)
        elif not entry.is_dir:
            return Resolved(entry.path, "file")
        else:
            frames, error = _frame_dir(entry.path)
            if frames:
                return Resolved(entry.path, "frames")
            if error is not None:
                errors[str(entry.path)] = error
                unreadable = unreadable or Resolved(entry.path, "frames", error)
    return unreadable


def youtube_id(stem: str) -> str:
    """The 11-character YouTube id that starts a Kinetics file name or split-file id."""
    return stem[:11]
