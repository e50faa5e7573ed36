"""Dynamic time warping on frame cosine distances (the temporal-alignment baseline).

Pair distance: DTW over c(i, j) = 1 - cos(q_i, s_j) with steps (1,0), (0,1), (1,1), not
length-normalised; class score = -(mean distance over the K supports).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import F32, Labels, Videos, class_scores, pair_scores

DTW = "Sakoe & Chiba, Dynamic programming algorithm optimization for spoken word recognition, 1978"


def pair_distance(query: Videos, support: Videos) -> NDArray[np.floating]:
    """DTW distance of every (query, support) pair. [E, Q, T, D] x [E, S, T, D] -> [E, Q, S] float64."""
    return pair_scores(query, support, kernels.dtw, cost=True)


@register("dtw", kind="parameter-free", paper=DTW, frame_cosines_only=True)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Negated DTW distance on 1 - cosine, averaged over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return class_scores(query, support, support_labels, way, lambda q, s: -pair_distance(q, s))
