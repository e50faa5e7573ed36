"""Fusion of several named scores of one episode batch (streams, or a matcher's components).

Each component is z-normalised per episode (over its Q x way scores) before the weighted sum: without
it the sum is dominated by whichever score has the larger spread (an OTAM distance sums about 2T frame
costs, Kuhn-Munkres T cosines).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

_EPS = 1e-6


def episode_zscore(scores: NDArray[np.floating]) -> F32:
    """Standardise each episode's scores over its Q x way entries. [E, Q, W] -> [E, Q, W] float32.

    An episode whose scores are all equal maps to zeros.
    """
    x = np.asarray(scores, dtype=np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return np.where(std > _EPS, (x - mean) / np.maximum(std, _EPS), 0.0).astype(np.float32)


def fuse(components: Mapping[str, NDArray[np.floating]], weights: Mapping[str, float] | None = None) -> F32:
    """Weighted sum of per-episode z-normalised component scores, each [E, Q, W] -> [E, Q, W]."""
    if not components:
        raise ValueError("no component scores to fuse")
    if weights is None:
        weights = dict.fromkeys(components, 1.0)
    unknown = sorted(set(weights) - set(components))
    if unknown:
        raise ValueError(f"weights for unknown components {unknown}; known: {sorted(components)}")
    if not any(w != 0 for w in weights.values()):
        raise ValueError("at least one fusion weight must be non-zero")
    first = next(iter(components.values()))
    fused = np.zeros(np.shape(first), dtype=np.float32)
    for name, weight in weights.items():
        if weight:
            fused += np.float32(weight) * episode_zscore(components[name])
    return fused
