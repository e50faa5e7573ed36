"""Bipartite graph matching of TSJM's joint matching module (Kuhn-Munkres; TSJM Eq. 6-7).

Frames of the query and the support video are the two sides of a complete bipartite graph weighted
by cosine similarity; the pair score is the sum of the similarities of the maximum-weight perfect
matching (min(T1, T2) pairs when lengths differ). Class score = mean over the K shots.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, frame_similarity, shot_mean

TSJM = "Two-Stream Joint Matching for few-shot action recognition (TSJM), joint matching module"


def pair_similarity(query: NDArray[np.floating], support: NDArray[np.floating]) -> NDArray[np.float64]:
    """Matched cosine similarity of every pair. [E, Q, T, D] x [E, S, T, D] -> [E, Q, S] float64."""
    sim = frame_similarity(query, support)
    e, q, s, t1, t2 = sim.shape
    matched, _ = kernels.max_weight_matching(sim.reshape(e * q * s, t1, t2))
    return matched.reshape(e, q, s)


@register("km", kind="parameter-free", paper=TSJM)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> NDArray[np.float32]:
    """Sum of frame cosine similarities under the maximum-weight matching, mean over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    labels = check_episode(query, support, support_labels, way, check_finite=False)
    return shot_mean(pair_similarity(query, support), labels, way)
