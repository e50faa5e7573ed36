"""Accuracy, CI, McNemar and the paired bootstrap against hand-computed cases and scipy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from fsar.report import (
    ComparisonError,
    Record,
    compare_records,
    episode_accuracy,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap_ci,
    summarize,
)


def test_accuracy_and_ci_hand_computed() -> None:
    correct = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(episode_accuracy(correct), [50.0, 100.0])
    s = summarize(correct)
    assert (s.n, s.over) == (2, "episodes")
    assert s.accuracy == pytest.approx(75.0)
    assert s.ci95 == pytest.approx(1.96 * 25.0 / np.sqrt(2))  # population std of [50, 100] is 25
    assert mean_ci(np.array([42.0])) == (42.0, 0.0)


def test_ci_matches_scipy_normal_interval() -> None:
    acc = np.random.default_rng(1).uniform(20, 90, size=500)
    mean, ci = mean_ci(acc)
    low, high = norm.interval(0.95, loc=acc.mean(), scale=acc.std() / np.sqrt(acc.size))
    assert mean == pytest.approx(acc.mean())
    assert ci == pytest.approx((high - low) / 2, rel=1e-4)  # 1.96 vs 1.959964


def test_ci_over_runs() -> None:
    # 3 runs of 2 episodes, 1 query: run means 50, 100, 0.
    correct = np.array([[1], [0], [1], [1], [0], [0]], dtype=bool)
    s = summarize(correct, n_runs=3)
    assert (s.n, s.over, s.accuracy) == (3, "runs", pytest.approx(50.0))
    assert s.ci95 == pytest.approx(1.96 * np.std([50.0, 100.0, 0.0]) / np.sqrt(3))
    with pytest.raises(ValueError, match="equal runs"):
        summarize(correct, n_runs=4)


def test_mcnemar_hand_computed_and_scipy() -> None:
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    a_only, b_only, p = mcnemar_exact(a, b)
    assert (a_only, b_only) == (8, 2)
    assert p == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 2 * P(X <= 2), X ~ Bin(10, 1/2)
    assert p == pytest.approx(binomtest(8, 10).pvalue)
    assert mcnemar_exact(a, a)[2] == 1.0


def test_bootstrap_covers_true_difference(record: Callable[..., Record]) -> None:
    rng = np.random.default_rng(5)
    e, q = 3000, 5
    a = record("a", rng.random((e, q)) < 0.80)
    b = record("b", rng.random((e, q)) < 0.70)  # true difference: +10 points
    cmp = compare_records(a, b, n_boot=4000, seed=0)
    assert cmp.ci_low < 10.0 < cmp.ci_high
    assert cmp.ci_low < cmp.diff < cmp.ci_high
    d = episode_accuracy(a.correct) - episode_accuracy(b.correct)
    normal_width = 2 * 1.96 * d.std() / np.sqrt(e)
    assert cmp.ci_high - cmp.ci_low == pytest.approx(normal_width, rel=0.1)
    assert cmp.p_value < 1e-10 and cmp.a_only > cmp.b_only
    assert compare_records(a, b, n_boot=4000, seed=0) == cmp  # seeded
    assert cmp.summary().startswith("a vs b: +")


def test_bootstrap_degenerate_and_errors() -> None:
    assert paired_bootstrap_ci(np.full(7, 20.0)) == (20.0, 20.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.array([]))


def test_compare_refuses_different_episode_lists(record: Callable[..., Record]) -> None:
    a = record("a", episodes_sha256="1" * 64)
    b = record("b", episodes_sha256="2" * 64)
    with pytest.raises(ComparisonError, match="different episode lists"):
        compare_records(a, b)
