"""Joint matching module of TSJM: ordered temporal matching (OTAM) + bipartite matching (KM).

TSJM scores every (query, support) pair with OTAM (TSJM Eq. 3-5) and with Kuhn-Munkres matching
(Eq. 6-7) in each stream (RGB and optical flow) and takes a weighted average of the four scores.

API for the evaluator
---------------------
- :func:`component_scores` ``(query, support, support_labels, way) -> {name: [E, Q, way]}`` takes
  mappings ``modality -> features`` (e.g. ``{"rgb": [E,Q,T,D], "flow": [E,Q,T,D]}``) and returns the
  named component scores ``"<modality>-otam"`` (negated OTAM distance) and ``"<modality>-km"``
  (matched cosine similarity), each averaged over the K shots; higher = more similar.
- :func:`fsar.matchers.fusion.fuse` ``(components, weights) -> [E, Q, way]`` z-normalises each component
  per episode and takes the weighted sum (weights missing count as 0; ``None`` weighs every component 1).
  The registration declares ``component_scores`` so that the evaluator fuses the four terms itself.
- :func:`score_multimodal` is ``fuse(component_scores(...), weights)``: choose ``weights`` on
  validation episodes from :func:`component_scores`, then score test episodes with them.
- :func:`score` (the registered ``jmm``) is the single-stream case: ``{"rgb": query}`` with equal
  weights on rgb-otam and rgb-km.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.fusion import fuse
from fsar.matchers.km import TSJM
from fsar.matchers.registry import register
from fsar.matchers.similarity import check_episode, frame_similarity, shot_mean

F32 = NDArray[np.float32]
Features = Mapping[str, NDArray[np.floating]]


def component_scores(
    query: Features, support: Features, support_labels: NDArray[np.integer], way: int
) -> dict[str, F32]:
    """Per-modality OTAM and KM class scores.

    query: {modality: [E, Q, T, D]}, support: {modality: [E, W*K, T, D]} with the same modalities,
    support_labels: [E, W*K] -> {"<modality>-otam": [E, Q, way], "<modality>-km": [E, Q, way]}.
    """
    if not query or set(query) != set(support):
        raise ValueError(
            f"query and support need the same non-empty modalities, got {sorted(query)} and {sorted(support)}"
        )
    scores: dict[str, F32] = {}
    for modality in sorted(query):
        q, s = query[modality], support[modality]
        labels = check_episode(q, s, support_labels, way, check_finite=False)
        sim = frame_similarity(q, s)
        e, nq, ns, t1, t2 = sim.shape
        flat = sim.reshape(e * nq * ns, t1, t2)
        distance = kernels.otam(1.0 - flat, symmetric=True).reshape(e, nq, ns)
        matched = kernels.max_weight_matching(flat)[0].reshape(e, nq, ns)
        scores[f"{modality}-otam"] = shot_mean(-distance, labels, way)
        scores[f"{modality}-km"] = shot_mean(matched, labels, way)
    return scores


def score_multimodal(
    query: Features,
    support: Features,
    support_labels: NDArray[np.integer],
    way: int,
    *,
    weights: Mapping[str, float] | None = None,
) -> F32:
    """TSJM joint matching over several streams: ``fuse(component_scores(...), weights)``.

    query: {modality: [E, Q, T, D]}, support: {modality: [E, W*K, T, D]} -> [E, Q, way] float32.
    """
    return fuse(component_scores(query, support, support_labels, way), weights)


@register("jmm", kind="parameter-free", paper=TSJM, components=component_scores)
def score(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
) -> F32:
    """Joint OTAM + KM matching on one stream (equal weights after per-episode z-normalisation).

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return score_multimodal({"rgb": query}, {"rgb": support}, support_labels, way)
