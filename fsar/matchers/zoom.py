"""Zoom-in matching of HCL (Zheng et al., ECCV 2022), parameter-free form on raw features (Eq. 2-6).

Inputs are patch features [.., T, P, D] (P = n x n pooled cells). Frames are the mean over patches,
the global embedding the mean over frames. Clips are the ordered frame tuples i_1 < ... < i_L of the
video (all 28 pairs of 8 frames for L = 2, as in HCL's cost analysis); without HCL's learned MLP
(Eq. 1) a clip is the concatenation of its L2-normalised frames, so clip cosine = mean of the
aligned frame cosines. For one (query, support) pair:

- global (Eq. 2): cosine of the global embeddings;
- temporal (Eq. 3): every query clip takes its most similar support clip; mean of the top
  ``n_clips`` pair similarities;
- spatial (Eq. 4, α = 1, no semantic attention): inside each of those clip pairs every query patch
  takes its most similar patch of the partner clip; mean over the top ``n_patches`` per pair;
- total (Eq. 6): global + temporal + spatial. Class score = mean over the K shots.

Videos shorter than the clip length use clips of min(L, T) frames (single frames when T = 1);
``n_clips`` and ``n_patches`` are clamped to what exists.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

from fsar.matchers import kernels
from fsar.matchers.registry import register
from fsar.matchers.similarity import (
    F32,
    Labels,
    Videos,
    class_scores,
    frame_similarity,
    l2_normalize,
    pairwise_cosine,
    patch_similarity,
)

HCL = (
    "Zheng et al., Few-shot Action Recognition with Hierarchical Matching and Contrastive Learning, ECCV 2022"
)

# Bound on the float32 patch-similarity block computed at once (episodes are processed in chunks).
_CHUNK_BYTES = 256 * 2**20


def ordered_clips(n_frames: int, length: int) -> NDArray[np.int64]:
    """Every ordered tuple of ``length`` distinct frames of 0..n_frames-1: [C(n_frames, length), length]."""
    if not 1 <= length <= n_frames:
        raise ValueError(f"clip length must be in 1..{n_frames}, got {length}")
    return np.array(list(itertools.combinations(range(n_frames), length)), dtype=np.int64)


def pair_levels(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    *,
    n_clips: int = 10,
    n_patches: int = 10,
    clip_length: int = 2,
) -> tuple[F32, F32, F32]:
    """Global, temporal and spatial similarity of every (query, support) pair.

    query: [E, Q, T1, P1, D], support: [E, S, T2, P2, D] -> three [E, Q, S] float32 arrays.
    """
    e, nq, t1, p1, _ = query.shape
    ns, t2, p2 = support.shape[1], support.shape[2], support.shape[3]
    length = min(clip_length, t1, t2)
    cq, cs = ordered_clips(t1, length), ordered_clips(t2, length)
    n_clips = min(n_clips, len(cq))
    n_patches = min(n_patches, length * p1)
    q_frames = np.asarray(query, dtype=np.float32).mean(axis=3)
    s_frames = np.asarray(support, dtype=np.float32).mean(axis=3)
    global_ = pairwise_cosine(q_frames.mean(axis=2), s_frames.mean(axis=2))
    temporal = np.empty((e, nq, ns), dtype=np.float32)
    spatial = np.empty((e, nq, ns), dtype=np.float32)
    per_episode = 4 * nq * ns * (t1 * p1 * t2 * p2 + t1 * t2)
    step = max(1, _CHUNK_BYTES // per_episode)
    for start in range(0, e, step):
        part = slice(start, min(e, start + step))
        fs = frame_similarity(q_frames[part], s_frames[part])
        ps = patch_similarity(l2_normalize(query[part]), l2_normalize(support[part]))
        b = fs.shape[0] * nq * ns
        t, s = kernels.zoom_in(
            fs.reshape(b, t1, t2), ps.reshape(b, t1, p1, t2, p2), cq, cs, n_clips, n_patches
        )
        temporal[part] = t.reshape(-1, nq, ns)
        spatial[part] = s.reshape(-1, nq, ns)
    return global_, temporal, spatial


@register("zoom", kind="parameter-free", paper=HCL, needs_patches=True)
def score(
    query: Videos,
    support: Videos,
    support_labels: Labels,
    way: int,
    *,
    n_clips: int = 10,
    n_patches: int = 10,
    clip_length: int = 2,
) -> F32:
    """Zoom-in matching score Φ = Φ_g + Φ_t + Φ_s (HCL Eq. 6), mean over the K shots.

    query: [E, Q, T, P, D], support: [E, W*K, T, P, D], support_labels: [E, W*K] -> [E, Q, way].
    HCL uses n_clips = n_patches = 10 with 8 frames.
    """

    def total(q: Videos, s: Videos) -> F32:
        global_, temporal, spatial = pair_levels(q, s, n_clips=n_clips, n_patches=n_patches, clip_length=clip_length)
        return global_ + temporal + spatial

    return class_scores(query, support, support_labels, way, total, feature_ndim=3)
