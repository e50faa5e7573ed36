"""Real names for anonymised class names (SSv2-full's ``train3``, ``test18``): reading, writing, deriving maps.

The SSv2-full (OTAM) split lists name their classes by index only, so a head that embeds class names (HCL's
semantic attention) needs a map to the label text. A map file (``fsar train/eval --class-names FILE``) is
plain text, one class per line::

    # comment lines and blank lines are skipped
    train0,Pouring something into something
    test18<TAB>Pushing something from left to right

The first comma or tab splits a line into the anonymised name and the real name (real names may contain
commas); whitespace around each column and one pair of double quotes around a column are removed, so a
two-column CSV written by a spreadsheet reads the same. A name may appear once, and no two names may map to
the same real name.

:func:`derive_class_names` builds a map from the videos an anonymised split shares with a labelled one (for
SSv2-full: the CMN split, SSv2-small, whose classes are label text, and optionally the official SSv2
``train.json``/``validation.json``); it refuses unless every class is matched, unambiguously.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fsar._io import atomic_write
from fsar.datasets._formats import normalise_class
from fsar.datasets._splitfiles import _load_json, package_lines
from fsar.errors import FsarError

__all__ = [
    "ClassMatch",
    "ClassNameMap",
    "ClassNamesError",
    "derive_class_names",
    "format_class_names",
    "is_anonymised",
    "match_class_names",
    "official_ssv2_labels",
    "parse_class_names",
    "read_class_names",
    "ssv2_full_class_names",
    "write_class_names",
]

# Split-index names carry no meaning: SSv2-full's trainN/valN/testN (and the same form in other code bases' lists).
_ANONYMISED = re.compile(r"(train|val|test)_?\d+", re.IGNORECASE)


class ClassNamesError(FsarError, ValueError):
    """A class-name map that cannot be read, or a derivation that cannot match every class."""


def is_anonymised(name: str) -> bool:
    """True for a name that is only a split index (``train3``, ``test18``), whose embedding means nothing."""
    return _ANONYMISED.fullmatch(name.strip()) is not None


@dataclass(frozen=True)
class ClassNameMap:
    """A map read from a file: anonymised name -> real name, and the sha256 of the file's bytes."""

    names: dict[str, str]
    sha256: str
    path: str


def _natural(name: str) -> tuple[str, int, str]:
    """Sort key putting train2 before train10."""
    match = re.fullmatch(r"(\D*?)_?(\d+)", name)
    return (match[1], int(match[2]), name) if match else (name, -1, name)


