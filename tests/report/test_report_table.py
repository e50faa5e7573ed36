"""Tables: golden Markdown / LaTeX / CSV on hand-made records."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fsar.report import Record, render_table

NEW = "2024-06-01T00:00:00+00:00"
OLD = "2024-01-01T00:00:00+00:00"


def records(record: Callable[..., Record]) -> list[Record]:
    return [
        record("otam_km", dataset="ssv2", shot=5, accuracy=71.456, ci95=0.17, created=NEW),
        record("km", dataset="ssv2", shot=1, accuracy=55.123, ci95=0.2, created=NEW),
        record("km", dataset="ssv2", shot=1, accuracy=99.0, ci95=0.1, created=OLD),  # superseded
        record("otam_km", dataset="ssv2", shot=1, accuracy=52.0, ci95=0.25, created=NEW),
        record("km", dataset="ssv2", shot=5, accuracy=70.0, ci95=0.18, created=NEW),
        record("otam_km", dataset="kinetics", shot=1, accuracy=73.2, ci95=0.3, created=NEW),
    ]


MD = """\
| Matcher | kinetics 5-way 1-shot | ssv2 5-way 1-shot | ssv2 5-way 5-shot |
|---|---|---|---|
| km | – | **55.12 ± 0.20** | 70.00 ± 0.18 |
| otam_km | **73.20 ± 0.30** | 52.00 ± 0.25 | **71.46 ± 0.17** |

1 older run of the same matcher and setting superseded (the newest is shown).
"""

LATEX = r"""\begin{tabular}{lccc}
\toprule
Matcher & kinetics 5-way 1-shot & ssv2 5-way 1-shot & ssv2 5-way 5-shot \\
\midrule
km & -- & \textbf{55.12 $\pm$ 0.20} & 70.00 $\pm$ 0.18 \\
otam\_km & \textbf{73.20 $\pm$ 0.30} & 52.00 $\pm$ 0.25 & \textbf{71.46 $\pm$ 0.17} \\
\bottomrule
\end{tabular}

1 older run of the same matcher and setting superseded (the newest is shown).
"""

CSV = """\
matcher,kinetics 5-way 1-shot acc,kinetics 5-way 1-shot ci95,ssv2 5-way 1-shot acc,\
ssv2 5-way 1-shot ci95,ssv2 5-way 5-shot acc,ssv2 5-way 5-shot ci95
km,,,55.12,0.20,70.00,0.18
otam_km,73.20,0.30,52.00,0.25,71.46,0.17
# 1 older run of the same matcher and setting superseded (the newest is shown).
"""


@pytest.mark.parametrize(("fmt", "golden"), [("md", MD), ("latex", LATEX), ("csv", CSV)])
def test_golden(fmt: str, golden: str, record: Callable[..., Record]) -> None:
    assert render_table(records(record), fmt) == golden  # type: ignore[arg-type]
    assert render_table(list(reversed(records(record))), fmt) == golden  # type: ignore[arg-type]


def test_ties_are_all_bold_and_errors(record: Callable[..., Record]) -> None:
    tied = [record("a", accuracy=60.001, ci95=0.1), record("b", accuracy=59.999, ci95=0.1)]
    assert render_table(tied).count("**60.00 ± 0.10**") == 2
    assert render_table([]) == ""
    with pytest.raises(ValueError, match="unknown table format"):
        render_table(tied, "html")  # type: ignore[arg-type]
