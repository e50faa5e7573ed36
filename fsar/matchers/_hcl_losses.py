"""Pure torch functions of HCL (Zheng et al., ECCV 2022): zoom-in matching (Eq. 2-6) and its losses (Eq. 7-10).

Everything here takes tensors and returns tensors (no parameters): :mod:`fsar.matchers.hcl` holds the
learned encoder and the head that wires these together.

- :func:`identity_encode`: the cues of Sec. 3.1 without learned parts (``encoder="none"``);
- :func:`zoom_in`: Φ_g (Eq. 2), Φ_t (Eq. 3) and Φ_s (Eq. 4) of every (query, support) pair, and which
  clip pairs the temporal level picked; :func:`semantic_attention` is the α of Eq. 5 from its logits;
- :func:`supervised_contrastive`: Eq. 7 (L_g, and L_t, L_s on the other levels' scores);
- :func:`cycle_loss`: the soft-nearest-neighbour cycle consistency of Eq. 8-9 (clips) and Eq. 10 (patches).

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
    "Zoom",
    "clip_patch_similarity",
    "clip_tuples",
    "cosine_matrix",
    "cycle_loss",
    "cycle_lower_bound",
    "gather_frames",
    "identity_encode",
    "match_clips",
    "patch_cosines",
    "positive_pairs",
    "semantic_attention",
    "spatial_score",
    "supervised_contrastive",
    "zoom_in",
]

_EPS = 1e-8


class Encoded(NamedTuple):
    """The multi-level cues of Sec. 3.1 for a batch of videos (leading dims ``...`` shared by all fields)."""

    patches: torch.Tensor  # [..., T, P, D] patch embeddings 𝒫
    frames: torch.Tensor  # [..., T, D] spatial means f_t
    global_: torch.Tensor  # [..., D] temporal mean x
    clips: torch.Tensor  # [..., N_c, D_c] clip embeddings 𝒞 (Eq. 1)
    clip_frames: torch.Tensor  # [N_c, L] long: the frames i_1 < ... < i_L of each clip


class Zoom(NamedTuple):
    """Output of :func:`zoom_in` for pairs [E, Q, S]."""

    scores: dict[str, torch.Tensor]  # level ("g", "t", "s") -> [E, Q, S]
    clips: torch.Tensor | None  # [E, Q, S, T'] long: query clips of the top-T' clip pairs (None without "t"/"s")
    partners: torch.Tensor | None  # [E, Q, S, T'] long: their best support clips


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


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """g(a_q, b_s) of Eq. 2 for every pair: a [E, Q, D], b [E, S, D] -> [E, Q, S]."""
    return _normalize(a) @ _normalize(b).transpose(-1, -2)


def match_clips(query: torch.Tensor, support: torch.Tensor, top: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Temporal zoom-in (Eq. 3): each query clip takes its most similar support clip, the top pairs are kept.

    query [E, Q, N1, D], support [E, S, N2, D]; ``top`` is clamped to N1. Returns (similarities
    [E, Q, S, T'], query clip indices [E, Q, S, T'], partner support clip indices [E, Q, S, T']).
    Φ_t is the mean of the similarities.
    """
    sim = torch.einsum("eqid,esjd->eqsij", _normalize(query), _normalize(support))
    best, partner = sim.max(dim=-1)  # [E, Q, S, N1]
    values, index = best.topk(min(top, best.shape[-1]), dim=-1)
    return values, index, partner.gather(-1, index)


