"""Bidirectional mean Hausdorff metric (HyRSM, Wang et al., CVPR 2022), parameter-free form.

D_ij = 1 - cos(s_i, q_j) on L2-normalised frames; d = Σ_i min_j D_ij + Σ_j min_i D_ij (the summed
form of the public implementations; the paper's means differ by a constant factor). With K > 1 the
K supports of a class are first averaged frame by frame into one class sequence. Score = -d.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, class_prototypes, frame_similarity


@register(
    "bimhm",
    kind="parameter-free",
    paper="Wang et al., Hybrid Relation Guided Set Matching for Few-shot Action Recognition, CVPR 2022",
)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> NDArray[np.float32]:
    """Negated bidirectional mean Hausdorff distance to the frame-averaged class sequence.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    labels = check_episode(query, support, support_labels, way, check_finite=False)
    sequences = class_prototypes(support, labels, way)
    sim = frame_similarity(query, sequences)
    e, q, w, t1, t2 = sim.shape
    distance = kernels.hausdorff_mean(1.0 - sim.reshape(e * q * w, t1, t2))
    return (-distance).reshape(e, q, w).astype(np.float32)
