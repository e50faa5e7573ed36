"""Numba kernels against brute force, plain-Python recursions and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fsar.matchers import kernels

from .oracles import (
    dtw_brute_force,
    dtw_reference,
    matching_brute_force,
    otam_brute_force,
    otam_reference,
)

SHAPES = [(1, 1), (1, 4), (4, 1), (2, 3), (3, 2), (4, 4), (5, 3), (3, 5), (5, 5)]


def _costs(shape: tuple[int, ...], seed: int, low: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, 2.0, size=shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("low", [0.0, -1.0])
def test_dtw_matches_brute_force_and_reference(shape: tuple[int, int], low: float) -> None:
    batch = _costs((6, *shape), seed=sum(shape), low=low)
    got = kernels.dtw(batch)
    np.testing.assert_allclose(got, [dtw_brute_force(c) for c in batch], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, [dtw_reference(c) for c in batch], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("low", [0.0, -1.0])
def test_otam_matches_brute_force_and_reference(shape: tuple[int, int], low: float) -> None:
    batch = _costs((6, *shape), seed=10 + sum(shape), low=low)
    got = kernels.otam(batch)
    np.testing.assert_allclose(got, [otam_brute_force(c) for c in batch], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, [otam_reference(c) for c in batch], rtol=1e-12, atol=1e-12)


def test_otam_symmetric_is_sum_of_both_directions() -> None:
    batch = _costs((7, 8, 6), seed=3)
    both = kernels.otam(batch, symmetric=True)
    expected = [otam_reference(c) + otam_reference(c.T) for c in batch]
    np.testing.assert_allclose(both, expected, rtol=1e-12)


def test_otam_known_values() -> None:
    # One query frame: the path must cross every support frame of row 0.
    np.testing.assert_allclose(kernels.otam(np.array([[[0.5, 0.25, 1.0]]])), [1.75])
    # Identity-like cost: zero-cost diagonal exists, distance 0.
    eye = 1.0 - np.eye(4)[None]
    np.testing.assert_allclose(kernels.otam(eye), [0.0])
    np.testing.assert_allclose(kernels.dtw(eye), [0.0])


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (3, 3), (4, 6), (6, 4), (8, 8), (7, 7)])
def test_matching_matches_scipy(shape: tuple[int, int]) -> None:
    batch = np.random.default_rng(sum(shape)).normal(size=(20, *shape))
    score, assign = kernels.max_weight_matching(batch)
    for w, got, cols in zip(batch, score, assign, strict=True):
        rows, sel = linear_sum_assignment(w, maximize=True)
        assert got == pytest.approx(w[rows, sel].sum(), abs=1e-10)
        matched = cols >= 0
        assert matched.sum() == min(shape)
        assert len(set(cols[matched])) == min(shape)
        assert w[np.flatnonzero(matched), cols[matched]].sum() == pytest.approx(got, abs=1e-10)


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 4), (5, 5), (2, 5), (5, 3)])
def test_matching_matches_permutations(shape: tuple[int, int]) -> None:
    batch = np.random.default_rng(7 * sum(shape)).uniform(-1, 1, size=(5, *shape)).astype(np.float32)
    score, _ = kernels.max_weight_matching(batch)
    np.testing.assert_allclose(score, [matching_brute_force(w) for w in batch], rtol=1e-6, atol=1e-6)


def test_matching_ties_and_constant_matrices() -> None:
    const = np.full((2, 4, 4), 0.3)
    score, assign = kernels.max_weight_matching(const)
    np.testing.assert_allclose(score, [1.2, 1.2])
    assert sorted(assign[0]) == [0, 1, 2, 3]
    ties = np.array([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    score, assign = kernels.max_weight_matching(ties)
    assert score[0] == pytest.approx(3.0)
    assert assign[0, 2] == 2
    eye = np.eye(5)[None]
    np.testing.assert_array_equal(kernels.max_weight_matching(eye)[1], [[0, 1, 2, 3, 4]])


def test_hausdorff_and_chamfer_against_numpy() -> None:
    batch = _costs((9, 5, 7), seed=11)
    expected = batch.min(axis=2).sum(axis=1) + batch.min(axis=1).sum(axis=1)
    np.testing.assert_allclose(kernels.hausdorff_mean(batch), expected, rtol=1e-12)
    expected = 0.5 * (batch.max(axis=2).mean(axis=1) + batch.max(axis=1).mean(axis=1))
    np.testing.assert_allclose(kernels.chamfer(batch), expected, rtol=1e-12)


def test_ties_and_constant_matrices_for_path_kernels() -> None:
    const = np.full((1, 4, 6), 0.5)
    assert kernels.dtw(const)[0] == pytest.approx(0.5 * 6)  # the shortest path visits max(T1, T2) cells
    assert kernels.otam(const)[0] == pytest.approx(otam_brute_force(const[0]))
    assert kernels.hausdorff_mean(const)[0] == pytest.approx(0.5 * 10)


@pytest.mark.parametrize(
    "fn",
    [kernels.dtw, kernels.otam, kernels.max_weight_matching, kernels.hausdorff_mean, kernels.chamfer],
)
def test_bad_input_raises(fn: object) -> None:
    good = np.zeros((2, 3, 3))
    for bad in (np.zeros((3, 3)), np.zeros((2, 0, 3)), good.astype(np.int64), good.astype(np.float16)):
        with pytest.raises(ValueError):
            fn(bad)  # type: ignore[operator]
    for value in (np.nan, np.inf, -np.inf):
        x = good.copy()
        x[1, 2, 0] = value
        with pytest.raises(ValueError, match="NaN or inf"):
            fn(x)  # type: ignore[operator]
    with pytest.raises(ValueError):
        fn([[[0.0]]])  # type: ignore[operator]


def test_parallel_batch_equals_serial_items() -> None:
    # 300 items span several parallel chunks; each item is recomputed alone and by the serial item code.
    batch = _costs((300, 8, 7), seed=5).astype(np.float32)
    row = np.empty(16)
    np.testing.assert_array_equal(kernels.dtw(batch), [kernels._dtw_item(c, row) for c in batch])
    np.testing.assert_array_equal(
        kernels.otam(batch, symmetric=True),
        [kernels._otam_item(c, row) + kernels._otam_item(c.T, row) for c in batch],
    )
    score, assign = kernels.max_weight_matching(batch)
    for i in (0, 63, 64, 150, 299):
        one_score, one_assign = kernels.max_weight_matching(batch[i : i + 1])
        assert one_score[0] == score[i]
        np.testing.assert_array_equal(one_assign[0], assign[i])
    for fn in (kernels.hausdorff_mean, kernels.chamfer):
        np.testing.assert_array_equal(fn(batch), np.concatenate([fn(batch[i : i + 1]) for i in range(300)]))


def test_float32_and_float64_agree() -> None:
    batch = _costs((10, 8, 8), seed=9).astype(np.float32)
    for fn in (kernels.dtw, kernels.otam, kernels.hausdorff_mean, kernels.chamfer):
        np.testing.assert_allclose(fn(batch), fn(batch.astype(np.float64)), rtol=1e-12)


def test_zoom_in_checks_arguments() -> None:
    fs = np.zeros((1, 3, 3), dtype=np.float32)
    ps = np.zeros((1, 3, 2, 3, 2), dtype=np.float32)
    clips = np.array(list(itertools.combinations(range(3), 2)))
    kernels.zoom_in(fs, ps, clips, clips, 3, 4)
    with pytest.raises(ValueError):
        kernels.zoom_in(fs, ps, clips, clips, 4, 4)
    with pytest.raises(ValueError):
        kernels.zoom_in(fs, ps, clips, clips, 3, 5)
    with pytest.raises(ValueError):
        kernels.zoom_in(fs, ps, clips + 1, clips, 3, 4)
    with pytest.raises(ValueError):
        kernels.zoom_in(fs, ps[:, :2], clips, clips, 3, 4)


def _soft_otam_reference(c: np.ndarray, lam: float) -> float:
    """otam_reference with every min replaced by -λ logsumexp(-x/λ) (scipy)."""
    from scipy.special import logsumexp

    return otam_reference(c, smin=lambda *xs: float(-lam * logsumexp(-np.array(xs) / lam)))


@pytest.mark.parametrize("lam", [0.1, 1.0, 5.0])
def test_soft_otam_kernel_matches_a_scipy_reference_and_the_torch_relaxation(lam: float) -> None:
    import torch

    from fsar.matchers._soft import symmetric_otam_distance

    rng = np.random.default_rng(7)
    batch = rng.random((6, 5, 4))
    got = kernels.otam(batch, lam=lam)
    np.testing.assert_allclose(got, [_soft_otam_reference(c, lam) for c in batch], rtol=1e-10, atol=1e-12)
    both = kernels.otam(batch, symmetric=True, lam=lam)
    np.testing.assert_allclose(both, symmetric_otam_distance(torch.from_numpy(batch), lam=lam).numpy(), rtol=1e-10)
    assert np.all(got < kernels.otam(batch))  # a soft-min lies below the min: every soft path total is lower


def test_soft_otam_tends_to_the_hard_min_and_refuses_a_negative_lambda() -> None:
    batch = np.random.default_rng(8).random((4, 6, 6))
    np.testing.assert_allclose(kernels.otam(batch, lam=1e-6), kernels.otam(batch), atol=1e-4)
    with pytest.raises(ValueError, match="lam"):
        kernels.otam(batch, lam=-0.1)
