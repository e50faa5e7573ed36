"""Dynamic time warping on frame cosine distances (the temporal-alignment baseline).

Pair distance: DTW over c(i, j) = 1 - cos(q_i, s_j) with steps (1,0), (0,1), (1,1), not
length-normalised; class score = -(mean distance over the K supports).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, frame_similarity, shot_mean


def pair_distance(query: NDArray[np.floating], support: NDArray[np.floating]) -> NDArray[np.float64]:
    """DTW distance of every (query, support) pair. [E, Q, T, D] x [E, S, T, D] -> [E, Q, S]."""
    sim = frame_similarity(query, support)
    e, q, s, t1, t2 = sim.shape
    return kernels.dtw(1.0 - sim.reshape(e * q * s, t1, t2)).reshape(e, q, s)


DTW = "Sakoe & Chiba, Dynamic programming algorithm optimization for spoken word recognition, 1978"


@register("dtw", kind="parameter-free", paper=DTW)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> NDArray[np.float32]:
    """Negated DTW distance on 1 - cosine, averaged over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    labels = check_episode(query, support, support_labels, way, check_finite=False)
    return shot_mean(-pair_distance(query, support), labels, way)
