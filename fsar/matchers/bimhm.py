"""Bidirectional mean Hausdorff metric (HyRSM, Wang et al., CVPR 2022), parameter-free form.

D_ij = 1 - cos(s_i, q_j) on L2-normalised frames; d = Σ_i min_j D_ij + Σ_j min_i D_ij (the summed
form of the public implementations; the paper's means differ by a constant factor). With K > 1 the
K supports of a class are first averaged frame by frame into one class sequence. Score = -d.
"""

from __future__ import annotations

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import F32, Labels, Videos, class_scores, pair_scores

HYRSM = "Wang et al., Hybrid Relation Guided Set Matching for Few-shot Action Recognition, CVPR 2022"


@register("bimhm", kind="parameter-free", paper=HYRSM)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Negated bidirectional mean Hausdorff distance to the frame-averaged class sequence.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return class_scores(
        query, support, support_labels, way,
        lambda q, classes: -pair_scores(q, classes, kernels.hausdorff_mean, cost=True),
        prototypes=True,
    )
