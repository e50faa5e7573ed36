"""Where a result came from: the data, features, episodes and code behind a record's numbers.

A record's ``provenance`` is a flat dict of :data:`FIELDS`. Records written before it was stored get
what their own fields tell (dataset, split, cache and episode-list hashes, protocol, modality, centring,
version, backbone and patches from ``extra``) and ``None`` for the rest, with ``known: False``.

Tables, plots and comparisons group records by :func:`setting_key`: every provenance field except those
that are already a cell's coordinates — the matcher label carries modality and centring, the column
carries way and shot, and the episode list follows from the rest (checked on its own). Matcher
parameters (fusion weights, checkpoint hash) stay in ``params``: a newer run of the same matcher label
on the same setting supersedes an older one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fsar.episodes.coverage import Coverage
from fsar.errors import FsarError

if TYPE_CHECKING:
    from fsar.report.results import Record

FIELDS = ("dataset", "split_set", "split", "backbone", "weights", "weights_sha256", "precision", "patches", "views",
          "frames", "input_size", "feature_dtype", "cache_sha256", "modality", "center", "episodes_sha256", "seed",
          "protocol", "pool_sha256", "pool_videos", "listed_videos", "pool_classes", "listed_classes",
          "fsar_version")
_IN_CELL = {"modality", "center", "episodes_sha256"}  # the row label and the column already tell these
SETTING_FIELDS = tuple(f for f in FIELDS if f not in _IN_CELL)
_COVERAGE = ("pool_videos", "listed_videos", "pool_classes", "listed_classes")
# Fields a column label can show; hashes cannot be told apart by a reader, so they only ever raise.
_READABLE: dict[str, Callable[[Any], str]] = {
    "split_set": lambda v: str(v) if v else "no split set",
    "split": lambda v: f"{v} split",
    "backbone": str,
    "weights": lambda v: f"weights {v}",
    "precision": lambda v: str(v) if v else "precision not recorded",
    "patches": lambda v: f"{v}x{v} patches" if v else "no patches",
    "views": lambda v: f"{v} views",
    "frames": lambda v: f"{v} frames",
    "input_size": lambda v: f"{v}px",
    "feature_dtype": str,
    "seed": lambda v: f"seed {v}",
    "protocol": lambda v: f"{v} protocol",
    "fsar_version": lambda v: f"fsar {v}",
}
ALIASES = {"cache": "cache_sha256", "episodes": "episodes_sha256", "pool": "pool_sha256"}


class ProvenanceError(FsarError, ValueError):
    """Records that differ in provenance would share a cell; the message names them and the filter to use."""


def complete(given: Mapping[str, Any] | None, record: Record) -> dict[str, Any]:
    """The full provenance of ``record``: ``given`` over what the record's own fields tell."""
    base: dict[str, Any] = dict.fromkeys(FIELDS)
    base.update(dataset=record.dataset, split=record.split, cache_sha256=record.cache_sha256,
                episodes_sha256=record.episodes_sha256, protocol=record.protocol, modality=record.modality,
                center=bool(record.params.get("center", False)), fsar_version=record.fsar_version,
                backbone=record.extra.get("backbone"), patches=record.extra.get("patches"))
    base["known"] = False
    base.update(given or {})
    return base


def setting_key(record: Record) -> tuple[tuple[str, Any], ...]:
    """What must be equal for two records to share a column: every setting field of the provenance."""
    return tuple((f, record.provenance.get(f)) for f in SETTING_FIELDS)


def is_partial(provenance: Mapping[str, Any]) -> bool:
    """True when the record's pool held fewer videos or classes than its split list (not the benchmark)."""
    videos, listed, classes, listed_classes = (provenance.get(f) for f in _COVERAGE)
    if videos is None or listed is None:
        return False
    return bool(videos < listed or (classes is not None and listed_classes is not None and classes < listed_classes))


def pool_note(provenance: Mapping[str, Any]) -> str:
    """``pool: 50 of 2,857 test videos, 5 of 24 classes — not the full benchmark``."""
    return Coverage(*(int(provenance[f]) for f in _COVERAGE)).line(provenance.get("split") or "")


def _readable(field: str, value: Any) -> str:
    if value is None:
        return f"{field} unknown"
    return _READABLE[field](value)


def _coverage_text(provenance: Mapping[str, Any]) -> str:
    videos, listed = provenance.get("pool_videos"), provenance.get("listed_videos")
    return "pool unknown" if videos is None else f"pool {videos:,}/{listed:,}"


