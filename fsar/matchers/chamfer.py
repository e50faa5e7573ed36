"""Chamfer matching of frame sets: mean of the best matches in both directions.

Pair score ½(mean_i max_j cos(q_i, s_j) + mean_j max_i cos(q_i, s_j)): an order-free set matcher
that ignores temporal order entirely (a reference point for the alignment matchers). Class score =
mean over the K shots.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, frame_similarity, shot_mean

CHAMFER = "Barrow et al., Parametric correspondence and chamfer matching, IJCAI 1977"


@register("chamfer", kind="parameter-free", paper=CHAMFER)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> NDArray[np.float32]:
    """Chamfer similarity of frame sets, mean over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    labels = check_episode(query, support, support_labels, way, check_finite=False)
    sim = frame_similarity(query, support)
    e, q, s, t1, t2 = sim.shape
    pair = kernels.chamfer(sim.reshape(e * q * s, t1, t2)).reshape(e, q, s)
    return shot_mean(pair, labels, way)
