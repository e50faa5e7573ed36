"""Plots: PNGs are written for way / shot sweeps and bar charts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fsar.report import Record
from fsar.report.plot import plot_bars, plot_vs_shot, plot_vs_way

PNG = b"\x89PNG\r\n\x1a\n"


def sweep(record: Callable[..., Record]) -> list[Record]:
    """Records of three matchers over way 5..10 (1-shot) and shot 2, 3, 5 (5-way)."""
    out = []
    for m, base in (("km", 60.0), ("otam", 55.0), ("proto", 50.0)):
        for way in range(5, 11):
            out.append(record(m, way=way, shot=1, accuracy=base - 3 * (way - 5), ci95=0.4))
        for shot in (2, 3, 5):
            out.append(record(m, way=5, shot=shot, accuracy=base + 4 * shot, ci95=0.3))
    return out


def test_plots_are_png(tmp_path: Path, record: Callable[..., Record]) -> None:
    recs = sweep(record)
    paths = [
        plot_vs_way(recs, tmp_path / "way.png", shot=1),
        plot_vs_shot(recs, tmp_path / "shot.png", way=5),
        plot_bars(recs, tmp_path / "figs" / "bars.png", way=5, dataset="ssv2"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG


def test_no_matching_records(tmp_path: Path, record: Callable[..., Record]) -> None:
    with pytest.raises(ValueError, match="no records with shot=9"):
        plot_vs_way(sweep(record), tmp_path / "x.png", shot=9)


def test_axes_near_100_have_no_offset_clipped_bars_and_a_chance_line(
        tmp_path: Path, record: Callable[..., Record], monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    from fsar.report import plot

    kept = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: kept.append(fig) or Path(path))
    recs = [record(m, way=w, accuracy=acc - w / 1000, ci95=0.001) for m, acc in (("a", 99.99), ("b", 99.98))
            for w in (5, 6)]
    plot_vs_way(recs, tmp_path / "w.png", shot=1)
    ax = kept[0].axes[0]
    ax.figure.canvas.draw()
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    assert any(line.get_label().startswith("chance") for line in ax.get_lines())
    plt.close("all")
    np.testing.assert_allclose(plot.clipped_err([99.5, 1.0], [1.5, 1.5]), [[1.5, 1.0], [0.5, 1.5]])
