"""Pure torch functions of HCL (Zheng et al., ECCV 2022): the cues of Sec. 3.1 and the losses (Eq. 7-10).

Everything here takes tensors and returns tensors (no parameters): :mod:`fsar.matchers.hcl` holds the
learned encoder and the head that wires these together; the zoom-in matching (Eq. 2-6) is in
:mod:`fsar.matchers._hcl_match`.

- :func:`identity_encode`: the cues of Sec. 3.1 without learned parts (``encoder="none"``);
- :func:`semantic_attention`: the α of Eq. 5 from its logits;
- :func:`supervised_contrastive`: Eq. 7 (L_g, and L_t, L_s on the other levels' scores);
- :func:`cycle_loss`: the soft-nearest-neighbour cycle consistency of Eq. 8-9 (clips) and Eq. 10 (patches);
  :func:`cycle_terms`: L_tc and L_sc of a batch's same-class pairs from the clip pairs its matching picked.

Shapes use ``...`` for any leading batch dims; a pair axis is written [E, Q, S] (episode, query, support).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fsar.matchers.zoom import ordered_clips

__all__ = [
    "Encoded",
    "clip_tuples",
    "cycle_loss",
    "cycle_lower_bound",
    "cycle_terms",
    "gather_frames",
    "identity_encode",
    "positive_pairs",
    "semantic_attention",
    "supervised_contrastive",
]

_EPS = 1e-8


class Encoded(NamedTuple):
    """The multi-level cues of Sec. 3.1 for a batch of videos (leading dims ``...`` shared by all fields)."""

    patches: torch.Tensor  # [..., T, P, D] patch embeddings 𝒫
    frames: torch.Tensor  # [..., T, D] spatial means f_t
    global_: torch.Tensor  # [..., D] temporal mean x
    clips: torch.Tensor  # [..., N_c, D_c] clip embeddings 𝒞 (Eq. 1)
    clip_frames: torch.Tensor  # [N_c, L] long: the frames i_1 < ... < i_L of each clip


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=_EPS)


@functools.lru_cache(maxsize=32)
def clip_tuples(frames: int, length: int) -> torch.Tensor:
    """Frames of every clip i_1 < ... < i_L: [C(frames, length), length] long (shared: do not modify)."""
    return torch.from_numpy(ordered_clips(frames, length))


def identity_encode(patches: torch.Tensor, clip_length: int) -> Encoded:
    """The cues of Sec. 3.1 without learned parts: patches [..., T, P, D] as given, frames and x by
    averaging, a clip = [f̄_{i_1}; ...; f̄_{i_L}] of L2-normalised frames (clip cosine = mean frame cosine);
    clips of min(L, T) frames."""
    frames = patches.mean(dim=-2)
    tuples = clip_tuples(frames.shape[-2], min(clip_length, frames.shape[-2])).to(patches.device)
    clips = F.normalize(frames, dim=-1, eps=1e-8)[..., tuples, :].flatten(-2)
    return Encoded(patches, frames, frames.mean(dim=-2), clips, tuples)


def gather_frames(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Rows of the time axis: x [*lead, T, *rest], frames [*lead, K] long -> [*lead, K, *rest]."""
    lead = frames.dim() - 1
    rest = x.shape[lead + 1:]
    flat = x.flatten(lead + 1) if rest else x[..., None]
    out = flat.gather(lead, frames[..., None].expand(*frames.shape, flat.shape[-1]))
    return out.view(*frames.shape, *rest)


def semantic_attention(logits: torch.Tensor) -> torch.Tensor:
    """α of Eq. 5, rescaled: N · softmax over the N patches of a clip, [..., N] -> [..., N].

    ``logits`` are p_{i,j} W e_ŷ / √d. The factor N (a choice) makes uniform attention α = 1, the value
    Eq. 4 and Eq. 10 take without the semantic attention component; the paper's softmax alone sums to 1.
    """
    return logits.softmax(dim=-1) * logits.shape[-1]


