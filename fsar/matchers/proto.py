"""Prototype matching on mean-pooled frames (FewShot-TSN baseline; Snell et al., ProtoNet).

Each video is the temporal mean of its frame features; a class prototype is the mean of its K
support videos; the score is the cosine similarity between query and prototype.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, class_prototypes, pairwise_cosine


@register(
    "proto",
    kind="parameter-free",
    paper="Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017 (TSN mean pooling)",
)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> NDArray[np.float32]:
    """Cosine similarity of the mean-pooled query to each class prototype.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    labels = check_episode(query, support, support_labels, way)
    pooled_query = np.asarray(query, dtype=np.float32).mean(axis=2)
    pooled_support = np.asarray(support, dtype=np.float32).mean(axis=2)
    return pairwise_cosine(pooled_query, class_prototypes(pooled_support, labels, way))
