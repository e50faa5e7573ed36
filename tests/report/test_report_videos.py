"""Uncertainty that respects the finite pool: the query-video bootstrap, and McNemar's floor and caveat."""

from __future__ import annotations

import numpy as np

from fsar.report.compare import Comparison, paired_bootstrap_ci, video_bootstrap_ci


def reference_video_ci(a: np.ndarray, b: np.ndarray, videos: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The same statistic written plainly: draw videos one by one, pool every query of each drawn video."""
    names = sorted(set(videos.ravel().tolist()))
    diff = a.ravel().astype(float) - b.ravel().astype(float)
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)
    means = []
    for counts in draws:
        total, n = 0.0, 0
        for name, k in zip(names, counts, strict=True):
            mine = diff[videos.ravel() == name]
            total += k * mine.sum()
            n += k * len(mine)
        means.append(100.0 * total / n)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def test_video_bootstrap_equals_a_plain_reference() -> None:
    rng = np.random.default_rng(4)
    videos = rng.choice([f"v{i}" for i in range(7)], size=(30, 5))
    a, b = rng.random((30, 5)) < 0.6, rng.random((30, 5)) < 0.4
    assert np.allclose(video_bootstrap_ci(a, b, videos, n_boot=300, seed=2), reference_video_ci(a, b, videos, 300, 2))


def test_reused_videos_widen_the_interval() -> None:
    # 2,000 episodes of 5 queries drawn from only 12 videos, on each of which one matcher is simply better or
    # worse: the episode bootstrap sees 10,000 "independent" queries; the video bootstrap sees 12 videos.
    rng = np.random.default_rng(5)
    videos = rng.choice([f"v{i}" for i in range(12)], size=(2000, 5))
    good = {f"v{i}": i % 2 == 0 for i in range(12)}
    a = np.vectorize(good.get)(videos) | (rng.random((2000, 5)) < 0.2)
    b = rng.random((2000, 5)) < 0.55
    per_episode = a.mean(axis=1) - b.mean(axis=1)
    low, high = paired_bootstrap_ci(per_episode, n_boot=2000, seed=0)
    v_low, v_high = video_bootstrap_ci(a, b, videos, n_boot=2000, seed=0)
    assert (v_high - v_low) > 3 * 100 * (high - low)


def test_tiny_p_values_are_floored_and_said_to_assume_independence() -> None:
    cmp = Comparison("a", "b", 10, 50, 60.0, 40.0, 20.0, 15.0, 25.0, 30, 2, 1e-30, 100, (5.0, 35.0), 12)
    line = cmp.summary()
    assert "p < 1e-6" in line and "taken as independent" in line
    assert "95% CI +5.00 to +35.00 resampling the 12 query videos" in line
    assert "p = 0.0123" in Comparison("a", "b", 10, 50, 60.0, 40.0, 20.0, 15.0, 25.0, 3, 1, 0.0123, 100).summary()
