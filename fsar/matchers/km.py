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
from fsar.matchers.similarity import F32, Labels, Videos, class_scores, pair_scores

TSJM = "Two-Stream Joint Matching for few-shot action recognition (TSJM), joint matching module"


def matched_similarity(sims: NDArray[np.floating]) -> NDArray[np.float64]:
    """Sum of the similarities of the maximum-weight matching of each matrix. [B, T1, T2] -> [B] float64."""
    return kernels.max_weight_matching(sims)[0]


def pair_similarity(query: Videos, support: Videos) -> NDArray[np.floating]:
    """Matched cosine similarity of every pair. [E, Q, T, D] x [E, S, T, D] -> [E, Q, S] float64."""
    return pair_scores(query, support, matched_similarity)


@register("km", kind="parameter-free", paper=TSJM, frame_cosines_only=True)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Sum of frame cosine similarities under the maximum-weight matching, mean over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return class_scores(query, support, support_labels, way, pair_similarity)
