"""Result tables regenerated from records: Markdown, LaTeX (booktabs) or CSV.

Rows are matchers (sorted by name), columns are (dataset, way, shot) sorted by dataset name, way and
shot. A cell shows "mean ± CI" (%) of the newest record for that (matcher, dataset, way, shot); the
best mean of each column (ties included, compared as displayed) is bold in Markdown and LaTeX. CSV
has two numeric columns per setting, ``<setting> acc`` and ``<setting> ci95``, and no markup.

Records of different provenance never share a column: the dataset is labelled with what differs
(``ssv2 (small)`` / ``ssv2 (full)``, seed, backbone ...) or the table is refused
(:func:`fsar.report.provenance.distinguish`). Under the table, notes say how many older runs of the same
matcher and setting were superseded, and a mark (†) flags cells whose pool is not the full split list.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Literal

from fsar.report.provenance import distinguish, is_partial, pool_note
from fsar.report.results import Record, RecordError, latest

Format = Literal["md", "latex", "csv"]
Column = tuple[str, int, int]
MARKS = ("†", "‡", "§", "¶")
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}",
                                                   "\\": r"\textbackslash{}"}


def _grid(records: Iterable[Record]) -> tuple[list[str], list[Column], dict[tuple[str, Column], Record]]:
    """Rows, columns and the record of each cell; ``records`` are already distinguished by provenance."""
    cells = {
        (m, (d, w, s)): r
        for (m, d, w, s), r in latest(records, lambda r: (r.matcher, r.dataset, r.way, r.shot)).items()
    }
    rows = sorted({m for m, _ in cells})
    cols = sorted({c for _, c in cells})
    return rows, cols, cells


def footnote_marks(shown: Iterable[Record]) -> dict[str, str]:
    """Footnote mark of each distinct partial-pool note among the ``shown`` records, in their order."""
    notes = [pool_note(r.provenance) for r in shown if is_partial(r.provenance)]
    return {note: MARKS[i] if i < len(MARKS) else f"({i + 1})" for i, note in enumerate(dict.fromkeys(notes))}


def footnote_mark(record: Record, marks: dict[str, str]) -> str:
    """The mark of ``record``'s partial pool ("" for a full one)."""
    return marks[pool_note(record.provenance)] if is_partial(record.provenance) else ""


def table_notes(marks: dict[str, str], superseded: int, what: str) -> list[str]:
    """The lines under a table: each mark's pool note, and how many older runs of the same ``what`` and
    setting were superseded."""
    lines = [f"{mark} {note}" for note, mark in marks.items()]
    if superseded:
        lines.append(f"{superseded} older run{'s' if superseded > 1 else ''} of the same {what} and setting "
                     f"superseded (the newest is shown).")
    return lines


def _marks(cells: dict[tuple[str, Column], Record]) -> dict[str, str]:
    return footnote_marks(r for _, r in sorted(cells.items()))


def _notes(records: list[Record], cells: dict[tuple[str, Column], Record], marks: dict[str, str]) -> list[str]:
    return table_notes(marks, len(records) - len(cells), "matcher")


def column_label(col: Column) -> str:
    """Header of a (dataset, way, shot) column, e.g. ``ssv2 5-way 1-shot``."""
    dataset, way, shot = col
    return f"{dataset} {way}-way {shot}-shot"


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _text_rows(records: Iterable[Record], fmt: Format, digits: int
               ) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body cells (strings, with bold markup) and notes for the md and latex formats."""
    records = list(records)
    rows, cols, cells = _grid(records)
    marks = _marks(cells)
    pm, empty = (" $\\pm$ ", "--") if fmt == "latex" else (" ± ", "–")
    esc = _latex_escape if fmt == "latex" else (lambda s: s)
    body = [[esc(m)] for m in rows]
    for col in cols:
        shown = {m: f"{cells[m, col].accuracy:.{digits}f}" for m in rows if (m, col) in cells}
        best = max(shown.values(), key=float)
        for i, m in enumerate(rows):
            if m not in shown:
                body[i].append(empty)
                continue
            text = f"{shown[m]}{pm}{cells[m, col].ci95:.{digits}f}"
            if shown[m] == best:
                text = f"\\textbf{{{text}}}" if fmt == "latex" else f"**{text}**"
            body[i].append(text + footnote_mark(cells[m, col], marks))
    header = ["Matcher"] + [esc(column_label(c)) for c in cols]
    return header, body, _notes(records, cells, marks)


def _csv(records: list[Record], digits: int) -> str:
    """Numbers only in the cells (for spreadsheets); the notes follow as ``#`` comment lines."""
    rows, cols, cells = _grid(records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["matcher"] + [f"{column_label(c)} {k}" for c in cols for k in ("acc", "ci95")])
    for m in rows:
        line = [m]
        for c in cols:
            rec = cells.get((m, c))
            line += ["", ""] if rec is None else [f"{rec.accuracy:.{digits}f}", f"{rec.ci95:.{digits}f}"]
        writer.writerow(line)
    notes = [f"# {m} on {column_label(c)}: {pool_note(r.provenance)}"
             for (m, c), r in sorted(cells.items()) if is_partial(r.provenance)]
    notes += [f"# {line}" for line in _notes(records, cells, {})]
    return out.getvalue() + "".join(line + "\n" for line in notes)


def render_table(records: Iterable[Record], fmt: Format = "md", *, digits: int = 2, strict: bool = False) -> str:
    """Render records as a table in ``fmt`` ("md", "latex" or "csv"); ends with a newline.

    ``strict`` refuses records whose pool is not the full split list. The LaTeX table needs
    ``\\usepackage{booktabs}``.
    """
    if fmt not in ("md", "latex", "csv"):
        raise ValueError(f"unknown table format {fmt!r}; choose md, latex or csv")
    records = distinguish(records)
    if strict:
        refuse_partial(records)
    if fmt == "csv":
        return _csv(records, digits)
    if not records:
        return ""
    header, body, notes = _text_rows(records, fmt, digits)
    if fmt == "latex":
        notes = [_latex_escape(n).replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$") for n in notes]
        header, body = header, [[c.replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$") for c in row]
                                for row in body]
    grid = render_grid(header, body, fmt)
    return grid + ("\n" + "\n".join(notes) + "\n" if notes else "")


def refuse_partial(records: Iterable[Record]) -> None:
    """Raise naming every record whose pool is not the full split list (``fsar table --strict``)."""
    partial = [r for r in records if is_partial(r.provenance)]
    if partial:
        named = "; ".join(f"{r.matcher} on {column_label((r.dataset, r.way, r.shot))} ({pool_note(r.provenance)})"
                          for r in partial)
        raise RecordError(f"--strict: {len(partial)} record(s) come from a partial pool: {named}. Extract the "
                          f"rest of the split, or leave out --strict to show them marked")


def render_grid(header: list[str], body: list[list[str]], fmt: str) -> str:
    """A Markdown table or a LaTeX booktabs tabular of already formatted cells; ends with a newline."""
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        lines = [f"\\begin{{tabular}}{{l{'c' * (len(header) - 1)}}}", "\\toprule",
                 " & ".join(header) + " \\\\", "\\midrule"]
        lines += [" & ".join(row) + " \\\\" for row in body]
        lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
