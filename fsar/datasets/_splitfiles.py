"""Split lists: parsing ``<class>/<video_id>`` files, packaged and user lists, consistency checks.

Also the optional check of the SSv2-small (CMN) class names against the official
Something-Something v2 ``labels.json``/``train.json``/``validation.json``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from fsar.datasets._formats import VIDEO_EXTENSIONS, normalise_class
from fsar.errors import FsarError

SplitLines = Mapping[str, tuple[tuple[str, str], ...]]

#: Split names, in class-index order.
SPLITS: tuple[str, ...] = ("train", "val", "test")


class DatasetError(FsarError):
    """A dataset cannot be listed: bad name, root or split list, or no video found.

    The message names what was expected and what to check.
    """


def _strip_video_ext(video_id: str) -> str:
    stem, ext = os.path.splitext(video_id)
    return stem if ext.lower() in VIDEO_EXTENSIONS else video_id


def read_split_file(path_or_resource: str | os.PathLike[str] | Traversable) -> list[tuple[str, str]]:
    """Parse a split list into ``(class, video_id)`` pairs, in file order.

    One ``<class>/<video_id>`` per line; blank lines and ``#`` comments are skipped, a video
    extension on the id (``v_x.avi``) and a trailing integer label column (``... 3``) are dropped.

    Raises:
        DatasetError: the file is missing or a line is not ``class/video_id``.
    """
    source: Traversable = (
        Path(path_or_resource) if isinstance(path_or_resource, str | os.PathLike) else path_or_resource
    )
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DatasetError(f"split list {source} not found") from err
    pairs: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        class_name, _, video_id = line.partition("/")
        head, _, tail = video_id.rpartition(" ")
        if head and tail.isdigit():
            video_id = head.rstrip()
        video_id = _strip_video_ext(video_id)
        if not class_name or not video_id or "/" in video_id:
            raise DatasetError(f"{source}:{lineno}: expected '<class>/<video_id>', got {line!r}")
        pairs.append((class_name, video_id))
    return pairs


def package_split_file(source: str, split: str) -> Traversable:
    """The packaged split list of one split, e.g. ``package_split_file("ssv2_OTAM", "test")``."""
    folder = resources.files("fsar.datasets").joinpath("splits", source)
    matches = sorted(f.name for f in folder.iterdir() if f.name.startswith(f"{split}list"))
    if len(matches) != 1:
        raise DatasetError(f"expected one packaged {split}list*.txt in splits/{source}, found {matches}")
    return folder.joinpath(matches[0])


@lru_cache(maxsize=16)
def package_lines(source: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Split -> lines of a packaged split set (cached: the SSv2-full lists hold 70k lines)."""
    return {s: tuple(read_split_file(package_split_file(source, s))) for s in SPLITS}


def _user_split_file(split_dir: Path, split: str) -> Path | None:
    """``<split>.txt`` or the single ``<split>list*.txt`` in ``split_dir``, or None."""
    plain = split_dir / f"{split}.txt"
    numbered = sorted(split_dir.glob(f"{split}list*.txt"))
    found = ([plain] if plain.is_file() else []) + numbered
    if len(found) > 1:
        raise DatasetError(f"several {split} split lists in {split_dir}: {[p.name for p in found]}; keep one")
    return found[0] if found else None


def user_lines(split_dir: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Split -> lines of the user split lists in ``split_dir``; splits without a list are left out."""
    if not split_dir.is_dir():
        raise DatasetError(f"split directory {split_dir} does not exist")
    lines = {}
    for split in SPLITS:
        path = _user_split_file(split_dir, split)
        if path is not None:
            lines[split] = tuple(read_split_file(path))
    if not lines:
        raise DatasetError(
            f"no split lists in {split_dir}: expected {{train,val,test}}.txt or {{train,val,test}}list*.txt "
            "with one '<class>/<video_id>' per line"
        )
    return lines


def check_lines(name: str, lines: SplitLines) -> None:
    """Video ids unique within the dataset; class sets of different splits disjoint."""
    counts = Counter(vid for split_lines in lines.values() for _, vid in split_lines)
    dups = sorted(vid for vid, n in counts.items() if n > 1)
    if dups:
        raise DatasetError(
            f"dataset {name!r}: {len(dups)} video id(s) appear more than once in the split lists "
            f"(e.g. {dups[:5]}); episode lists refer to videos by id, so ids must be unique"
        )
    seen: dict[str, str] = {}
    for split, split_lines in lines.items():
        for cls in {c for c, _ in split_lines}:
            if seen.setdefault(cls, split) != split:
                raise DatasetError(
                    f"dataset {name!r}: class {cls!r} is in both the {seen[cls]} and {split} split lists; "
                    "few-shot splits must have disjoint classes"
                )


def _load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path}: {err}; check the SSv2 labels files") from err


def _ssv2_label_key(text: str) -> str:
    return normalise_class(text.replace("[", "").replace("]", ""))


def check_ssv2_labels(lines: SplitLines, labels_dir: Path) -> int:
    """Check SSv2-small class names and ids against the official ``labels/*.json``.

    Every class must be a label of ``labels.json`` (else :class:`DatasetError`); each id found in
    ``train.json``/``validation.json`` should carry that class as its template -- disagreements are
    reported with a warning (the split list stays authoritative). Returns the number of ids checked.
    """
    labels = _load_json(labels_dir / "labels.json")
    known = {_ssv2_label_key(k) for k in labels} if isinstance(labels, dict) else set()
    classes = sorted({c for split_lines in lines.values() for c, _ in split_lines})
    unknown = [c for c in classes if _ssv2_label_key(c) not in known]
    if unknown:
        raise DatasetError(
            f"{len(unknown)} SSv2-small class(es) are not in {labels_dir / 'labels.json'} "
            f"(e.g. {unknown[:3]}); "
            "check that the labels are those of Something-Something v2"
        )
    template: dict[str, str] = {}
    for part in ("train.json", "validation.json"):
        items = _load_json(labels_dir / part) if os.path.isfile(labels_dir / part) else []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and "id" in item and "template" in item:
                template[str(item["id"])] = _ssv2_label_key(str(item["template"]))
    checked, wrong = 0, []
    for split_lines in lines.values():
        for cls, vid in split_lines:
            if vid in template:
                checked += 1
                if template[vid] != _ssv2_label_key(cls):
                    wrong.append(f"{cls}/{vid}")
    if wrong:
        warnings.warn(
            f"{len(wrong)} SSv2-small ids have another official template than their split-list class "
            f"(e.g. {wrong[:3]}); the split list is kept",
            stacklevel=2,
        )
    return checked


def find_ssv2_labels(root: Path) -> Path | None:
    """The folder holding the official SSv2 ``labels.json``: ``<root>/labels`` or ``<root>``."""
    for folder in (root / "labels", root):
        if os.path.isfile(folder / "labels.json"):  # False, not OSError, for a looping or unreadable path
            return folder
    return None
