"""Figures from result records (matplotlib, Agg backend, PNG).

- :func:`plot_vs_way`: accuracy against way (e.g. 5..10) at a fixed shot, one line per matcher with
  95% CI error bars, one panel per dataset (like TSJM's Fig. 3, N-way 1-shot).
- :func:`plot_vs_shot`: the same against shot at a fixed way.
- :func:`plot_bars`: grouped bars, accuracy ± CI per matcher for each shot at a fixed way.

For each (matcher, dataset, way, shot) only the newest record is drawn, as in the tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fsar.report.results import Record, latest  # noqa: E402

Axis = Literal["way", "shot"]


def _select(records: Iterable[Record], fixed: dict[str, int], dataset: str | None) -> list[Record]:
    chosen = [
        r for r in records
        if all(getattr(r, k) == v for k, v in fixed.items()) and (dataset is None or r.dataset == dataset)
    ]
    if not chosen:
        want = ", ".join(f"{k}={v}" for k, v in fixed.items())
        raise ValueError(f"no records with {want}" + (f" on {dataset}" if dataset else ""))
    cells = latest(chosen, lambda r: (r.matcher, r.dataset, r.way, r.shot))
    return sorted(cells.values(), key=lambda r: (r.dataset, r.matcher, r.way, r.shot))


def clipped_err(acc: Any, ci: Any) -> np.ndarray:
    """(2, n) lower/upper error-bar lengths of ``acc`` ± ``ci`` clipped to [0, 100] % (no bar past 100 %)."""
    acc, ci = np.asarray(acc, dtype=float), np.asarray(ci, dtype=float)
    return np.stack([np.minimum(ci, np.clip(acc, 0, 100)), np.minimum(ci, np.clip(100 - acc, 0, 100))])


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, metadata={"Software": None})
    plt.close(fig)
    return path


def _panels(datasets: list[str]) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.8), squeeze=False)
    return fig, list(axes[0])


def _line_plot(
    records: Iterable[Record], path: str | os.PathLike[str], x: Axis, fixed: dict[str, int],
    dataset: str | None,
) -> Path:
    chosen = _select(records, fixed, dataset)
    datasets = sorted({r.dataset for r in chosen})
    fig, axes = _panels(datasets)
    for ax, ds in zip(axes, datasets, strict=True):
        here = [r for r in chosen if r.dataset == ds]
        for matcher in sorted({r.matcher for r in here}):
            pts = sorted((getattr(r, x), r.accuracy, r.ci95) for r in here if r.matcher == matcher)
            xs, ys, cis = (np.array(v) for v in zip(*pts, strict=True))
            ax.errorbar(xs, ys, yerr=clipped_err(ys, cis), marker="o", capsize=3, label=matcher)
        if x == "way":  # chance falls with the way: the curves' floor
            ways = np.array(sorted({r.way for r in here}))
            ax.plot(ways, 100.0 / ways, color="grey", linestyle="--", linewidth=1, label="chance (100/N)")
        # Results near 100 % would otherwise be printed as offsets from "+1e2".
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        fixed_text = ", ".join(f"{v}-{k}" for k, v in fixed.items())
        ax.set_title(f"{ds} ({fixed_text})" if ds else fixed_text)
        ax.set_xlabel(f"{x} (N)" if x == "way" else f"{x} (K)")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(sorted({getattr(r, x) for r in here}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_vs_way(
    records: Iterable[Record], path: str | os.PathLike[str], *, shot: int = 1, dataset: str | None = None
) -> Path:
    """PNG of accuracy against way at ``shot``; one panel per dataset (or only ``dataset``)."""
    return _line_plot(records, path, "way", {"shot": shot}, dataset)


def plot_vs_shot(
    records: Iterable[Record], path: str | os.PathLike[str], *, way: int = 5, dataset: str | None = None
) -> Path:
    """PNG of accuracy against shot at ``way``; one panel per dataset (or only ``dataset``)."""
    return _line_plot(records, path, "shot", {"way": way}, dataset)


def plot_bars(
    records: Iterable[Record], path: str | os.PathLike[str], *, way: int = 5, dataset: str | None = None
) -> Path:
    """PNG of horizontal bars, accuracy ± 95% CI per matcher: one row of panels per dataset, one panel per
    shot, matchers sorted by name so that variants (``otam``, ``otam/c``, ``otam@flow``) sit together,
    and a dashed line at chance (100 / way)."""
    chosen = _select(records, {"way": way}, dataset)
    datasets = sorted({r.dataset for r in chosen})
    shots = sorted({r.shot for r in chosen})
    matchers = sorted({r.matcher for r in chosen})
    fig, axes = plt.subplots(len(datasets), len(shots), squeeze=False, sharex=True,
                             figsize=(3.6 * len(shots) + 1.6, 0.26 * len(matchers) * len(datasets) + 1.2))
    rows = np.arange(len(matchers))
    for ds, panel_row in zip(datasets, axes, strict=True):
        for shot, ax in zip(shots, panel_row, strict=True):
            here = {r.matcher: r for r in chosen if r.dataset == ds and r.shot == shot}
            acc = [here[m].accuracy if m in here else np.nan for m in matchers]
            ci = [here[m].ci95 if m in here else 0.0 for m in matchers]
            best = np.nanargmax(acc) if not np.isnan(acc).all() else -1
            colours = ["tab:orange" if i == best else "tab:blue" for i in rows]
            ax.barh(rows, acc, xerr=clipped_err(np.nan_to_num(acc), ci), color=colours, capsize=2, height=0.7)
            ax.ticklabel_format(axis="x", style="plain", useOffset=False)
            ax.axvline(100 / way, color="grey", linestyle="--", linewidth=1)
            ax.set_yticks(rows, matchers if ax is panel_row[0] else [""] * len(matchers), fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{ds + ', ' if ds else ''}{way}-way {shot}-shot", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(f"accuracy (%), dashed: chance ({100 / way:.0f}%), orange: best of the panel", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_history(history: list[dict[str, float]], path: str | os.PathLike[str], title: str = "") -> Path:
    """Training curve of a head: loss and val accuracy per epoch (the best epoch marked)."""
    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(6, 3.5))
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss", color="tab:blue")
    acc_ax = loss_ax.twinx()
    accuracy = [h["val_accuracy"] for h in history]
    acc_ax.plot(epochs, accuracy, "s-", color="tab:red", label="val accuracy")
    best = int(np.nanargmax(accuracy)) if history else 0
    if history:
        acc_ax.plot([epochs[best]], [accuracy[best]], "*", color="black", markersize=14, label="kept (best val)")
    acc_ax.set_ylabel("val accuracy (%)", color="tab:red")
    loss_ax.set_title(title)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)
