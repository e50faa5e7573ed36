"""Zoom-in matching of HCL (Zheng et al., ECCV 2022, Eq. 2-6) on L2-normalised cues.

The cues are normalised once per video (:func:`normalized_cues`), so matching an episode only takes dot
products; the evaluator encodes each video once and matches it in many episodes.

- :func:`zoom_in`: Φ_g (Eq. 2), Φ_t (Eq. 3) and Φ_s (Eq. 4, with the α of Eq. 5) of every (query, support)
  pair, and which clip pairs the temporal level picked;
- Φ_s reads the patch cosines of the picked clip pairs only through each query patch's best partner, so it
  keeps, per query patch and support frame, the best cosine over that frame's patches
  (:func:`frame_patch_max`): a max over a clip's L·P patches is the max over its L frames of these.

Shapes use a pair axis [E, Q, S] (episode, query, support).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from fsar.matchers._hcl_losses import Encoded, gather_frames, semantic_attention

__all__ = ["Cues", "Zoom", "frame_patch_max", "match_clips", "normalized_cues", "spatial_score", "zoom_in"]

_EPS = 1e-8


class Cues(NamedTuple):
    """L2-normalised cues of a batch of videos (leading dims ``...`` shared by all fields but the last)."""

    patches: torch.Tensor  # [..., T, P, D] unit patch embeddings
    global_: torch.Tensor  # [..., D] unit global embedding
    clips: torch.Tensor  # [..., N_c, D_c] unit clip embeddings
    clip_frames: torch.Tensor  # [N_c, L] long: the frames i_1 < ... < i_L of each clip


class Zoom(NamedTuple):
    """Output of :func:`zoom_in` for pairs [E, Q, S]."""

    scores: dict[str, torch.Tensor]  # level ("g", "t", "s") -> [E, Q, S]
    clips: torch.Tensor | None  # [E, Q, S, T'] long: query clips of the top-T' clip pairs (None without "t"/"s")
    partners: torch.Tensor | None  # [E, Q, S, T'] long: their best support clips


def normalized_cues(enc: Encoded) -> Cues:
    """The cosines of Eq. 2-4 read unit vectors: :class:`Encoded` -> :class:`Cues`."""
    return Cues(F.normalize(enc.patches, dim=-1, eps=_EPS), F.normalize(enc.global_, dim=-1, eps=_EPS),
                F.normalize(enc.clips, dim=-1, eps=_EPS), enc.clip_frames)


def _max(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over ``dim``: without argmax indices when no gradient flows (the values are the same); with a
    gradient, to the one argmax as ``max`` gives it (``amax`` would split it among ties)."""
    return x.max(dim=dim).values if x.requires_grad else x.amax(dim=dim)


def match_clips(query: torch.Tensor, support: torch.Tensor, top: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Temporal zoom-in (Eq. 3): each query clip takes its most similar support clip, the top pairs are kept.

    query [E, Q, N1, D], support [E, S, N2, D] (unit rows); ``top`` is clamped to N1. Returns (similarities
    [E, Q, S, T'], query clip indices [E, Q, S, T'], partner support clip indices [E, Q, S, T']).
    """
    e, q, n1, d = query.shape
    s, n2 = support.shape[1:3]
    sim = torch.bmm(query.reshape(e, q * n1, d), support.reshape(e, s * n2, d).transpose(1, 2))
    best, partner = sim.view(e, q, n1, s, n2).max(dim=-1)  # [E, Q, N1, S]
    best, partner = best.transpose(2, 3), partner.transpose(2, 3)  # [E, Q, S, N1]
    values, index = best.topk(min(top, n1), dim=-1)
    return values, index, partner.gather(-1, index)


def frame_patch_max(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Best cosine of each query patch with the patches of each support frame.

    query [E, Q, T1, P1, D], support [E, S, T2, P2, D] (unit rows) -> [E, Q, S, T1, T2, P1]. One batched
    GEMM whose rows (query patches) and columns (support patches) are the contiguous code rows; the max runs
    over its innermost axis (P2) before any copy.
    """
    e, q, t1, p1, d = query.shape
    s, t2, p2 = support.shape[1:4]
    sim = torch.bmm(query.reshape(e, q * t1 * p1, d), support.reshape(e, s * t2 * p2, d).transpose(1, 2))
    return _max(sim.view(e, q, t1, p1, s, t2, p2), -1).permute(0, 1, 4, 2, 5, 3)  # [E, Q, T1, P1, S, T2] first


def clip_patch_best(best: torch.Tensor, query_frames: torch.Tensor, support_frames: torch.Tensor) -> torch.Tensor:
    """Each patch of each picked query clip against its partner clip (the zoom from Eq. 3 into Eq. 4).

    best [E, Q, S, T1, T2, P1] from :func:`frame_patch_max`; query_frames / support_frames [E, Q, S, T', L]:
    the frames of each picked clip and of its partner. Returns [E, Q, S, T', L·P1], the best cosine of
    query patch p of the clip's l-th frame (entry l·P1 + p) over the L·P2 patches of the partner clip.
    """
    e, q, s, t1, t2, p1 = best.shape
    top, length = query_frames.shape[-2:]
    pair = (query_frames[..., :, None] * t2 + support_frames[..., None, :]).reshape(e, q, s, -1)  # frame pairs
    picked = gather_frames(best.reshape(e, q, s, t1 * t2, p1), pair)  # [E, Q, S, T'·L·L, P1]
    return _max(picked.view(e, q, s, top, length, length, p1), -2).flatten(-2)


def spatial_score(best: torch.Tensor, top: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Φ_s (Eq. 4): the top ``top`` (S, clamped to N) of each clip's query-patch best cosines, averaged.

    best [..., T', N] from :func:`clip_patch_best`; weights [..., T', N] the α of each query patch (None:
    α = 1). Returns (1/T'S) Σ α g: [...].
    """
    values, index = best.topk(min(top, best.shape[-1]), dim=-1)
    if weights is not None:
        values = values * weights.gather(-1, index)
    return values.mean(dim=(-2, -1))


def zoom_in(query: Cues, support: Cues, *, top_clips: int, top_patches: int, levels: tuple[str, ...],
            patch_logits: torch.Tensor | None = None) -> Zoom:
    """Zoom-in matching of every (query, support) pair at the requested levels (Eq. 2, 3, 4).

    query fields [E, Q, ...], support fields [E, S, ...] (:class:`Cues`); levels ⊆ {"g", "t", "s"};
    patch_logits [E, Q, S, T, P]: semantic-attention logits of each query patch for the support's class
    (None: α = 1). Φ = Σ of the returned levels is Eq. 6.
    """
    scores: dict[str, torch.Tensor] = {}
    if "g" in levels:
        scores["g"] = query.global_ @ support.global_.transpose(-1, -2)
    if "t" not in levels and "s" not in levels:
        return Zoom(scores, None, None)
    values, clips, partners = match_clips(query.clips, support.clips, top_clips)
    if "t" in levels:
        scores["t"] = values.mean(dim=-1)
    if "s" in levels:
        q_frames, s_frames = query.clip_frames[clips], support.clip_frames[partners]  # [E, Q, S, T', L]
        best = clip_patch_best(frame_patch_max(query.patches, support.patches), q_frames, s_frames)
        weights = None
        if patch_logits is not None:
            picked = gather_frames(patch_logits, q_frames.flatten(-2))  # [E, Q, S, T'·L, P]
            weights = semantic_attention(picked.view(*q_frames.shape[:-1], -1))
        scores["s"] = spatial_score(best, top_patches, weights)
    return Zoom(scores, clips, partners)
