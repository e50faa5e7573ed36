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


def test_axes_near_100_have_no_offset_and_the_way_plot_a_chance_line(
        tmp_path: Path, record: Callable[..., Record], monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    from fsar.report import plot

    kept = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: kept.append(fig) or Path(path))
    # A tight range near 100 (no chance line on the shot plot to widen it): matplotlib's default would print
    # ticks 0.0005 ... 0.0020 under a "+9.999e1" offset.
    recs = [record(m, shot=s, accuracy=acc - s / 1000, ci95=0.001) for m, acc in (("a", 99.999), ("b", 99.998))
            for s in (1, 2)]
    plot_vs_shot(recs, tmp_path / "s.png", way=5)
    plot_vs_way(recs, tmp_path / "w.png", shot=1)
    shot_ax, way_ax = kept[0].axes[0], kept[1].axes[0]
    shot_ax.figure.canvas.draw()
    assert shot_ax.yaxis.get_major_formatter().get_offset() == ""
    assert all(float(t.get_text()) > 99 for t in shot_ax.get_yticklabels() if t.get_text())
    assert any(line.get_label().startswith("chance") for line in way_ax.get_lines())
    plt.close("all")


def test_ci_bars_stop_at_0_and_100(tmp_path: Path, record: Callable[..., Record],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    from fsar.report import plot

    kept = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: kept.append(fig) or Path(path))
    recs = [record("a", way=5, accuracy=99.5, ci95=1.5), record("a", way=6, accuracy=1.0, ci95=1.5)]
    plot_vs_way(recs, tmp_path / "w.png", shot=1)
    plot_bars(recs, tmp_path / "b.png", way=5)
    (line_ax,), (bar_ax,) = kept[0].axes, kept[1].axes
    from matplotlib.container import ErrorbarContainer

    ends = [np.concatenate([np.ravel(seg) for seg in coll.get_segments()]) for ax in (line_ax, bar_ax)
            for c in ax.containers if isinstance(c, ErrorbarContainer) for coll in c.lines[2]]
    vertical = ends[0].reshape(-1, 2, 2)[:, :, 1]  # the way plot's bars: (x, y) ends, y in %
    np.testing.assert_allclose(np.sort(vertical.ravel()), [0.0, 2.5, 98.0, 100.0])
    horizontal = ends[1].reshape(-1, 2, 2)[:, :, 0]  # the bar plot's: x in %
    np.testing.assert_allclose(np.sort(horizontal.ravel()), [98.0, 100.0])
    plt.close("all")