def patch_cosines(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Cosine of every query patch with every support patch, frame pairs first.

    query [E, Q, T1, P1, D], support [E, S, T2, P2, D] -> [E, Q, S, T1, T2, P1, P2] (one batched GEMM).
    """
    e, q, t1, p1, d = query.shape
    s, t2, p2 = support.shape[1:4]
    sim = _normalize(query).reshape(e, q * t1 * p1, d) @ _normalize(support).reshape(e, s * t2 * p2, d).transpose(1, 2)
    return sim.view(e, q, t1, p1, s, t2, p2).permute(0, 1, 4, 2, 5, 3, 6)


def gather_frames(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Rows of the time axis: x [*lead, T, *rest], frames [*lead, K] long -> [*lead, K, *rest]."""
    lead = frames.dim() - 1
    rest = x.shape[lead + 1:]
    flat = x.flatten(lead + 1) if rest else x[..., None]
    out = flat.gather(lead, frames[..., None].expand(*frames.shape, flat.shape[-1]))
    return out.view(*frames.shape, *rest)


def clip_patch_similarity(patch_sim: torch.Tensor, query_frames: torch.Tensor, support_frames: torch.Tensor
                          ) -> torch.Tensor:
    """Patch cosines inside each picked clip pair (the zoom from Eq. 3 into Eq. 4).

    patch_sim [E, Q, S, T1, T2, P1, P2] from :func:`patch_cosines`; query_frames / support_frames
    [E, Q, S, T', L]: the frames of each picked clip and of its partner. Returns [E, Q, S, T', L·P1, L·P2];
    row l·P1 + p is patch p of the query clip's l-th frame.
    """
    e, q, s, t1, t2, p1, p2 = patch_sim.shape
    top, length = query_frames.shape[-2:]
    pair = (query_frames[..., :, None] * t2 + support_frames[..., None, :]).reshape(e, q, s, -1)  # frame pairs
    blocks = gather_frames(patch_sim.reshape(e, q, s, t1 * t2, p1, p2), pair)  # [E, Q, S, T'·L·L, P1, P2]
    blocks = blocks.view(e, q, s, top, length, length, p1, p2).permute(0, 1, 2, 3, 4, 6, 5, 7)
    return blocks.reshape(e, q, s, top, length * p1, length * p2)


def semantic_attention(logits: torch.Tensor) -> torch.Tensor:
    """α of Eq. 5, rescaled: N · softmax over the N patches of a clip, [..., N] -> [..., N].

    ``logits`` are p_{i,j} W e_ŷ / √d. The factor N (a choice) makes uniform attention α = 1, the value
    Eq. 4 and Eq. 10 take without the semantic attention component; the paper's softmax alone sums to 1.
    """
    return logits.softmax(dim=-1) * logits.shape[-1]


def spatial_score(block: torch.Tensor, top: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Φ_s (Eq. 4): each query patch takes its best partner patch, the top ones are averaged.

    block [..., T', N1, N2] from :func:`clip_patch_similarity`; ``top`` (S) clamped to N1; weights
    [..., T', N1] the α of each query patch (None: α = 1). Returns (1/T'S) Σ α g: [...].
    """
    best = block.max(dim=-1).values
    values, index = best.topk(min(top, best.shape[-1]), dim=-1)
    if weights is not None:
        values = values * weights.gather(-1, index)
    return values.mean(dim=(-2, -1))


def zoom_in(query: Encoded, support: Encoded, *, top_clips: int, top_patches: int, levels: tuple[str, ...],
            patch_logits: torch.Tensor | None = None) -> Zoom:
    """Zoom-in matching of every (query, support) pair at the requested levels (Eq. 2, 3, 4).

    query fields [E, Q, ...], support fields [E, S, ...] (:class:`Encoded`); levels ⊆ {"g", "t", "s"};
    patch_logits [E, Q, S, T, P]: semantic-attention logits of each query patch for the support's class
    (None: α = 1). Φ = Σ of the returned levels is Eq. 6.
    """
    scores: dict[str, torch.Tensor] = {}
    if "g" in levels:
        scores["g"] = cosine_matrix(query.global_, support.global_)
    if "t" not in levels and "s" not in levels:
        return Zoom(scores, None, None)
    values, clips, partners = match_clips(query.clips, support.clips, top_clips)
    if "t" in levels:
        scores["t"] = values.mean(dim=-1)
    if "s" in levels:
        q_frames, s_frames = query.clip_frames[clips], support.clip_frames[partners]  # [E, Q, S, T', L]
        block = clip_patch_similarity(patch_cosines(query.patches, support.patches), q_frames, s_frames)
        weights = None
        if patch_logits is not None:
            picked = gather_frames(patch_logits, q_frames.flatten(-2))  # [E, Q, S, T'·L, P]
            weights = semantic_attention(picked.view(*q_frames.shape[:-1], -1))
        scores["s"] = spatial_score(block, top_patches, weights)
    return Zoom(scores, clips, partners)


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
