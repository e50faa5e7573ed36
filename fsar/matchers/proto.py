"""Prototype matching on mean-pooled frames (FewShot-TSN baseline; Snell et al., ProtoNet).

Each video is the temporal mean of its frame features; a class prototype is the mean of its K
support videos; the score is the cosine similarity between query and prototype.
"""

from __future__ import annotations

import numpy as np

from fsar.matchers.registry import register
from fsar.matchers.similarity import F32, Labels, Videos, class_scores, pairwise_cosine

PROTONET = "Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017 (TSN mean pooling)"


def mean_over_frames(videos: Videos) -> F32:
    """Temporal mean pooling in float32: [E, N, T, D] -> [E, N, D]."""
    return np.asarray(videos, dtype=np.float32).mean(axis=2)


@register("proto", kind="parameter-free", paper=PROTONET, trainable=True)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Cosine similarity of the mean-pooled query to each class prototype.

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    Features are scanned for NaN/inf up front: the pooled cosines would not reject them.
    """
    return class_scores(
        query, support, support_labels, way, pairwise_cosine, embed=mean_over_frames, prototypes=True, check_finite=True
    )
