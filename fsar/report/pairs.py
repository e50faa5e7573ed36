"""Results-directory front ends for ``fsar compare``, ``fsar table`` and ``fsar plot``.

A run is labelled by its matcher, plus ``@<modality>`` when it did not use RGB alone
(``jmm@rgb+flow``) and ``/c`` when its features were centred in time (``otam/c``), so that these
variants of one matcher are separate rows and separate comparisons.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from fsar.report.compare import compare_records
from fsar.report.plot import plot_bars, plot_vs_shot, plot_vs_way
from fsar.report.results import Record, RecordError, latest, load_records
from fsar.report.table import render_table


def label(record: Record) -> str:
    """``matcher[variant][@modality][/c]``: e.g. ``ita[loss=ce]``, ``otam@rgb+flow/c``."""
    name = record.matcher + (f"[{record.params['variant']}]" if record.params.get("variant") else "")
    name = name if record.modality == "rgb" else f"{name}@{record.modality}"
    return name + ("/c" if record.params.get("center") else "")


def labelled_records(results: str | os.PathLike[str]) -> list[Record]:
    """The records of a results directory with matchers relabelled by :func:`label`."""
    if not Path(results).is_dir():
        raise RecordError(f"no results directory {results}; run `fsar eval` first (or pass --results DIR)")
    records = [replace(r, matcher=label(r)) for r in load_records(results)]
    if not records:
        raise RecordError(f"no result records in {results}; run `fsar eval` first")
    return records


def compare_latest(results: str | os.PathLike[str], a: str, b: str, *, shot: int | None = None,
                   way: int | None = None, modality: str | None = None) -> list[str]:
    """One comparison line per episode list on which both ``a`` and ``b`` were evaluated (newest runs)."""
    records = [r for r in labelled_records(results)
               if (shot is None or r.shot == shot) and (way is None or r.way == way)
               and (modality is None or r.modality == modality)]
    newest = latest(records, lambda r: (r.matcher, r.episodes_sha256))
    lines = []
    for (name, sha), rec_a in sorted(newest.items(), key=lambda kv: (kv[1].way, kv[1].shot, kv[0])):
        if name != a or (b, sha) not in newest:
            continue
        result = compare_records(rec_a, newest[b, sha])
        lines.append(f"[{rec_a.dataset} {rec_a.way}-way {rec_a.shot}-shot] {result.summary()}")
    if not lines:
        known = ", ".join(sorted({r.matcher for r in records})) or "(none)"
        raise RecordError(f"no episode list on which both {a!r} and {b!r} were evaluated in {results}; "
                          f"evaluated there: {known}")
    return lines


def table_from_dir(results: str | os.PathLike[str], fmt: str = "md") -> str:
    return render_table(labelled_records(results), fmt)  # type: ignore[arg-type]


def ablation_from_dir(results: str | os.PathLike[str], matcher: str | None, fmt: str = "md") -> str:
    """Ablation table(s): of ``matcher``, or of every matcher evaluated in more than one variant."""
    from fsar.report.ablation import render_ablation
    from fsar.report.results import load_records

    if not Path(results).is_dir():
        raise RecordError(f"no results directory {results}; run `fsar eval` first (or pass --results DIR)")
    records = load_records(results)
    if matcher is not None:
        return render_ablation(records, matcher, fmt)
    variants: dict[str, set[str]] = {}
    for r in records:
        variants.setdefault(r.matcher, set()).add(str(r.params.get("variant", "")))
    names = sorted(m for m, v in variants.items() if len(v) > 1)
    if not names:
        raise RecordError(f"no matcher in {results} was evaluated in more than one variant: train variants with "
                          f"`fsar train -p NAME=VALUE` (see `fsar train --matcher M --list-params`)")
    return "\n".join(f"{name}\n\n{render_ablation(records, name, fmt)}" for name in names)


def plot_from_dir(results: str | os.PathLike[str], kind: str, out: str | os.PathLike[str], *, shot: int = 1,
                  way: int = 5) -> Path:
    records = labelled_records(results)
    if kind == "way":
        return plot_vs_way(records, out, shot=shot)
    if kind == "shot":
        return plot_vs_shot(records, out, way=way)
    return plot_bars(records, out, way=way)
