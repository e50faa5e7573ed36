"""HCL (Zheng, Chen, Jin: Few-shot Action Recognition with Hierarchical Matching and Contrastive Learning,
ECCV 2022) as a learned head on cached patch features [.., T, P, D] (P = n x n adaptive-pooled cells).

Implemented (the pure functions live in :mod:`fsar.matchers._hcl_losses` and :mod:`fsar.matchers._hcl_match`):

- video encoder (Sec. 3.1): one pre-norm transformer block (joint space-time self-attention over the
  T·P patch tokens, GELU feed-forward) with a space-time position embedding added to the tokens; patch
  embeddings 𝒫 = its output, frames f_t = spatial mean, global x = temporal mean, clip embeddings
  c = MLP([f_{i_1}; ...; f_{i_L}]) over every ordered frame tuple i_1 < ... < i_L (Eq. 1);
- zoom-in matching Φ = Φ_g + Φ_t + Φ_s (Eq. 2-4, 6), with the semantic attention α of Eq. 5 (on by default,
  as in the paper's full model; ``text_encoder="none"`` sets α = 1); the class score is the mean of Φ over the
  class's K shots;
- training: L_ce on the episode (:meth:`HCLHead.loss`), and on the trainer's class-balanced batch of
  24 classes × 2 videos (:meth:`HCLHead.batch_loss`) λ_g L_g + λ_t (L_t + L_tc) + λ_s (L_s + L_sc)
  (Eq. 7-11): supervised contrastive losses on Φ_g, Φ_t, Φ_s and the cycle consistency of clips
  (Eq. 8-9) and of the patches of the picked clip pairs (Eq. 10).

Each :class:`HCLConfig` field and :class:`TrainDefaults` setting says whether its default is the paper's
(and where) or fsar's choice (and why): ``fsar train --matcher hcl --list-params``. Choices besides those:

- the clip MLP is Linear(L·D, D) -> ReLU -> Linear(D, D), its first layer computed per frame and summed per
  tuple; dropout acts on the attention weights and the feed-forward;
- position embedding (divided, as in TimeSformer): a learned temporal table [frames, D] plus a learned spatial
  table [D, n, n] on the cache's n x n patch grid, n = √P of the first patches seen (the head is built before
  a cache is read) or of the weights loaded; a table learned on another grid is average-pooled to the input's
  (how checkpoints with a 4 x 4 table score any grid). Both start at N(0, 0.02²): the untrained head is
  close to the parameter-free ``zoom`` matcher;
- α = N_p · softmax (Eq. 5 times N_p) so that uniform attention is α = 1, as without the component; α
  weights the L_sc terms as a constant (detached): Eq. 10 uses it to down-weight gradients;
- Eq. 7 keeps the paper's 1/B² normalisation; L_tc is averaged over the ordered same-class pairs of
  the batch, L_sc over all their picked clip pairs.

Ablations: ``losses`` (Tables 1-2), ``levels`` (Table 4), ``text_encoder="none"`` (Table 3);
``encoder="none"`` replaces the learned encoder by identities (a clip = concatenation of its L2-normalised
frames): the head has no parameters and :meth:`HCLHead.forward` equals :func:`fsar.matchers.zoom.score`.

Per video and per episode (:meth:`HCLHead.encode_videos` / :meth:`HCLHead.match`): the position embedding,
the transformer block and the clip MLP read one video each (joint space-time attention runs over the T·P
tokens of that video only), so the cues 𝒫, f, x, 𝒞 are per video; the semantic attention (it reads the
episode's class names) and the zoom-in matching of every (query, support) pair are per episode. The codes are
L2-normalised (with each patch's norm, which the semantic attention reads), so that matching takes dot products.

Class names are not part of the matcher contract, so forward/loss/batch_loss take an optional ``class_text``
of name embeddings (:func:`class_text_embeddings`) indexed by the labels they are given, required with
``text_encoder="minilm"``. The runner refuses names that are only split indices (SSv2-full's ``test18``)
unless a ``--class-names`` map gives their real names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from fsar.matchers._hcl_losses import (
    Encoded,
    clip_tuples,
    cycle_terms,
    identity_encode,
    supervised_contrastive,
)
from fsar.matchers._hcl_match import Cues, Zoom, normalized_cues, zoom_in

# Re-exported: the text encoder is reached as hcl.class_text_embeddings (registration), hcl._minilm (its cache).
from fsar.matchers._hcl_text import TEXT_ENCODER_MISSING as TEXT_ENCODER_MISSING
from fsar.matchers._hcl_text import _minilm as _minilm
from fsar.matchers._hcl_text import class_text_embeddings
from fsar.matchers.head import (
    Features,
    Head,
    TrainDefaults,
    VideoCodes,
    chosen,
    paper,
    shot_mean,
    single_stream,
)
from fsar.matchers.registry import register
from fsar.matchers.zoom import HCL

__all__ = ["HCLConfig", "HCLHead", "VideoEncoder", "class_text_embeddings", "clip_tuples", "identity_encode"]

LOSSES = ("ce", "g", "t", "tc", "s", "sc")
LEVELS = ("g", "t", "s")


@dataclass(frozen=True)
class HCLConfig:
    """HCL hyperparameters, each the paper's value (and where) or fsar's choice (and why)."""

    top_clips: int = paper(10, "Sec. 4.1: T = 10 clip pairs kept by temporal matching (Eq. 3)")
    top_patches: int = paper(10, "Sec. 4.1: S = 10 patch pairs kept per clip pair (Eq. 4)")
    clip_length: int = chosen(2, "frames per clip (ordered tuples i_1 < ... < i_L): Sec. 3.1 leaves |c_i| open; "
                                 "the cost analysis of Sec. 3.2 assumes 2-frame clips, C(8, 2) = 28 per video")
    heads: int = chosen(8, "attention heads of the transformer block (Sec. 3.1, not given): 8 as in the Transformer")
    mlp_ratio: int = chosen(4, "feed-forward width = mlp_ratio x D (not given): 4 as in the Transformer")
    dropout: float = chosen(0.1, "dropout of the block (not given): 0.1 as in the Transformer")
    temperature: float = chosen(0.1, "τ of Eq. 7 (not given): 0.1 as in supervised contrastive learning (SupCon); "
                                     "also divides Φ in the episode cross-entropy L_ce (Eq. 11, p not given)")
    cycle_temperature: float = paper(1.0, "Eq. 8-10 have no temperature (1.0); fsar's ablation: 0.1, as in "
                                          "temporal cycle-consistency learning, sharpens the soft nearest neighbour")
    lambda_g: float = paper(0.5, "Sec. 4.1 (Eq. 11)")
    lambda_t: float = paper(0.3, "Sec. 4.1 (Eq. 11)")
    lambda_s: float = paper(0.3, "Sec. 4.1 (Eq. 11)")
    batch_classes: int = paper(24, "Sec. 4.1: a mini-batch of 24 classes x 2 videos for Eq. 7-10")
    batch_videos: int = paper(2, "Sec. 4.1: 2 videos per class in the mini-batch")
    losses: tuple[str, ...] = paper(LOSSES, "Eq. 11, Table 1 row 7: every term (ablation: any subset)")
    levels: tuple[str, ...] = paper(LEVELS, "Eq. 6, Table 4 row 6: Φ = Φ_g + Φ_t + Φ_s (ablation: any subset)")
    encoder: str = paper("transformer", "Sec. 3.1: one transformer block over the t·h·w patches (none: zoom)")
    text_encoder: str = chosen("minilm", "semantic attention (Eq. 5) on, as in the full model (Table 3 row 2); "
                                         "the paper embeds class names with BERT (Sec. 4.1), fsar with "
                                         "all-MiniLM-L6-v2, a small BERT-style sentence encoder that runs "
                                         "offline (none: α = 1)")
    text_dim: int = chosen(384, "dimension of the all-MiniLM-L6-v2 name embeddings (BERT-base: 768)")


def _check_config(cfg: HCLConfig, dim: int, frames: int) -> None:
    for name, given, known in (("losses", cfg.losses, LOSSES), ("levels", cfg.levels, LEVELS)):
        unknown = sorted(set(given) - set(known))
        if unknown or not given:
            raise ValueError(f"hcl {name} must be a non-empty subset of {','.join(known)}, got {given}")
    if cfg.encoder not in ("transformer", "none"):
        raise ValueError(f"hcl encoder must be 'transformer' or 'none', got {cfg.encoder!r}")
    if cfg.text_encoder not in ("none", "minilm"):
        raise ValueError(f"hcl text_encoder must be 'none' or 'minilm', got {cfg.text_encoder!r}")
    if min(cfg.top_clips, cfg.top_patches, cfg.clip_length, cfg.heads, cfg.mlp_ratio, cfg.text_dim) < 1:
        raise ValueError("hcl top_clips, top_patches, clip_length, heads, mlp_ratio and text_dim must be >= 1")
    if cfg.batch_classes < 2 or cfg.batch_videos < 2:
        raise ValueError("hcl batch_classes and batch_videos must be >= 2 (the contrastive terms need negatives "
                         "and positives)")
    if cfg.temperature <= 0 or cfg.cycle_temperature <= 0:
        raise ValueError("hcl temperatures must be > 0")
    if cfg.encoder == "transformer":
        if dim % cfg.heads:
            raise ValueError(f"hcl heads={cfg.heads} must divide the feature dimension {dim}")
        if frames < cfg.clip_length:
            raise ValueError(f"hcl clip_length={cfg.clip_length} exceeds the {frames} frames")


def _grid_side(patches: int) -> int:
    """n of an n x n patch grid of P = ``patches`` cells; ValueError for a P that is not a square."""
    n = math.isqrt(patches)
    if n < 1 or n * n != patches:
        raise ValueError(f"hcl needs a square patch grid (P = n x n), got P = {patches}")
    return n


class VideoEncoder(LazyModuleMixin, nn.Module):
    """Sec. 3.1 on cached patches: position embedding, one space-time transformer block, clip MLP (Eq. 1).

    The spatial position table [D, n, n] follows the patch grid of the inputs: it is created from the first
    patches seen (n = √P) or from the weights loaded (``LazyModuleMixin``), since the head is built before
    any cache is read. Until then ``state_dict()`` raises: copied, an uncreated table would be created anew,
    with other values, by each copy.
    """

    def __init__(self, dim: int, frames: int, cfg: HCLConfig) -> None:
        super().__init__()
        self.clip_length = cfg.clip_length
        self.temporal_position = nn.Parameter(nn.init.trunc_normal_(torch.empty(frames, dim), std=0.02))
        self.spatial_position = nn.UninitializedParameter()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = cfg.mlp_ratio * dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(cfg.dropout))
        self.clip_in = nn.Linear(cfg.clip_length * dim, dim)
        self.clip_out = nn.Linear(dim, dim)

    def initialize_parameters(self, patches: torch.Tensor) -> None:  # LazyModuleMixin: before the first forward
        """Create the spatial position table on the grid of ``patches`` [..., T, P, D]: [D, √P, √P] ~ N(0, 0.02²)."""
        if self.has_uninitialized_params():
            n = _grid_side(patches.shape[-2])
            with torch.no_grad():
                self.spatial_position.materialize((self.temporal_position.shape[1], n, n))
                nn.init.trunc_normal_(self.spatial_position, std=0.02)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        if self.has_uninitialized_params():
            raise RuntimeError("hcl's spatial position table is made on the grid of the first patches the head "
                               "sees: run the head once (or load weights) before taking its state_dict")
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def positions(self, frames: int, patches: int) -> torch.Tensor:
        """Space-time position embedding [frames, patches, D] for a T x (n x n) token grid."""
        n = _grid_side(patches)
        spatial: torch.Tensor = self.spatial_position
        if spatial.shape[-1] != n:  # a table learned on another grid: pool its cells
            spatial = F.adaptive_avg_pool2d(spatial, n)
        spatial = spatial.flatten(1).T  # [P, D], row-major cells
        temporal: torch.Tensor = self.temporal_position
        if frames != temporal.shape[0]:  # another clip length than trained on: resample the table
            temporal = F.interpolate(temporal.T[None], size=frames, mode="linear", align_corners=True)[0].T
        return temporal[:, None, :] + spatial[None, :, :]

    def block(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pre-norm transformer block: [N, T·P, D] -> [N, T·P, D]."""
        x = self.norm1(tokens)
        tokens = tokens + self.attention(x, x, x, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))

    def clips(self, frames: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
        """Eq. 1, c = MLP([f_{i_1}; ...; f_{i_L}]): frames [N, T, D] -> [N, N_c, D].

        The first layer on a concatenation is Σ_l W^{(l)} f_{i_l}: every frame is projected once per
        slot l and a clip sums L gathered rows, instead of one (L·D x D) product per clip.
        """
        d = frames.shape[-1]
        # W^{(l)} is a column block of W: a strided view, multiplied without copying the weight.
        hidden = self.clip_in.bias + sum(
            (frames @ self.clip_in.weight[:, slot * d:(slot + 1) * d].T)[:, tuples[:, slot]]
            for slot in range(self.clip_length))
        return self.clip_out(F.relu(hidden))

    def forward(self, patches: torch.Tensor) -> Encoded:
        """patches [..., T, P, D] -> :class:`Encoded` with the same leading dims."""
        *lead, t, p, d = patches.shape
        if t < self.clip_length:
            raise ValueError(f"hcl clip_length={self.clip_length} exceeds the {t} frames given")
        tokens = (patches.reshape(-1, t, p, d) + self.positions(t, p)).flatten(1, 2)
        x = self.block(tokens).view(-1, t, p, d)
        frames = x.mean(dim=2)
        tuples = clip_tuples(t, self.clip_length).to(patches.device)
        clips = self.clips(frames, tuples)
        return Encoded(x.view(*lead, t, p, d), frames.view(*lead, t, d), frames.mean(dim=1).view(*lead, d),
                       clips.view(*lead, -1, d), tuples)


@register("hcl", kind="learned", paper=HCL, needs_patches=True, class_text=class_text_embeddings)
class HCLHead(Head):
    """Hierarchical zoom-in matching Φ = Φ_g + Φ_t + Φ_s over a learned space-time encoder, trained with HCL.

    Zheng et al., ECCV 2022, Eq. 1-11 (module docstring). query {m: [E, Q, T, P, D]}, support
    {m: [E, W*K, T, P, D]}, support_labels [E, W*K] -> logits [E, Q, way] = mean over the shots of Φ.
    Optional ``class_text`` [E, way, text_dim]: embeddings of the episode's class names in label order
    (needed for ``text_encoder="minilm"``).
    """

    Config = HCLConfig
    # Sec. 4.1: 15 epochs of 3,000 steps, SGD at 0.001 halved every 6 epochs. fsar's step is one episode
    # (L_ce) plus one balanced batch (Eq. 7-10), so the schedule counts 3,000 episodes per paper epoch.
    defaults = TrainDefaults(
        optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0, clip_norm=None, tasks_per_step=1,
        lr_decay_every=6 * 3_000, lr_decay=0.5, budget=15 * 3_000,
        origins={
            "optimizer": "paper: Sec. 4.1 (SGD)", "lr": "paper: Sec. 4.1 (0.001)", "lr_decay": "paper: Sec. 4.1 (x0.5)",
            "momentum": "fsar: not given; 0.9, the usual SGD momentum",
            "weight_decay": "fsar: not given; none", "clip_norm": "fsar: not given; no clipping",
            "tasks_per_step": "fsar: one episode (L_ce) and one 24 x 2 balanced batch (Eq. 7-10) per step; the "
                              "paper does not say how many episodes a step holds",
            "lr_decay_every": "paper: Sec. 4.1, x0.5 every 6 epochs of 3,000 steps = 18,000 episodes (one per step)",
            "budget": "paper: Sec. 4.1, 15 epochs x 3,000 steps = 45,000 episodes "
                      "(--epochs 15 --episodes-per-epoch 3000)",
        })
    # Table 4: the zoom-in levels are chosen at test time on one trained model (they change no parameter).
    eval_params = frozenset({"levels"})
    # An episode's videos pass the transformer block (MLP activations: T·P tokens x 4D per video) and each
    # pair holds T²P² patch cosines (16k floats at P = 16): 10 five-way one-shot episodes.
    eval_pairs = 256

    def __init__(self, dims: Mapping[str, int], frames: int, config: HCLConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: HCLConfig = self.config
        if len(self.dims) != 1:
            raise ValueError(f"hcl reads one modality, got {sorted(self.dims)}")
        dim = next(iter(self.dims.values()))
        _check_config(cfg, dim, frames)
        self.balanced_batch = (cfg.batch_classes, cfg.batch_videos)
        self.encoder = VideoEncoder(dim, frames, cfg) if cfg.encoder == "transformer" else None
        self.text_projection = nn.Linear(cfg.text_dim, dim, bias=False) if cfg.text_encoder == "minilm" else None

    @property
    def uses_class_text(self) -> bool:
        """True with ``text_encoder="minilm"``: the semantic attention α (Eq. 5) reads the class names."""
        return self.text_projection is not None

    def encode(self, patches: torch.Tensor) -> Encoded:
        """Multi-level cues of videos: patches [..., T, P, D] -> :class:`Encoded`."""
        if self.encoder is None:
            return identity_encode(patches, self.config.clip_length)
        return self.encoder(patches)

    def patch_logits(self, query_patches: torch.Tensor, support_labels: torch.Tensor,
                     class_text: torch.Tensor | None, norms: torch.Tensor | None = None) -> torch.Tensor | None:
        """p W e_ŷ / √d of Eq. 5 for every query patch and the class ŷ of every support.

        query_patches [E, Q, T, P, D], support_labels [E, S], class_text [E, way, text_dim] ->
        [E, Q, S, T, P]; None when ``text_encoder="none"`` (α = 1). ``norms`` [E, Q, T, P]: the patches'
        norms when ``query_patches`` are unit vectors (p = |p| p̂).
        """
        if self.text_projection is None:
            return None
        if class_text is None:
            raise ValueError("hcl with text_encoder='minilm' needs class_text (class-name embeddings)")
        e, q, t, p, d = query_patches.shape
        keys = self.text_projection(class_text.to(query_patches.dtype))  # W e_y: [E, way, D]
        logits = torch.einsum("eqtpd,ewd->eqwtp", query_patches, keys) / math.sqrt(d)
        if norms is not None:
            logits = logits * norms[:, :, None]
        index = support_labels.long()[:, None, :, None, None].expand(e, q, -1, t, p)
        return logits.gather(2, index)

    def _zoom(self, query: Cues, support: Cues, patch_logits: torch.Tensor | None,
              levels: tuple[str, ...]) -> Zoom:
        cfg = self.config
        return zoom_in(query, support, top_clips=cfg.top_clips, top_patches=cfg.top_patches, levels=levels,
                       patch_logits=patch_logits)

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part: the encoder's cues (Sec. 3.1) of every video, L2-normalised, {m: [E, N, T, P, D]}
        -> {"patches": [E, N, T, P, D], "global": [E, N, D], "clips": [E, N, N_c, D]}, with the patches'
        norms "patch_norms" [E, N, T, P] when the semantic attention reads them."""
        enc = self.encode(single_stream(videos))
        norms = enc.patches.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # as F.normalize
        codes = {"patches": enc.patches / norms, "global": F.normalize(enc.global_, dim=-1, eps=1e-8),
                 "clips": F.normalize(enc.clips, dim=-1, eps=1e-8)}
        if self.uses_class_text:
            codes["patch_norms"] = norms[..., 0]
        return codes

    def _cues(self, codes: VideoCodes) -> Cues:
        """:class:`Cues` from :meth:`encode_videos`'s output (the clip tuples are shared by all videos)."""
        t = codes["patches"].shape[-3]
        tuples = clip_tuples(t, min(self.config.clip_length, t)).to(codes["patches"].device)
        return Cues(codes["patches"], codes["global"], codes["clips"], tuples)

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
                class_text: torch.Tensor | None = None) -> torch.Tensor:
        # Queries and supports are encoded apart: concatenating them would copy the patch tensors.
        return self.match(self.encode_videos(query), self.encode_videos(support), support_labels, way,
                          class_text=class_text)

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              class_text: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """The per-episode part: semantic attention (Eq. 5, reads the episode's class names), zoom-in
        matching Φ (Eq. 2-6) of every pair, mean over each class's shots -> [E, Q, way]."""
        levels = self.config.levels
        q, s = self._cues(query), self._cues(support)
        norms = query.get("patch_norms")
        logits = self.patch_logits(q.patches, support_labels, class_text, norms) if "s" in levels else None
        phi = functools.reduce(torch.add, self._zoom(q, s, logits, levels).scores.values())  # Eq. 6
        return shot_mean(phi, support_labels, way)

    def loss(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
             query_labels: torch.Tensor, class_text: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """L_ce = cross-entropy of Φ / τ on the episodes (the other terms are in :meth:`batch_loss`)."""
        if "ce" not in self.config.losses:
            return single_stream(query).new_zeros(()), {}
        logits = self(query, support, support_labels, way, class_text) / self.config.temperature
        ce = F.cross_entropy(logits.flatten(0, 1), query_labels.flatten())
        return ce, {"ce": float(ce.detach())}

    def batch_loss(self, videos: Features, labels: torch.Tensor, class_text: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """λ_g L_g + λ_t (L_t + L_tc) + λ_s (L_s + L_sc) on a class-balanced batch (Eq. 7-11).

        videos {m: [B, T, P, D]}, labels [B] in 0..C-1; class_text [C, text_dim] (``text_encoder="minilm"``).
        Every ordered pair (v_i, v_j) is matched with v_i as the query.
        """
        cfg = self.config
        patches = single_stream(videos)
        wanted = [k for k in LOSSES[1:] if k in cfg.losses]
        if not wanted:
            return patches.new_zeros(()), {}
        levels = tuple(k for k in LEVELS if k in wanted)
        cycles = "tc" in wanted or "sc" in wanted
        if cycles and "t" not in levels:
            levels += ("t",)  # the cycle terms need the picked clip pairs
        text = None if class_text is None else class_text[None]
        enc = self.encode(patches[None])  # leading dims [1, B]: the batch is matched against itself
        logits = self.patch_logits(enc.patches, labels[None], text) if {"s", "sc"} & {*wanted} else None
        cues = normalized_cues(enc)
        zoom = self._zoom(cues, cues, logits, levels)
        parts = {k: supervised_contrastive(zoom.scores[k][0], labels, cfg.temperature) for k in LEVELS if k in wanted}
        if cycles:
            parts |= cycle_terms(enc, zoom.clips, zoom.partners, labels, logits, wanted, cfg.cycle_temperature)
        weight = {"g": cfg.lambda_g, "t": cfg.lambda_t, "tc": cfg.lambda_t, "s": cfg.lambda_s, "sc": cfg.lambda_s}
        total = functools.reduce(torch.add, [weight[k] * v for k, v in parts.items()])
        return total, {k: float(v.detach()) for k, v in parts.items()}
