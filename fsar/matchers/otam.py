"""Ordered Temporal Alignment Module (Cao et al., CVPR 2020), evaluation form (hard min).

Pair distance d = OTAM(D) + OTAM(Dᵀ) with D[l, m] = 1 - cos(q_l, s_m), computed by
:func:`fsar.matchers.kernels.otam` exactly as the public re-implementations do (zero padding column
before and after the support axis; see REFERENCE_MATH.md). Class score = -(mean d over the K shots).
The differentiable soft-min version for training heads is :mod:`fsar.matchers._soft`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, frame_similarity, shot_mean


def pair_distance(query: NDArray[np.floating], support: NDArray[np.floating]) -> NDArray[np.float64]:
    """Symmetric OTAM distance of every pair. [E, Q, T, D] x [E, S, T, D] -> [E, Q, S] float64."""
    sim = frame_similarity(query, support)
    e, q, s, t1, t2 = sim.shape
    return kernels.otam(1.0 - sim.reshape(e * q * s, t1, t2), symmetric=True).reshape(e, q, s)


@register(
    "otam",
    kind="parameter-free",
    paper="Cao et al., Few-Shot Video Classification via Temporal Alignment, CVPR 2020",
)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> NDArray[np.float32]:
    """Negated symmetric OTAM distance, averaged over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    labels = check_episode(query, support, support_labels, way, check_finite=False)
    return shot_mean(-pair_distance(query, support), labels, way)
