"""Differentiable OTAM in torch for training heads (Cao et al., CVPR 2020, soft-min relaxation).

Same recursion as :func:`fsar.matchers.kernels.otam` (docs/methods.md, section otam) with the hard min of
every cell replaced by smin_λ(x...) = -λ log Σ exp(-x/λ), computed with ``logsumexp`` so long paths
do not underflow. The first row stays a hard running sum, as in the public implementations.
``lam=None`` (or 0) gives the hard min, which equals the numba evaluation kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_distance", "otam_distance", "symmetric_otam_distance"]


def _smin(values: list[torch.Tensor], lam: float | None) -> torch.Tensor:
    stacked = torch.stack(values, dim=-1)
    if not lam:
        return stacked.amin(dim=-1)
    return -lam * torch.logsumexp(-stacked / lam, dim=-1)


def otam_distance(dists: torch.Tensor, lam: float | None = 0.1) -> torch.Tensor:
    """OTAM cumulative distance C[L-1, M+1] of each matrix.

    dists: (..., L, M) frame distances, query frames as rows (typically 1 - cosine) -> (...).
    ``lam`` is the soft-min temperature λ; ``None`` or 0 selects the hard min.
    """
    if dists.dim() < 2 or dists.shape[-1] < 1 or dists.shape[-2] < 1:
        raise ValueError(f"dists must be (..., L, M) with L, M >= 1, got {tuple(dists.shape)}")
    n, m = dists.shape[-2], dists.shape[-1]
    zero = dists.new_zeros(dists.shape[:-2])
    # Cells are kept in Python lists (not written in place) so autograd sees a plain graph.
    prev = [zero, *torch.cumsum(dists[..., 0, :], dim=-1).unbind(-1)]
    prev.append(prev[m])
    for i in range(1, n):
        row = dists[..., i, :]
        cur = [zero, row[..., 0] + _smin([prev[0], prev[1], zero], lam)]
        for j in range(2, m + 1):
            cur.append(row[..., j - 1] + _smin([prev[j - 1], cur[j - 1]], lam))
        cur.append(_smin([prev[m], prev[m + 1], cur[m]], lam))
        prev = cur
    return prev[m + 1]


def symmetric_otam_distance(dists: torch.Tensor, lam: float | None = 0.1) -> torch.Tensor:
    """OTAM(D) + OTAM(Dᵀ), the matcher's pair distance. dists: (..., L, M) -> (...)."""
    return otam_distance(dists, lam) + otam_distance(dists.transpose(-1, -2), lam)


def cosine_distance(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """1 - cosine of every frame pair. query: (..., L, D), support: (..., M, D) -> (..., L, M)."""
    return 1.0 - F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(-1, -2)
