"""Ordered Temporal Alignment Module (Cao et al., CVPR 2020): ``otam`` (hard min) and ``otam_soft`` (soft-min).

Pair distance d = OTAM(D) + OTAM(Dᵀ) with D[l, m] = 1 - cos(q_l, s_m), computed by
:func:`fsar.matchers.kernels.otam` exactly as the public re-implementations do (zero padding column
before and after the support axis; docs/methods.md, section otam). Class score = -(mean d over the K shots).

The paper trains with the soft-min smin_λ (λ = 0.1) and its public code keeps it when testing; ``otam``, the
default, takes the hard min (the limit λ -> 0, what most later papers' re-implementations report), and
``otam_soft`` keeps λ = 0.1. The differentiable version for training heads is :mod:`fsar.matchers._soft`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import F32, Labels, Videos, class_scores, pair_scores

OTAM = "Cao et al., Few-Shot Video Classification via Temporal Alignment, CVPR 2020"
SOFT_LAMBDA = 0.1  # OTAM's smoothing λ (its Sec. 3 and public code)


def symmetric_otam(costs: NDArray[np.floating], lam: float = 0.0) -> NDArray[np.float64]:
    """OTAM(c) + OTAM(cᵀ) of each cost matrix (soft-min with ``lam`` > 0). [B, T1, T2] -> [B] float64."""
    return kernels.otam(costs, symmetric=True, lam=lam)


def pair_distance(query: Videos, support: Videos) -> NDArray[np.floating]:
    """Symmetric OTAM distance of every pair. [E, Q, T, D] x [E, S, T, D] -> [E, Q, S] float64."""
    return pair_scores(query, support, symmetric_otam, cost=True)


@register("otam", kind="parameter-free", paper=OTAM, frame_cosines_only=True, trainable=True)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Negated symmetric OTAM distance, averaged over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return class_scores(query, support, support_labels, way, lambda q, s: -pair_distance(q, s))


@register("otam_soft", kind="parameter-free", paper=OTAM, frame_cosines_only=True, trainable=True)
def score_soft(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """OTAM as its public code tests it: the soft-min (λ = 0.1) kept at evaluation.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """

    def distance(q: Videos, s: Videos) -> NDArray[np.floating]:
        return -pair_scores(q, s, lambda c: symmetric_otam(c, SOFT_LAMBDA), cost=True)

    return class_scores(query, support, support_labels, way, distance)
