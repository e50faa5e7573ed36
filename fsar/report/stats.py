"""Accuracy and 95% confidence intervals, as the few-shot literature reports them.

CI = 1.96 * std / sqrt(n) over episodes (OTAM, TRX, HyRSM, M3Net), with the population standard
deviation (``ddof=0``) as the public evaluation scripts compute it. For protocols with several runs
(ita: 10 runs x 600 episodes) the mean and CI are taken over the per-run mean accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Z95 = 1.96


@dataclass(frozen=True)
class Summary:
    """Mean accuracy (%) with its 95% CI half-width (%), over ``n`` episodes or runs."""

    accuracy: float
    ci95: float
    n: int
    over: str


def episode_accuracy(correct: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Per-episode accuracy in %.

    correct: (E, Q) bool, Q = way * query. Returns (E,) float64.
    """
    correct = np.asarray(correct)
    if correct.ndim != 2 or correct.shape[1] == 0:
        raise ValueError(f"correct must be (E, Q) with Q >= 1, got shape {correct.shape}")
    return 100.0 * correct.mean(axis=1, dtype=np.float64)


def mean_ci(values: NDArray[np.floating]) -> tuple[float, float]:
    """(mean, 1.96 * std / sqrt(n)) of (n,) values; the CI of a single value is 0."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    return float(values.mean()), float(Z95 * values.std() / np.sqrt(values.size))


def summarize(correct: NDArray[np.bool_], n_runs: int = 1) -> Summary:
    """Accuracy and 95% CI of an evaluation.

    correct: (E, Q) bool per-query correctness. With ``n_runs > 1`` the episodes form ``n_runs``
    contiguous runs of equal length and the CI is over the runs' mean accuracies.
    """
    acc = episode_accuracy(correct)
    if n_runs <= 1:
        mean, ci = mean_ci(acc)
        return Summary(mean, ci, int(acc.size), "episodes")
    if acc.size % n_runs:
        raise ValueError(f"{acc.size} episodes do not split into {n_runs} equal runs")
    mean, ci = mean_ci(acc.reshape(n_runs, -1).mean(axis=1))
    return Summary(mean, ci, n_runs, "runs")
