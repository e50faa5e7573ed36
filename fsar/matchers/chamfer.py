"""Chamfer matching of frame sets: mean of the best matches in both directions.

Pair score ½(mean_i max_j cos(q_i, s_j) + mean_j max_i cos(q_i, s_j)): an order-free set matcher
that ignores temporal order entirely (a reference point for the alignment matchers). Class score =
mean over the K shots.
"""

from __future__ import annotations

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import F32, Labels, Videos, class_scores, pair_scores

CHAMFER = "Barrow et al., Parametric correspondence and chamfer matching, IJCAI 1977"


@register("chamfer", kind="parameter-free", paper=CHAMFER, frame_cosines_only=True)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Chamfer similarity of frame sets, mean over the K shots.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return class_scores(query, support, support_labels, way, lambda q, s: pair_scores(q, s, kernels.chamfer))
