"""Evaluation records: one JSON file per eval run.

File ``<results dir>/<created>-<matcher>-<dataset>-<split>-<way>w<shot>s-<protocol>-<hash8>.json``,
one self-contained JSON object (sorted keys) with ``"format": "fsar-result"``, ``"format_version": 1``,
every :class:`Record` field, and the per-query correctness bit-packed::

    "correct": {"encoding": "packbits-base64", "shape": [E, Q], "data": "<base64>"}

``data`` is ``base64(numpy.packbits(correct.ravel()))`` (big bit order, zero padded); Q = way * query
with query ``(w, j)`` of an episode (class label ``w``, j-th query, as in ``EpisodeList.query_ids``)
at column ``w * query + j``. 10,000 five-way episodes take about 8 KB.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from fsar._io import atomic_write
from fsar.errors import FsarError
from fsar.report.provenance import complete
from fsar.report.stats import summarize
from fsar.workspace import result_file_name

FORMAT_NAME = "fsar-result"
FORMAT_VERSION = 1
K = TypeVar("K", bound=Hashable)


class RecordError(FsarError, ValueError):
    """A result record cannot be read or built; the message names the file or field."""


def fsar_version() -> str:
    """The installed fsar version, or ``"unknown"`` when running from an uninstalled tree."""
    try:
        return metadata.version("fsar")
    except metadata.PackageNotFoundError:
        return "unknown"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks (e.g. an episode-list file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Record:
    """One evaluation run of one matcher on one fixed episode list.

    correct: (E, way * query) bool per-query correctness (column order: see the module docstring).
    accuracy, ci95: mean accuracy and 95% CI half-width in %, over episodes or, for multi-run
    protocols, over runs (``ci_over``). pairs_per_s: query-support video pairs scored per second
    (0 if ``seconds`` is 0).
    created: ISO 8601 UTC time.
    """

    matcher: str
    params: dict[str, Any]
    dataset: str
    split: str
    way: int
    shot: int
    query: int
    protocol: str
    n_runs: int
    modality: str
    cache_path: str
    cache_sha256: str
    episodes_path: str
    episodes_sha256: str
    checkpoint: str | None
    correct: NDArray[np.bool_]
    accuracy: float
    ci95: float
    ci_over: str
    seconds: float
    pairs_per_s: float
    fsar_version: str
    created: str
    extra: dict[str, Any] = field(default_factory=dict)
    # Data, features, episodes and code behind the numbers (fsar.report.provenance.FIELDS); filled from the
    # other fields, marked ``known: False``, for records written before it was stored.
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_episodes(self) -> int:
        """Number of episodes E."""
        return int(self.correct.shape[0])

    @property
    def correct_counts(self) -> NDArray[np.int64]:
        """(E,) int: correctly classified queries per episode (out of way * query)."""
        return self.correct.sum(axis=1, dtype=np.int64)


def make_record(
    *,
    matcher: str,
    params: dict[str, Any],
    dataset: str,
    split: str,
    way: int,
    shot: int,
    query: int,
    protocol: str,
    n_runs: int = 1,
    modality: str = "rgb",
    cache_path: str,
    cache_sha256: str,
    episodes_path: str,
    episodes_sha256: str,
    checkpoint: str | None = None,
    correct: NDArray[np.bool_],
    seconds: float,
    extra: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Record:
    """Build a :class:`Record`, computing accuracy, CI, throughput, version and creation time.

    correct: (E, way * query) bool. seconds: wall time of the scoring. provenance: see
    :mod:`fsar.report.provenance`; what it leaves out is taken from the other arguments.
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.shape[1] != way * query:
        raise RecordError(f"correct must be (E, way*query = {way * query}), got shape {correct.shape}")
    summary = summarize(correct, n_runs)
    pairs = correct.shape[0] * correct.shape[1] * way * shot
    record = Record(
        matcher=matcher, params=dict(params), dataset=dataset, split=split, way=way, shot=shot,
        query=query, protocol=protocol, n_runs=n_runs, modality=modality, cache_path=str(cache_path),
        cache_sha256=cache_sha256, episodes_path=str(episodes_path), episodes_sha256=episodes_sha256,
        checkpoint=None if checkpoint is None else str(checkpoint), correct=correct,
        accuracy=summary.accuracy, ci95=summary.ci95, ci_over=summary.over, seconds=float(seconds),
        pairs_per_s=pairs / seconds if seconds > 0 else 0.0, fsar_version=fsar_version(),
        created=datetime.now(UTC).isoformat(timespec="microseconds"), extra=dict(extra or {}),
    )
    return replace(record, provenance=complete(provenance, record))


def record_to_json(record: Record) -> str:
    """The JSON text of ``record`` (see the module docstring)."""
    obj = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "correct"}
    bits = np.packbits(np.asarray(record.correct, dtype=bool).ravel())
    obj["correct"] = {
        "encoding": "packbits-base64",
        "shape": list(record.correct.shape),
        "data": base64.b64encode(bits.tobytes()).decode("ascii"),
    }
    obj.update(format=FORMAT_NAME, format_version=FORMAT_VERSION)
    return json.dumps(obj, sort_keys=True, indent=1, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    """NumPy scalars/arrays and paths in ``params``/``extra`` become plain JSON values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot store {type(value).__name__} in a result record")


def record_from_json(text: str, source: str = "<string>") -> Record:
    """Parse a record written by :func:`record_to_json`; ``source`` names it in errors."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise RecordError(f"{source} is not an fsar result record")
    if obj.get("format_version") != FORMAT_VERSION:
        raise RecordError(f"{source}: result format version {obj.get('format_version')} is not "
                          f"{FORMAT_VERSION}; re-run `fsar eval` to regenerate it")
    try:
        packed = obj.pop("correct")
        shape = tuple(int(s) for s in packed["shape"])
        bits = np.frombuffer(base64.b64decode(packed["data"]), dtype=np.uint8)
        correct = np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
        kwargs = {f.name: obj[f.name] for f in fields(Record) if f.name not in ("correct", "extra", "provenance")}
        record = Record(correct=correct, extra=obj.get("extra", {}), **kwargs)
        return replace(record, provenance=complete(obj.get("provenance"), record))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{source}: malformed result record ({exc!r})") from None


def write_record(directory: str | os.PathLike[str], record: Record) -> Path:
    """Write ``record`` as a new JSON file in ``directory`` (created if needed); return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = record_to_json(record)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    name = result_file_name(record.created, record.matcher, record.dataset, record.split, record.way, record.shot,
                            record.protocol, digest)
    return atomic_write(directory / name, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_record(path: str | os.PathLike[str]) -> Record:
    """Read one record file."""
    return record_from_json(Path(path).read_text(encoding="utf-8"), str(path))


def load_records(directory: str | os.PathLike[str]) -> list[Record]:
    """All records in ``directory`` (``*.json``, not recursive), oldest first.

    JSON files that are not fsar records are skipped; damaged records raise :class:`RecordError`.
    """
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        text = path.read_text(encoding="utf-8")
        if f'"{FORMAT_NAME}"' not in text:
            continue
        records.append(record_from_json(text, str(path)))
    return sorted(records, key=lambda r: r.created)


def latest(records: Iterable[Record], key: Callable[[Record], K]) -> dict[K, Record]:
    """The newest record (by ``created``) for each distinct ``key(record)``."""
    out: dict[K, Record] = {}
    for rec in records:
        k = key(rec)
        if k not in out or rec.created > out[k].created:
            out[k] = rec
    return out
