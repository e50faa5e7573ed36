"""Torch soft-OTAM for training heads against the numba evaluation kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsar.matchers import kernels
from fsar.matchers._soft import cosine_distance, otam_distance, symmetric_otam_distance

from .oracles import otam_reference


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (3, 4), (8, 8), (6, 9)])
def test_hard_min_equals_numba_kernel(shape: tuple[int, int]) -> None:
    costs = np.random.default_rng(sum(shape)).uniform(0, 2, size=(12, *shape))
    got = otam_distance(torch.from_numpy(costs), lam=None).numpy()
    np.testing.assert_allclose(got, kernels.otam(costs), rtol=1e-12, atol=1e-12)
    both = symmetric_otam_distance(torch.from_numpy(costs), lam=0).numpy()
    np.testing.assert_allclose(both, kernels.otam(costs, symmetric=True), rtol=1e-12, atol=1e-12)


def test_soft_min_tends_to_hard_min() -> None:
    costs = np.random.default_rng(1).uniform(0, 2, size=(16, 8, 8))
    hard = np.array([otam_reference(c) for c in costs])
    gaps = []
    for lam in (0.1, 0.01, 0.001, 0.0001):
        soft = otam_distance(torch.from_numpy(costs), lam=lam).numpy()
        assert (soft <= hard + 1e-9).all()  # a soft-min never exceeds the min
        gaps.append(np.abs(soft - hard).max())
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-2


def test_soft_otam_is_stable_and_differentiable_on_long_sequences() -> None:
    torch.manual_seed(0)
    query = torch.randn(3, 32, 16, dtype=torch.float32, requires_grad=True)
    support = torch.randn(3, 32, 16, dtype=torch.float32)
    dist = symmetric_otam_distance(cosine_distance(query, support), lam=0.1)
    assert torch.isfinite(dist).all()
    dist.sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


def test_cosine_distance_and_bad_shape() -> None:
    x = torch.eye(3)[None]
    np.testing.assert_allclose(cosine_distance(x, x).numpy(), 1 - np.eye(3)[None], atol=1e-7)
    with pytest.raises(ValueError):
        otam_distance(torch.zeros(3))