def short_value(value: Any) -> str:
    """A provenance value as messages show it: 12 characters of a hash, "unknown", or "(empty)"."""
    return "unknown" if value is None else str(value)[:12] or "(empty)"


def source_name(field: str, record: Record) -> str:
    """What a person knows a hashed field by: the episode list's or cache's path, the weights' name."""
    if field == "episodes_sha256":
        return record.episodes_path
    if field == "weights_sha256":
        return f"weights {record.provenance.get('weights')} of {record.cache_path}"
    return record.cache_path


def _conflict(where: str, field: str, groups: Mapping[Any, list[Record]]) -> ProvenanceError:
    parts = [f"{field} {short_value(value)} = {', '.join(sorted({source_name(field, r) for r in recs}))} "
             f"({', '.join(sorted({r.matcher for r in recs}))})" for value, recs in groups.items()]
    option = next((alias for alias, name in ALIASES.items() if name == field), field)
    return ProvenanceError(f"{where}: records differ in {field} with nothing readable to tell them apart: "
                           f"{'; '.join(parts)}. Pick one with --filter {option}=PREFIX")


def _dataset_labels(dataset: str, records: list[Record]) -> dict[tuple[Any, ...], str]:
    """Label of each setting of one dataset, e.g. ``ssv2 (small)`` vs ``ssv2 (full)``; raises when only hashes
    tell two settings apart."""
    settings: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        settings.setdefault(setting_key(r), []).append(r)
    if len(settings) == 1:
        return {key: dataset for key in settings}
    provs = {key: recs[0].provenance for key, recs in settings.items()}
    varying = [f for f in SETTING_FIELDS if len({p.get(f) for p in provs.values()}) > 1]
    parts: dict[tuple[Any, ...], list[str]] = {key: [] for key in settings}
    for f in varying:
        if f in _READABLE:
            for key, p in provs.items():
                parts[key].append(_readable(f, p.get(f)))
    if any(f in _COVERAGE for f in varying):
        for key, p in provs.items():
            parts[key].append(_coverage_text(p))
    labels = {key: f"{dataset} ({', '.join(parts[key])})" for key in settings}
    if len(set(labels.values())) < len(labels):
        hashed = next(f for f in varying if f not in _READABLE and f not in _COVERAGE)
        groups: dict[Any, list[Record]] = {}
        for key, recs in settings.items():
            groups.setdefault(provs[key].get(hashed), []).extend(recs)
        raise _conflict(dataset, hashed, groups)
    return labels


def distinguish(records: Iterable[Record]) -> list[Record]:
    """Records with ``dataset`` relabelled so that records of different settings never share a
    (matcher, dataset, way, shot) cell; raises :class:`ProvenanceError` where no readable label exists."""
    records = list(records)
    by_dataset: dict[str, list[Record]] = {}
    for r in records:
        by_dataset.setdefault(r.dataset, []).append(r)
    labels = {d: _dataset_labels(d, recs) for d, recs in by_dataset.items()}
    out = [dataclasses.replace(r, dataset=labels[r.dataset][setting_key(r)]) for r in records]
    columns: dict[tuple[str, int, int], dict[Any, list[Record]]] = {}
    for r in out:
        columns.setdefault((r.dataset, r.way, r.shot), {}).setdefault(r.episodes_sha256, []).append(r)
    for (d, w, s), lists in sorted(columns.items()):
        if len(lists) > 1:  # same setting, way and shot: the lists should be one; never guess which
            raise _conflict(f"{d} {w}-way {s}-shot", "episodes_sha256", lists)
    return out


def _value(record: Record, key: str) -> Any:
    if key in FIELDS:
        return record.provenance.get(key)
    return getattr(record, key)


def parse_filters(items: Iterable[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings as (field, value); keys are provenance fields, their aliases or record fields."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or (key not in FIELDS and key not in ("matcher", "way", "shot", "query", "n_runs")):
            known = ", ".join([*ALIASES, *FIELDS, "matcher", "way", "shot"])
            raise ProvenanceError(f"--filter {item!r}: expected KEY=VALUE with KEY one of {known}")
        out.append((key, value.strip()))
    return out


def apply_filters(records: Iterable[Record], filters: Iterable[tuple[str, str]]) -> list[Record]:
    """The records whose every filtered field equals the value (hashes: starts with it)."""
    filters = list(filters)

    def keep(r: Record) -> bool:
        for key, want in filters:
            have = _value(r, key)
            text = "unknown" if have is None else str(have).lower() if isinstance(have, bool) else str(have)
            if not (text == want or (key.endswith("sha256") and want and text.startswith(want))):
                return False
        return True

    return [r for r in records if keep(r)]
