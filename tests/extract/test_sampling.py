"""TSN sampling: hand-computed centre indices, reproducible random views, padding flags."""

from __future__ import annotations

import numpy as np
import pytest

from fsar.extract.sampling import sample_indices, segment_centres, segment_random, view_rng


@pytest.mark.parametrize(
    ("n_frames", "expected"),
    [
        (1, [0, 0, 0, 0, 0, 0, 0, 0]),
        (7, [0, 1, 2, 3, 3, 4, 5, 6]),  # floor((2k+1)*7/16)
        (8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (100, [6, 18, 31, 43, 56, 68, 81, 93]),  # floor(6.25 + 12.5k)
    ],
)
def test_centres_hand_computed(n_frames: int, expected: list[int]) -> None:
    got = sample_indices(n_frames, num_segments=8, view=0)
    np.testing.assert_array_equal(got.indices, np.array(expected, dtype=np.int64))
    assert got.indices.dtype == np.int64
    assert got.padded == (n_frames < 8)


def test_centres_match_tsn_float_formula() -> None:
    for n in range(1, 400):
        tick = n / 8
        expected = [int(tick / 2.0 + tick * k) for k in range(8)]
        np.testing.assert_array_equal(segment_centres(n, 8), expected)


def test_random_view_stays_in_its_segment() -> None:
    rng = np.random.default_rng(0)
    for n in [1, 3, 8, 9, 37, 250]:
        for _ in range(20):
            idx = segment_random(n, rng, 8)
            k = np.arange(8)
            assert np.all(idx >= (k * n) // 8)
            assert np.all(idx < np.maximum(((k + 1) * n) // 8, (k * n) // 8 + 1))
            assert np.all(np.diff(idx) >= 0) and idx.max() < n


def test_random_views_are_reproducible_and_distinct() -> None:
    a = sample_indices(300, view=1, seed=5, video_id="abc/vid_01")
    b = sample_indices(300, view=1, seed=5, video_id="abc/vid_01")
    np.testing.assert_array_equal(a.indices, b.indices)
    others = [
        sample_indices(300, view=2, seed=5, video_id="abc/vid_01").indices,
        sample_indices(300, view=1, seed=6, video_id="abc/vid_01").indices,
        sample_indices(300, view=1, seed=5, video_id="abc/vid_02").indices,
    ]
    for other in others:
        assert not np.array_equal(a.indices, other)


def test_view_zero_ignores_seed_and_id() -> None:
    a = sample_indices(50, view=0, seed=1, video_id="x").indices
    b = sample_indices(50, view=0, seed=2, video_id="y").indices
    np.testing.assert_array_equal(a, b)


def test_short_video_padded_in_order_for_every_view() -> None:
    # view 0: floor((2k+1)*3/16); views >= 1: segments of < 1 frame leave one choice, floor(k*3/8)
    expected = {0: [0, 0, 0, 1, 1, 2, 2, 2], 1: [0, 0, 0, 1, 1, 1, 2, 2], 2: [0, 0, 0, 1, 1, 1, 2, 2]}
    for view, indices in expected.items():
        got = sample_indices(3, view=view, seed=0, video_id="short")
        assert got.padded
        np.testing.assert_array_equal(got.indices, indices)


def test_view_rng_is_stable_across_calls() -> None:
    assert view_rng(0, "v", 1).integers(1 << 30) == view_rng(0, "v", 1).integers(1 << 30)


@pytest.mark.parametrize("bad", [0, -3])
def test_empty_video_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        sample_indices(bad)


def test_single_segment() -> None:
    np.testing.assert_array_equal(sample_indices(10, num_segments=1).indices, [5])
