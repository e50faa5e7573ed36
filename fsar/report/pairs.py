"""Results-directory front ends for ``fsar compare``, ``fsar table`` and ``fsar plot``.

A run is labelled by its matcher, plus ``@<modality>`` when it did not use RGB alone
(``jmm@rgb+flow``), ``/c`` when its features were centred in time (``otam/c``) and ``[km 0]`` when its
fusion weights left components out, so that these variants of one matcher are separate rows and
separate comparisons.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fsar.matchers.fusion import dropped_label
from fsar.report.compare import compare_records
from fsar.report.plot import plot_bars, plot_vs_shot, plot_vs_way
from fsar.report.provenance import (
    FIELDS,
    apply_filters,
    distinguish,
    parse_filters,
    setting_key,
    short_value,
    source_name,
)
from fsar.report.results import Record, RecordError, file_sha256, latest, load_records
from fsar.report.table import render_table


def label(record: Record) -> str:
    """``matcher[variant][@modality][/c][ [dropped]]``: e.g. ``ita[loss=ce]``, ``otam@rgb+flow/c``, and
    ``jmm@rgb+flow/c [km 0]`` when the fusion weights leave components out (never shown as the method)."""
    name = record.matcher + (f"[{record.params['variant']}]" if record.params.get("variant") else "")
    name = name if record.modality == "rgb" else f"{name}@{record.modality}"
    drop = dropped_label(record.params.get("weights"))
    return name + ("/c" if record.params.get("center") else "") + (f" [{drop}]" if drop else "")


def labelled_records(results: str | os.PathLike[str], filters: Sequence[str] = ()) -> list[Record]:
    """The records of a results directory with matchers relabelled by :func:`label`, those that pass every
    ``KEY=VALUE`` of ``filters`` (see :func:`fsar.report.provenance.apply_filters`)."""
    if not Path(results).is_dir():
        raise RecordError(f"no results directory {results}; run `fsar eval` first (or pass --results DIR)")
    records = [replace(r, matcher=label(r)) for r in load_records(results)]
    if not records:
        raise RecordError(f"no result records in {results}; run `fsar eval` first")
    records = apply_filters(records, parse_filters(filters))
    if not records:
        raise RecordError(f"no result record in {results} passes --filter {' '.join(filters)}")
    return records


def _differences(a: Record, b: Record) -> str:
    """Where two records' provenance differs, e.g.
    ``cache_sha256 1a2b3c4d5e6f (caches/ssv2.zarr) vs 9f8e7d6c5b4a (caches/ssv2-b.zarr), seed 0 vs 1``."""
    fields = [f for f in FIELDS if f not in ("modality", "center") and a.provenance.get(f) != b.provenance.get(f)]
    return ", ".join(f"{f} {_shown(f, a)} vs {_shown(f, b)}" for f in fields)


def _shown(field: str, record: Record) -> str:
    """A differing value as a reader can place it: a hash with the file or name it belongs to."""
    value = record.provenance.get(field)
    return f"{short_value(value)} ({source_name(field, record)})" if field.endswith("sha256") else str(value)


def compare_latest(results: str | os.PathLike[str], a: str, b: str, *, shot: int | None = None,
                   way: int | None = None, modality: str | None = None, filters: Sequence[str] = (),
                   allow_different: bool = False, a_filters: Sequence[str] = (), b_filters: Sequence[str] = ()
                   ) -> list[str]:
    """One comparison line per setting (cache, episode list ...) on which both ``a`` and ``b`` were evaluated
    (newest runs). A column where they were only evaluated on different settings is refused with a line
    naming what differs, or compared anyway with ``allow_different``.

    ``a_filters`` / ``b_filters`` (``KEY=VALUE``) select each side's records apart: one matcher on two caches
    (``a == b``, e.g. ImageNet features against a fine-tuned backbone's) is compared that way, with
    ``allow_different`` since the caches differ.
    """
    records = [r for r in labelled_records(results, filters)
               if (shot is None or r.shot == shot) and (way is None or r.way == way)
               and (modality is None or r.modality == modality)]
    side_a, side_b = _side(records, a, a_filters), _side(records, b, b_filters)
    if a == b and side_a == side_b:
        raise RecordError(f"comparing {a!r} with itself: select each side's runs with --a KEY=VALUE and --b "
                          "KEY=VALUE (e.g. --a cache=PREFIX --b cache=PREFIX)")
    records = [r for r in records if id(r) in side_a | side_b]
    newest = latest(records, lambda r: (r.matcher, r.dataset, r.way, r.shot, setting_key(r), r.episodes_sha256))
    lines, refused = [], []
    columns = sorted({(r.dataset, r.way, r.shot) for r in newest.values()}, key=lambda c: (c[1], c[2], c[0]))
    for dataset, w, s in columns:
        here = [r for r in newest.values() if (r.dataset, r.way, r.shot) == (dataset, w, s)]
        of_a = sorted((r for r in here if id(r) in side_a), key=lambda r: r.created, reverse=True)
        of_b = sorted((r for r in here if id(r) in side_b), key=lambda r: r.created, reverse=True)
        pairs = [(ra, rb) for ra in of_a for rb in of_b
                 if setting_key(ra) == setting_key(rb) and ra.episodes_sha256 == rb.episodes_sha256]
        head = f"[{dataset} {w}-way {s}-shot]"
        if not pairs and of_a and of_b:
            ra, rb = of_a[0], of_b[0]
            if not allow_different:
                refused.append(f"{head} not compared: {a} and {b} were evaluated on different settings "
                               f"({_differences(ra, rb)}); pick one with --filter, or pass --allow-different")
                continue
            pairs = [(ra, rb)]
            head += f" (different: {_differences(ra, rb)})"
        for ra, rb in pairs:
            result = compare_records(ra, rb, allow_different=allow_different, query_videos=_query_videos(ra))
            lines.append(f"{head} {result.summary()}")
    if not lines:
        known = ", ".join(sorted({r.matcher for r in records})) or "(none)"
        reason = "; ".join(refused) if refused else f"evaluated there: {known}"
        raise RecordError(f"no setting on which both {a!r} and {b!r} were evaluated in {results}; {reason}")
    return lines + refused


def _side(records: list[Record], matcher: str, filters: Sequence[str]) -> set[int]:
    """Identities of the records of ``matcher`` that pass ``filters`` (one side of a comparison)."""
    return {id(r) for r in apply_filters([r for r in records if r.matcher == matcher], parse_filters(filters))}


def table_from_dir(results: str | os.PathLike[str], fmt: str = "md", *, filters: Sequence[str] = (),
                   strict: bool = False) -> str:
    return render_table(labelled_records(results, filters), fmt, strict=strict)  # type: ignore[arg-type]


def ablation_from_dir(results: str | os.PathLike[str], matcher: str | None, fmt: str = "md", *,
                      filters: Sequence[str] = (), strict: bool = False) -> str:
    """Ablation table(s): of ``matcher``, or of every matcher evaluated in more than one variant; records
    filtered and grouped by provenance as in :func:`table_from_dir`."""
    from fsar.report.ablation import render_ablation

    if not Path(results).is_dir():
        raise RecordError(f"no results directory {results}; run `fsar eval` first (or pass --results DIR)")
    records = apply_filters(load_records(results), parse_filters(filters))
    if not records:
        raise RecordError(f"no result record in {results} passes --filter {' '.join(filters)}")
    if matcher is not None:
        return render_ablation(records, matcher, fmt, strict=strict)
    variants: dict[str, set[str]] = {}
    for r in records:
        variants.setdefault(r.matcher, set()).add(str(r.params.get("variant", "")))
    names = sorted(m for m, v in variants.items() if len(v) > 1)
    if not names:
        raise RecordError(f"no matcher in {results} was evaluated in more than one variant: train variants with "
                          f"`fsar train -p NAME=VALUE` (see `fsar train --matcher M --list-params`)")
    return "\n".join(f"{name}\n\n{render_ablation(records, name, fmt, strict=strict)}" for name in names)


def plot_from_dir(results: str | os.PathLike[str], kind: str, out: str | os.PathLike[str], *, shot: int = 1,
                  way: int = 5, filters: Sequence[str] = ()) -> Path:
    records = distinguish(labelled_records(results, filters))  # panels per setting, as table columns
    if kind == "way":
        return plot_vs_way(records, out, shot=shot)
    if kind == "shot":
        return plot_vs_shot(records, out, way=way)
    return plot_bars(records, out, way=way)


def _query_videos(record: Record) -> NDArray[np.str_] | None:
    """The video of each query of ``record`` ([E, way * query], the order of ``record.correct``), read from its
    episode list when the file is still there and still the list the record was scored on; else None."""
    from fsar.episodes import EpisodeError, load_episodes

    path = Path(record.episodes_path)
    if not path.is_file() or file_sha256(path) != record.episodes_sha256:
        return None
    try:
        episodes = load_episodes(path)
    except EpisodeError:
        return None
    ids = episodes.query_ids
    return ids.reshape(ids.shape[0], -1) if ids.reshape(ids.shape[0], -1).shape == record.correct.shape else None
