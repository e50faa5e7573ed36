"""Ablation tables as the papers print them: one row per variant of a learned head.

Records of one matcher trained with different hyperparameters (``fsar train -p ...``) become rows; the
hyperparameters that differ between the rows become columns — one ✓/✗ column per component for
switch lists such as HCL's ``losses=ce,g,t,s`` or M3Net's ``views=im,cm,tm``, ✓/✗ for booleans, the
value otherwise — followed by accuracy (mean ± 95% CI) per (dataset, way, shot) and its difference
from the reference row: the defaults (the row without a variant), or, when every row shares some
settings (all trained with ``patch_grid=2``, say), the row that changes only those.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fsar.report.provenance import distinguish
from fsar.report.results import Record, RecordError, latest
from fsar.report.table import (
    Column,
    column_label,
    footnote_mark,
    footnote_marks,
    refuse_partial,
    render_grid,
    table_notes,
)

YES, NO = "✓", "✗"


def _config(record: Record) -> dict[str, Any]:
    config = record.params.get("config")
    return config if isinstance(config, dict) else {}


def _varying(records: list[Record]) -> list[tuple[str, Any]]:
    """(parameter, element) columns: element is None for scalars, a member name for switch lists."""
    names = sorted({k for r in records for k in _config(r)})
    columns: list[tuple[str, Any]] = []
    for name in names:
        values = [_config(r).get(name) for r in records]
        if all(v == values[0] for v in values):
            continue
        lists = [v for v in values if isinstance(v, list)]
        if len(lists) == len(values):
            members = list(dict.fromkeys(m for v in lists for m in v))
            columns += [(name, m) for m in members]
        else:
            columns.append((name, None))
    return columns


def _set_in_variant(record: Record, name: str) -> bool:
    """True when the record's variant (its non-default hyperparameters) sets ``name``."""
    return any(part.split("=", 1)[0] == name for part in str(record.params.get("variant", "")).split(","))


def _cell(record: Record, column: tuple[str, Any]) -> str:
    name, member = column
    value = _config(record).get(name)
    if member is not None:
        if value == [] and not _set_in_variant(record, name):
            return "–"  # an empty default list is the head's "not restricted" (M3Net predict: every view)
        return YES if isinstance(value, list) and member in value else NO
    if isinstance(value, bool):
        return YES if value else NO
    return "–" if value is None else str(value)


def ablation_rows(records: Iterable[Record], matcher: str, *, digits: int = 2, strict: bool = False
                  ) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and notes of the ablation table of ``matcher`` (records labelled by ``variant``).

    Each row's Δ is its difference from the paper-default row of the same streams (modality, centring).
    Records of different provenance get different columns, as in :func:`fsar.report.table.render_table`
    (``ssv2 (seed 1)``); cells from a partial pool are marked and footnoted, or refused with ``strict``; the
    notes also count superseded runs.
    """
    own = [r for r in records if r.matcher == matcher]
    if not own:
        raise RecordError(f"no records of {matcher!r}: train variants with `fsar train --matcher {matcher} -p ...` "
                          f"and evaluate each with --checkpoint")
    own = distinguish(own)
    if strict:
        refuse_partial(own)
    newest = latest(own, lambda r: (_row_key(r), r.dataset, r.way, r.shot))
    marks = footnote_marks(r for _, r in sorted(newest.items()))
    keys = sorted({k[0] for k in newest}, key=lambda k: (k[1], k[0] != "", k[0]))
    cols: list[Column] = sorted({(d, w, s) for _, d, w, s in newest})
    firsts = {key: next(r for (k, *_), r in newest.items() if k == key) for key in keys}
    params = _varying(list(firsts.values()))
    header = ["variant"] + [name if m is None else f"{name}: {m}" for name, m in params]
    for col in cols:
        header += [column_label(col), "Δ"]
    bases = _reference_rows(keys)
    body = []
    for key in keys:
        variant, streams = key
        row = [(variant or "defaults") + streams] + [_cell(firsts[key], p) for p in params]
        base_key = bases.get(streams)
        for d, w, s in cols:
            rec = newest.get((key, d, w, s))
            base = None if base_key is None else newest.get((base_key, d, w, s))
            mark = "" if rec is None else footnote_mark(rec, marks)
            row.append("–" if rec is None else f"{rec.accuracy:.{digits}f} ± {rec.ci95:.{digits}f}{mark}")
            delta = None if rec is None or base is None or key == base_key else rec.accuracy - base.accuracy
            row.append("" if delta is None else f"{delta:+.{digits}f}")
        body.append(row)
    return header, body, table_notes(marks, len(own) - len(newest), "variant")


def _reference_rows(keys: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Per streams, the row Δ is taken against: the one that changes only what every row of those streams
    changes — the defaults, or e.g. ``patch_grid=2`` when every variant was trained on a 2×2 cache."""
    out = {}
    for streams in {s for _, s in keys}:
        own = [k for k in keys if k[1] == streams]
        items = {k: set(filter(None, k[0].split(","))) for k in own}
        common = set.intersection(*items.values())
        reference = [k for k in own if items[k] == common]
        if reference:
            out[streams] = reference[0]
    return out


def _row_key(record: Record) -> tuple[str, str]:
    """(variant, streams): rows are compared with the paper-default row of the same streams."""
    streams = "" if record.modality == "rgb" else f" @{record.modality}"
    if record.params.get("center"):
        streams += " /c"
    return str(record.params.get("variant", "")), streams


def render_ablation(records: Iterable[Record], matcher: str, fmt: str = "md", *, strict: bool = False) -> str:
    """The ablation table of ``matcher`` in ``fmt`` (md, latex or csv) with its notes; ends with a newline."""
    header, body, notes = ablation_rows(records, matcher, strict=strict)
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([header, *body])
        return out.getvalue() + "".join(f"# {line}\n" for line in notes)
    if fmt == "latex":
        marks = {YES: r"\checkmark", NO: "", "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"$^\dagger$",
                 "‡": r"$^\ddagger$"}

        def tex(cell: str) -> str:
            cell = cell.replace("_", r"\_")
            for a, b in marks.items():
                cell = cell.replace(a, b)
            return cell

        header, body, notes = [tex(c) for c in header], [[tex(c) for c in row] for row in body], [tex(n) for n in notes]
    return render_grid(header, body, fmt) + ("\n" + "\n".join(notes) + "\n" if notes else "")
