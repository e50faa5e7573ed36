"""Paired comparison of two matchers evaluated on the same fixed episode list.

- Difference in mean accuracy (A - B, percentage points) with a 95% percentile CI from a paired
  bootstrap over episodes: episodes are resampled with replacement and the mean of the per-episode
  differences recomputed. The per-episode difference takes at most 2Q + 1 values, so resampling E
  episodes is drawn exactly as multinomial counts over those values (fast for any E).
- Episodes drawn from one finite pool reuse its videos: 10,000 episodes of 300 test videos query each
  video ~170 times, so neither episodes nor queries are independent samples of the benchmark. When the
  query videos are known (the episode list is at hand), a second CI resamples the *query videos* with
  replacement (a cluster bootstrap: every query of a drawn video counts, as often as it is drawn), the
  uncertainty that the finite pool leaves; it is the one to read when deciding whether A beats B.
- Exact McNemar test on per-query correctness: among queries exactly one matcher gets right, the
  count where A is right is Binomial(n_discordant, 1/2) under equal accuracy (two-sided
  ``scipy.stats.binomtest``). It treats queries as independent, which they are not (above), so its
  p-value is optimistic: it is printed with a floor of 1e-6 and that caveat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binomtest

from fsar.errors import FsarError
from fsar.report.results import Record
from fsar.report.stats import episode_accuracy

P_FLOOR = 1e-6  # below it a p-value says more about the independence assumption than about the matchers


class ComparisonError(FsarError, ValueError):
    """Two records cannot be compared (different episodes); the message says why."""


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_records`; accuracies and differences in % / percentage points."""

    matcher_a: str
    matcher_b: str
    n_episodes: int
    n_queries: int
    accuracy_a: float
    accuracy_b: float
    diff: float
    ci_low: float
    ci_high: float
    a_only: int
    b_only: int
    p_value: float
    n_boot: int
    video_ci: tuple[float, float] | None = None  # 95% CI resampling the query videos (None: list not at hand)
    n_videos: int = 0

    def summary(self) -> str:
        """One line for humans."""
        videos = "" if self.video_ci is None else (
            f"; 95% CI {self.video_ci[0]:+.2f} to {self.video_ci[1]:+.2f} resampling the {self.n_videos} query "
            f"videos")
        p = "p < 1e-6" if self.p_value < P_FLOOR else f"p = {self.p_value:.3g}"
        return (
            f"{self.matcher_a} vs {self.matcher_b}: {self.diff:+.2f} pts "
            f"({self.accuracy_a:.2f}% vs {self.accuracy_b:.2f}%; 95% CI {self.ci_low:+.2f} to "
            f"{self.ci_high:+.2f}, paired bootstrap over {self.n_episodes} episodes{videos}); McNemar exact "
            f"{p} ({self.a_only} vs {self.b_only} discordant of {self.n_queries} queries, taken as independent)"
        )


def paired_bootstrap_ci(
    diffs: NDArray[np.floating], *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of the mean of paired differences resampled with replacement.

    diffs: (E,) per-episode differences. Seeded (``Generator(PCG64(seed))``).
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim != 1 or diffs.size == 0:
        raise ValueError(f"diffs must be a non-empty 1-D array, got shape {diffs.shape}")
    values, counts = np.unique(diffs, return_counts=True)
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.multinomial(diffs.size, counts / diffs.size, size=n_boot)  # (n_boot, V)
    means = draws @ values / diffs.size
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def video_bootstrap_ci(correct_a: NDArray[np.bool_], correct_b: NDArray[np.bool_], query_videos: NDArray[np.str_],
                       *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI (points) of A - B accuracy when the query videos are resampled with replacement.

    correct_a, correct_b, query_videos: the same shape (one entry per query). Each draw takes V of the V
    distinct videos with replacement; the difference is then the mean over every query of the drawn
    videos, counted as often as its video is drawn. Seeded (``Generator(PCG64(seed))``).
    """
    videos = np.asarray(query_videos).ravel()
    diff = np.asarray(correct_a, dtype=np.float64).ravel() - np.asarray(correct_b, dtype=np.float64).ravel()
    if diff.shape != videos.shape or diff.size == 0:
        raise ValueError(f"correctness and query videos must have one entry per query, got {diff.shape} and "
                         f"{videos.shape}")
    _, group = np.unique(videos, return_inverse=True)
    sums = np.bincount(group, weights=diff)
    counts = np.bincount(group).astype(np.float64)
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.multinomial(len(sums), np.full(len(sums), 1.0 / len(sums)), size=n_boot)  # (n_boot, V)
    means = 100.0 * (draws @ sums) / (draws @ counts)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def mcnemar_exact(correct_a: NDArray[np.bool_], correct_b: NDArray[np.bool_]) -> tuple[int, int, float]:
    """(A right & B wrong, B right & A wrong, two-sided exact p) over all queries (any shape)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    a_only = int(np.count_nonzero(a & ~b))
    b_only = int(np.count_nonzero(b & ~a))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return a_only, b_only, p


def compare_records(a: Record, b: Record, *, n_boot: int = 10_000, seed: int = 0,
                    allow_different: bool = False, query_videos: NDArray[np.str_] | None = None) -> Comparison:
    """Compare record ``a`` with ``b``; both must come from the same episode list and the same cache.

    Raises :class:`ComparisonError` if the episode-list or cache hashes (unless ``allow_different``) or the
    correctness shapes differ: one list names videos by id, so it fits other caches of the dataset too,
    and a paired test on two caches measures the features as much as the matchers.
    """
    if a.cache_sha256 != b.cache_sha256 and not allow_different:
        raise ComparisonError(
            f"{a.matcher} and {b.matcher} were evaluated on different feature caches ({a.cache_path} "
            f"{a.cache_sha256[:12]} vs {b.cache_path} {b.cache_sha256[:12]}); evaluate both on one cache, or "
            f"pass --allow-different to compare them anyway.")
    if a.episodes_sha256 != b.episodes_sha256 and not allow_different:
        raise ComparisonError(
            f"{a.matcher} and {b.matcher} were evaluated on different episode lists "
            f"({a.episodes_path} sha256 {a.episodes_sha256[:12]} vs {b.episodes_path} sha256 "
            f"{b.episodes_sha256[:12]}); re-run `fsar eval` for both on the same list to compare them."
        )
    if a.correct.shape != b.correct.shape:
        raise ComparisonError(f"correctness shapes differ: {a.correct.shape} vs {b.correct.shape}")
    acc_a, acc_b = episode_accuracy(a.correct), episode_accuracy(b.correct)
    low, high = paired_bootstrap_ci(acc_a - acc_b, n_boot=n_boot, seed=seed)
    a_only, b_only, p = mcnemar_exact(a.correct, b.correct)
    video_ci = None if query_videos is None else video_bootstrap_ci(a.correct, b.correct, query_videos,
                                                                     n_boot=n_boot, seed=seed)
    return Comparison(
        matcher_a=a.matcher,
        matcher_b=b.matcher,
        n_episodes=a.n_episodes,
        n_queries=int(a.correct.size),
        accuracy_a=float(acc_a.mean()),
        accuracy_b=float(acc_b.mean()),
        diff=float(acc_a.mean() - acc_b.mean()),
        ci_low=low,
        ci_high=high,
        a_only=a_only,
        b_only=b_only,
        p_value=p,
        n_boot=n_boot,
        video_ci=video_ci,
        n_videos=0 if query_videos is None else len(np.unique(query_videos)),
    )
