"""Result tables regenerated from records: Markdown, LaTeX (booktabs) or CSV.

Rows are matchers (sorted by name), columns are (dataset, way, shot) sorted by dataset name, way and
shot. A cell shows "mean ± CI" (%) of the newest record for that (matcher, dataset, way, shot); the
best mean of each column (ties included, compared as displayed) is bold in Markdown and LaTeX. CSV
has two numeric columns per setting, ``<setting> acc`` and ``<setting> ci95``, and no markup.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Literal

from fsar.report.results import Record, latest

Format = Literal["md", "latex", "csv"]
Column = tuple[str, int, int]
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}",
                                                   "\\": r"\textbackslash{}"}


def _grid(records: Iterable[Record]) -> tuple[list[str], list[Column], dict[tuple[str, Column], Record]]:
    cells = {
        (m, (d, w, s)): r
        for (m, d, w, s), r in latest(records, lambda r: (r.matcher, r.dataset, r.way, r.shot)).items()
    }
    rows = sorted({m for m, _ in cells})
    cols = sorted({c for _, c in cells})
    return rows, cols, cells


def column_label(col: Column) -> str:
    """Header of a (dataset, way, shot) column, e.g. ``ssv2 5-way 1-shot``."""
    dataset, way, shot = col
    return f"{dataset} {way}-way {shot}-shot"


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _text_rows(records: Iterable[Record], fmt: Format, digits: int) -> tuple[list[str], list[list[str]]]:
    """Header and body cells (strings, with bold markup) for the md and latex formats."""
    rows, cols, cells = _grid(records)
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
            body[i].append(text)
    header = ["Matcher"] + [esc(column_label(c)) for c in cols]
    return header, body


def _csv(records: Iterable[Record], digits: int) -> str:
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
    return out.getvalue()


def render_table(records: Iterable[Record], fmt: Format = "md", *, digits: int = 2) -> str:
    """Render records as a table in ``fmt`` ("md", "latex" or "csv"); ends with a newline.

    The LaTeX table needs ``\\usepackage{booktabs}``.
    """
    records = list(records)
    if fmt == "csv":
        return _csv(records, digits)
    if fmt not in ("md", "latex"):
        raise ValueError(f"unknown table format {fmt!r}; choose md, latex or csv")
    if not records:
        return ""
    header, body = _text_rows(records, fmt, digits)
    return render_grid(header, body, fmt)


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
