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

from fsar.matchers.fusion import fuse
from fsar.matchers.km import TSJM, matched_similarity
from fsar.matchers.otam import symmetric_otam
from fsar.matchers.registry import register
from fsar.matchers.similarity import F32, Labels, Videos, check_episode, pair_scores, shot_mean

Features = Mapping[str, Videos]


def otam_and_km(sims: NDArray[np.floating]) -> NDArray[np.float64]:
    """Both pair scores from one batch of frame similarity matrices (computed once for the two).

    sims: [B, T1, T2] cosine -> [B, 2]: negated symmetric OTAM distance on 1 - cosine, KM matched cosine.
    """
    return np.stack([-symmetric_otam(1.0 - sims), matched_similarity(sims)], axis=-1)


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
        labels = check_episode(query[modality], support[modality], support_labels, way, check_finite=False)
        pairs = pair_scores(query[modality], support[modality], otam_and_km)  # [E, Q, S, 2]
        scores[f"{modality}-otam"] = shot_mean(pairs[..., 0], labels, way)
        scores[f"{modality}-km"] = shot_mean(pairs[..., 1], labels, way)
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


@register("jmm", kind="parameter-free", paper=TSJM, components=component_scores, frame_cosines_only=True)
def score(query: Videos, support: Videos, support_labels: Labels, way: int) -> F32:
    """Joint OTAM + KM matching on one stream (equal weights after per-episode z-normalisation).

    query: [E, Q, T, D], support: [E, W*K, T, D], support_labels: [E, W*K] -> [E, Q, way] float32.
    """
    return score_multimodal({"rgb": query}, {"rgb": support}, support_labels, way)