def _column(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"').strip()
    return text


def parse_class_names(text: str, source: str = "<text>") -> dict[str, str]:
    """The map written in ``text`` (module docstring); :class:`ClassNamesError` naming the line for a bad one."""
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cut = min((i for i in (line.find(","), line.find("\t")) if i >= 0), default=-1)
        key, value = (_column(line[:cut]), _column(line[cut + 1:])) if cut >= 0 else ("", "")
        where = f"{source}:{lineno}"
        if not key or not value:
            raise ClassNamesError(f"{where}: expected 'NAME,REAL NAME' (comma or tab between), got {line!r}")
        if key in names and names[key] != value:
            raise ClassNamesError(f"{where}: {key!r} is mapped twice ({names[key]!r}, {value!r})")
        if owner.setdefault(value, key) != key:
            raise ClassNamesError(f"{where}: {owner[value]!r} and {key!r} both map to {value!r}")
        names[key] = value
    if not names:
        raise ClassNamesError(f"{source} maps no class: expected lines 'NAME,REAL NAME'")
    return names


def read_class_names(path: str | Path) -> ClassNameMap:
    """Read a map file (``--class-names FILE``)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ClassNamesError(f"cannot read the class-name map {path}: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ClassNamesError(f"the class-name map {path} is not UTF-8 text ({err})") from err
    return ClassNameMap(parse_class_names(text, str(path)), hashlib.sha256(data).hexdigest(), str(path))


def format_class_names(names: Mapping[str, str], header: Iterable[str] = ()) -> str:
    """The file text of ``names``, after ``#`` comment lines ``header``; classes in natural order."""
    lines = [f"# {h}" for h in header] + [f"{k},{names[k]}" for k in sorted(names, key=_natural)]
    return "\n".join(lines) + "\n"


def write_class_names(names: Mapping[str, str], path: str | Path, header: Iterable[str] = ()) -> Path:
    """Write ``names`` to ``path`` atomically, in the format :func:`read_class_names` reads."""
    text = format_class_names(names, header)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass(frozen=True)
class ClassMatch:
    """What the shared videos say about each anonymised class."""

    names: dict[str, str] = field(default_factory=dict)  # classes with one real name, not shared with another
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class -> its several real names
    shared: dict[str, tuple[str, ...]] = field(default_factory=dict)  # real name -> the classes that all got it
    unmatched: tuple[str, ...] = ()  # classes none of whose videos is labelled
    videos: dict[str, int] = field(default_factory=dict)  # class -> its labelled videos

    @property
    def complete(self) -> bool:
        return not (self.ambiguous or self.shared or self.unmatched)


def match_class_names(anonymised: Iterable[tuple[str, str]], labelled: Iterable[tuple[str, str]]) -> ClassMatch:
    """Match each class of ``anonymised`` (class, video id) lines to the real names its videos carry in
    ``labelled`` (real name, video id) lines (several sources may be chained: a video id seen twice must
    carry the same name, compared case- and punctuation-insensitively, else its classes are ambiguous)."""
    label: dict[str, dict[str, str]] = defaultdict(dict)  # video id -> name key -> name as first written
    for name, vid in labelled:
        label[vid].setdefault(normalise_class(name), name)
    found: dict[str, dict[str, str]] = {}
    videos: dict[str, int] = defaultdict(int)
    for cls, vid in anonymised:
        found.setdefault(cls, {})
        if vid in label:
            videos[cls] += 1
            for key, name in label[vid].items():
                found[cls].setdefault(key, name)
    unmatched = tuple(sorted((c for c, keys in found.items() if not keys), key=_natural))
    ambiguous = {c: tuple(sorted(keys.values())) for c, keys in sorted(found.items()) if len(keys) > 1}
    single = {c: next(iter(keys.items())) for c, keys in found.items() if len(keys) == 1}
    owners: dict[str, list[str]] = defaultdict(list)
    for cls, (key, _) in single.items():
        owners[key].append(cls)
    shared = {single[cs[0]][1]: tuple(sorted(cs)) for cs in owners.values() if len(cs) > 1}
    names = {c: name for c, (key, name) in sorted(single.items()) if len(owners[key]) == 1}
    return ClassMatch(names, ambiguous, shared, unmatched, dict(videos))


def _examples(items: Iterable[str], n: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def derive_class_names(anonymised: Iterable[tuple[str, str]], labelled: Iterable[tuple[str, str]]) -> dict[str, str]:
    """:func:`match_class_names` if every class got one real name of its own; else :class:`ClassNamesError`
    saying how many matched and which could not be."""
    match = match_class_names(anonymised, labelled)
    if match.complete:
        return match.names
    total = len(match.names) + len(match.ambiguous) + len(match.unmatched) + sum(map(len, match.shared.values()))
    problems = []
    if match.unmatched:
        problems.append(f"{len(match.unmatched)} share no labelled video ({_examples(match.unmatched)})")
    if match.ambiguous:
        shown = _examples(f"{c}: {' / '.join(v)}" for c, v in match.ambiguous.items())
        problems.append(f"{len(match.ambiguous)} have videos of several labelled classes ({shown})")
    if match.shared:
        shown = _examples(f"{' & '.join(v)} -> {k}" for k, v in match.shared.items())
        problems.append(f"{sum(map(len, match.shared.values()))} share a real name with another class ({shown})")
    raise ClassNamesError(f"only {len(match.names)} of {total} classes matched one real name of their own; "
                          + "; ".join(problems) + ": no map derived")


def official_ssv2_labels(labels_dir: str | Path) -> list[tuple[str, str]]:
    """(label text, video id) of every video in the official SSv2 ``train.json`` and ``validation.json`` of
    ``labels_dir`` (or of its ``labels/``): the template with its brackets removed, as the CMN lists write it."""
    labels_dir = Path(labels_dir).expanduser()
    if not any((labels_dir / part).is_file() for part in ("train.json", "validation.json")):
        labels_dir = labels_dir / "labels"
    pairs: list[tuple[str, str]] = []
    for part in ("train.json", "validation.json"):
        if not (labels_dir / part).is_file():
            continue
        items = _load_json(labels_dir / part)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and "id" in item and "template" in item:
                pairs.append((str(item["template"]).replace("[", "").replace("]", ""), str(item["id"])))
    if not pairs:
        raise ClassNamesError(f"no video labels in {labels_dir}: expected the official SSv2 train.json and "
                              "validation.json (entries with 'id' and 'template')")
    return pairs


def ssv2_full_class_names(labels_dir: str | Path | None = None) -> dict[str, str]:
    """The SSv2-full (OTAM) class map derived from the videos it shares with the shipped SSv2-small (CMN) lists,
    and with the official labels in ``labels_dir`` when given (:func:`derive_class_names`)."""
    full = [line for lines in package_lines("ssv2_OTAM").values() for line in lines]
    labelled = [line for lines in package_lines("ssv2_CMN").values() for line in lines]
    if labels_dir is not None:
        labelled += official_ssv2_labels(labels_dir)
    return derive_class_names(full, labelled)