def supervised_contrastive(similarity: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 7: −(1/B²) Σ_{i≠j, y_i=y_j} log(exp(Φ_ij/τ) / Σ_{k≠i} exp(Φ_ik/τ)).

    similarity [B, B] (row i: Φ(v_i, ·), any level); labels [B]. The 1/B² normalisation is the paper's
    (SupCon divides by each anchor's positive count instead).
    """
    b = similarity.shape[0]
    self_pair = torch.eye(b, dtype=torch.bool, device=similarity.device)
    log_prob = (similarity / temperature).masked_fill(self_pair, float("-inf")).log_softmax(dim=-1)
    positive = (labels[:, None] == labels[None, :]) & ~self_pair
    return -log_prob.masked_fill(~positive, 0.0).sum() / b**2


def cycle_loss(anchors: torch.Tensor, others: torch.Tensor, temperature: float,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cycle consistency with soft nearest neighbours (Eq. 8-9 for clips, Eq. 10 for patches).

    anchors [..., N, D] (the top-T clips c_i of v, or the N_p patches of clip c), others [..., M, D] (all
    clips of v̂, or the patches of ĉ). Each anchor's soft nearest neighbour ô = Σ_j β_j o_j,
    β = softmax_j(g(a_i, o_j)/τ) (Eq. 8), must cycle back to it among the anchors:
    ℓ_i = −log softmax_k(g(ô, a_k)/τ)[i]. Returns (1/N) Σ_i α_i ℓ_i: [...] (α = ``weights`` [..., N], Eq. 10;
    None: 1). Since g ∈ [−1, 1], ℓ_i ≥ log(1 + (N−1)·exp(−2/τ)). The paper has no τ (τ = 1).
    """
    a = _normalize(anchors)
    beta = (a @ _normalize(others).transpose(-1, -2) / temperature).softmax(dim=-1)
    back = _normalize(beta @ others) @ a.transpose(-1, -2) / temperature  # [..., N, N]
    loss = -back.log_softmax(dim=-1).diagonal(dim1=-2, dim2=-1)
    if weights is not None:
        loss = loss * weights
    return loss.mean(dim=-1)


def cycle_lower_bound(n: int, temperature: float) -> float:
    """The least value of :func:`cycle_loss` with N = ``n`` anchors and unit weights (see there)."""
    return math.log1p((n - 1) * math.exp(-2.0 / temperature))


def positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordered pairs (i, j), i ≠ j, y_i = y_j, of a batch: labels [B] -> two [n_pos] long tensors."""
    same = (labels[:, None] == labels[None, :]).fill_diagonal_(False)
    i, j = same.nonzero(as_tuple=True)
    return i, j


def cycle_terms(enc: Encoded, clips: torch.Tensor | None, partners: torch.Tensor | None, labels: torch.Tensor,
                logits: torch.Tensor | None, wanted: list[str], temperature: float) -> dict[str, torch.Tensor]:
    """L_tc (Eq. 9) and L_sc (Eq. 10) over the ordered same-class pairs (v_i, v_j) of a batch.

    enc: the batch's cues with leading dims [1, B]; clips / partners [1, B, B, T']: the clip pairs its
    temporal matching picked (None: not matched); labels [B]; logits [1, B, B, T, P] for α (None: α = 1);
    ``wanted`` ⊆ {"tc", "sc"} (other names are ignored).
    """
    i, j = positive_pairs(labels)
    if clips is None or partners is None or i.numel() == 0:  # no same-class pair: no cycle
        return {k: enc.global_.new_zeros(()) for k in ("tc", "sc") if k in wanted}
    clips, partners = clips[0, i, j], partners[0, i, j]  # [n, T']
    out = {}
    if "tc" in wanted:  # picked clips of v_i against all clips of v_j
        out["tc"] = cycle_loss(gather_frames(enc.clips[0, i], clips), enc.clips[0, j], temperature).mean()
    if "sc" in wanted:  # the L·P patches of each picked clip against those of its partner
        q_frames, s_frames = enc.clip_frames[clips].flatten(-2), enc.clip_frames[partners].flatten(-2)
        n, top, d = clips.shape[0], clips.shape[1], enc.patches.shape[-1]
        anchors = gather_frames(enc.patches[0, i], q_frames).reshape(n, top, -1, d)
        others = gather_frames(enc.patches[0, j], s_frames).reshape(n, top, -1, d)
        weights = None
        if logits is not None:  # α weighs the terms; it is not trained through them
            weights = semantic_attention(gather_frames(logits[0, i, j], q_frames).reshape(n, top, -1)).detach()
        out["sc"] = cycle_loss(anchors, others, temperature, weights).mean()
    return out
