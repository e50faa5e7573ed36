"""M3Net: multi-view encoding, matching and fusion (Tang et al., ACM MM 2023), as a head on patch features.

Paper: "M3Net: Multi-view Encoding, Matching, and Fusion for Few-shot Fine-grained Action Recognition".
Input: every frame's n×n adaptive-pooled feature map, query {m: [E, Q, T, P, D]}, support
{m: [E, W*K, T, P, D]} (P = n²). Implemented (the blocks are in :mod:`._m3net_blocks`):

- multi-view encoding (Sec. 3.3): IFCE (Eq. 1) on each frame's patches, then spatial mean pooling to
  frames [T, D]; IVCE (Eq. 2, frame mixing) and IECE (video mixing -> meta weights of a convolution)
  both read the IFCE frames (Fig. 2: "the inputs of I-V and I-E are first augmented by I-F");
- multi-view matching (Sec. 3.4), each a distance D_v -> logits -D_v [E, Q, way]:
  I-M: on the IFCE frames, M = 1 - cos, the DTW recursion of Sec. 3.4.1 (moves (1,1), (1,0), (0,1)) and
  the mean of M over the path it finds (:func:`._m3net_blocks.dtw_path_mean`), mean over the K shots;
  ``im_alignment="otam"`` uses symmetric OTAM instead, OTAM(M) + OTAM(Mᵀ) (soft-min λ = ``otam_lambda`` in
  :meth:`M3NetHead.loss`, the hard min in ``forward``, equal to the numba kernel of the ``otam``
  matcher); C-M: cross-attention reconstruction D(s→q) + D(q→s) on the IVCE
  frames (:class:`CrossReconstruction`); T-M: Σ over both directions of the mean over frames of the
  Euclidean distance to the nearest frame of the other video, on the IECE frames, mean over K shots;
- multi-view fusion (Sec. 3.5): loss L = Σ_v CE(softmax(-D_v)); prediction Y = Σ_v softmax(-D_v).

Ablation switches (Config): ``views`` lists the matching branches in loss and prediction, each
``"im"``, ``"cm"``, ``"tm"`` (reading the paper's stage: im->ifce, cm->ivce, tm->iece) or
``"<match>@<stage>"`` to read another stage (Table 3); ``predict`` restricts the prediction sum to some
of them (Table 4's single-view Y1/Y2/Y3 of the full model). ``encoders`` lists the encoders that run;
the stage features a view reads are

    ifce = mean_P IFCE(patches) if "ifce" in encoders else mean_P patches   (the backbone's frame)
    ivce = IVCE(ifce) if "ivce" in encoders else ifce
    iece = IECE(ifce) if "iece" in encoders else ifce

so Table 2's rows are e.g. ``views=im encoders=`` (46.53), ``views=cm encoders=ivce`` (68.92),
``views=tm encoders=ifce,iece`` (59.79); Table 3's first column is ``views=im@ifce,im@ivce,im@iece``,
its fourth ``views=im,tm@ivce,cm@iece``; Table 4's model 4 is ``views=cm,tm``. An encoder no view reads
is not built (it would get no gradient). Each C-M view has its own projections.

Per video and per episode (:meth:`M3NetHead.encode_videos` / :meth:`M3NetHead.match`): IFCE (attention
over one frame's patches), the spatial pooling and IVCE (mixing one video's frames) are per video; IECE
mixes videos (the supports with one query, or the whole episode when transductive), so it and every
matching branch (I-M, C-M, T-M) and the fusion are per episode.

Choices where the paper is open or inconsistent:

- I-M: Sec. 3.4.1 is "inspired by OTAM [4]" but prints the three-move DTW recursion from (1, 1) to (t, t)
  and says it "average[s] the similarities over the optimal path with the minimum cumulative cost": that
  is the default (``im_alignment="dtw_mean"``), with the hard minimum in training too (no relaxation is
  printed; the gradient reaches the path's cells). Among paths of equal cost the shortest is taken (the
  paper does not say). Averaging bounds D_1 to [0, 2], so softmax(-D_1) is flat unless training spreads
  the distances (logits are raw, as printed). ``"otam"`` keeps symmetric OTAM as the public OTAM code
  computes it (docs/methods.md, section otam: not normalised, zero-padded support axis, soft-min in
  training).
- IFCE: the learned position embedding is an n×n grid (``patch_grid``, paper n = 4); features with
  another square grid get it resized bilinearly (4 -> 2: the mean of each 2×2 block). The MLP width is
  not given: ``ifce_mlp_ratio``·D (1.0). Attention and MLP are as written: no normalisation layers.
- IVCE: the residual of Eq. 2 carries V + P (P is "applied to V_j" before the block).
- IECE: Eq. 2's token layer is an l×l matrix, which depends on the number and order of videos; the
  paper requires order-insensitivity, so the token layers are the permutation-equivariant linear maps
  a·x_i + b·mean_j x_j + c (see :class:`SetMixing`). "Meta weights ... by a learnable convolution" is
  read as a convolution over time (kernel ``iece_kernel`` = 1) whose input channels are scaled by
  σ(meta weights), with a residual (Fig. 5 says IECE "retains relatively complete original
  information"). ``iece``: "inductive" (default) mixes the N·K supports with one query at a time, so a
  query's scores do not depend on the other queries; "transductive" mixes all Q + S videos of the episode,
  which is what Sec. 3.3.3's text describes ("an input episode ... containing the features of l video
  clips", "the interaction of all videos within an episode"; Sec. 3.1: an episode holds the support and
  the query set). The paper never gives its queries per episode, so a transductive score, which changes
  with their number (5 per class in training, another number at test), is not determined by the paper;
  the inductive set is the same N·K + 1 videos in training and at test.
- C-M: d_k = ``cm_dim`` = 1152 (not given; TRX's value, whose query-centred prototype C-M follows);
  "aggregated" distances are Frobenius norms (the printed ‖·‖); the two directions share W_Q, W_K, W_V
  ("the same cross-attention process"); the prototype-centred norm is divided by √K_c.
- T-M: Euclidean frame distances, as printed; the "similarity" D_ij is a distance and enters as -D_ij.
- Logits are the raw negated distances (no temperature, as printed).
- Optimiser: SGD, lr 1e-4, halved every 2,000 of 60,000 training episodes (Sec. 4.2); no momentum or weight
  decay is given, so none. The paper also fine-tunes the ResNet-50, which a head trained on cached
  features cannot do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fsar.matchers._m3net_blocks import (
    CrossReconstruction,
    FrameMixing,
    IntraEpisodeEncoder,
    IntraFrameEncoder,
    dtw_path_mean,
)
from fsar.matchers._soft import symmetric_otam_distance
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

__all__ = ["M3NetConfig", "M3NetHead", "frame_cosine", "instance_distance", "parse_view", "task_distance"]

PAPER = ("Tang et al., M3Net: Multi-view Encoding, Matching, and Fusion for Few-shot Fine-grained Action "
         "Recognition, ACM MM 2023")
PAPER_STAGE = {"im": "ifce", "cm": "ivce", "tm": "iece"}  # the stage each matching function reads in M3Net
STAGES = ("ifce", "ivce", "iece")
IECE_MODES = ("inductive", "transductive")
ALIGNMENTS = ("dtw_mean", "otam")


@dataclass(frozen=True)
class M3NetConfig:
    """M3Net hyperparameters and ablation switches, each the paper's value or fsar's choice (module docstring)."""

    views: tuple[str, ...] = paper(("im", "cm", "tm"), "Sec. 3.4-3.5, Fig. 2: I-M, C-M, T-M, each on its own "
                                   "stage; 'match@stage' reads another stage (Table 3)")
    predict: tuple[str, ...] = paper((), "Sec. 3.5: Y = Y1 + Y2 + Y3, every view (empty = all of views); one "
                                         "view: Table 4's single-view Y of the full model")
    encoders: tuple[str, ...] = paper(("ifce", "ivce", "iece"), "Sec. 3.3, Fig. 2 (subsets: Table 2)")
    patch_grid: int = paper(4, "Sec. 4.2: IFCE with n = 4 (n x n learned position embedding; other grids "
                               "get it resized bilinearly)")
    ifce_mlp_ratio: float = chosen(1.0, "Sec. 3.3.1 gives IFCE's MLP as three linear layers and two ReLUs, "
                                        "not its width; hidden width = D")
    cm_dim: int = chosen(1152, "d_k of Sec. 3.4.2 is not given; TRX's value, whose query-centred prototype "
                               "C-M follows")
    iece: str = chosen("inductive", "Sec. 3.3.3 mixes all videos of the episode (transductive, the other "
                                    "choice); the paper never gives its queries per episode, so fsar mixes "
                                    "the supports with one query at a time and a query's score does not "
                                    "depend on the other queries")
    iece_token_hidden: int = chosen(1, "Eq. 2's l x l token layer depends on the number and order of videos; "
                                       "its permutation-equivariant form a·x_i + b·mean_j x_j + c, one map")
    iece_kernel: int = chosen(1, "Sec. 3.3.3's 'learnable convolution layer' has no kernel size; 1 (odd "
                                 "sizes convolve over time)")
    im_alignment: str = paper("dtw_mean", "Sec. 3.4.1: D(x,y) = M(x,y) + min{D(x-1,y-1), D(x-1,y), "
                                          "D(x,y-1)}, averaged over the optimal path ('otam': symmetric OTAM)")
    otam_lambda: float = chosen(0.1, "soft-min temperature of I-M in training, only with im_alignment=otam "
                                     "(the printed DTW has none); OTAM's usual value")


def parse_view(view: str) -> tuple[str, str]:
    """``"im"`` -> ("im", "ifce"); ``"cm@iece"`` -> ("cm", "iece"): (matching function, stage read)."""
    match, _, stage = view.partition("@")
    if match not in PAPER_STAGE:
        raise ValueError(f"view {view!r}: matching must be one of {sorted(PAPER_STAGE)}")
    stage = stage or PAPER_STAGE[match]
    if stage not in STAGES:
        raise ValueError(f"view {view!r}: stage must be one of {STAGES}")
    return match, stage


def frame_cosine(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Cosine of every frame pair: [E, Q, T, D] x [E, S, T, D] -> [E, Q, S, T, T] float32 (one matmul)."""
    e, nq, t1, d = query.shape
    ns, t2 = support.shape[1], support.shape[2]
    q = F.normalize(query.float(), dim=-1).reshape(e, nq * t1, d)
    s = F.normalize(support.float(), dim=-1).reshape(e, ns * t2, d)
    return (q @ s.transpose(1, 2)).view(e, nq, t1, ns, t2).permute(0, 1, 3, 2, 4)


def instance_distance(query: torch.Tensor, support: torch.Tensor, lam: float | None,
                      alignment: str = "dtw_mean") -> torch.Tensor:
    """I-M pair distance on M = 1 - cos: [E, Q, T, D] x [E, S, T, D] -> [E, Q, S].

    ``alignment``: "dtw_mean", the mean of M over the DTW path (Sec. 3.4.1, ``lam`` unused), or "otam",
    OTAM(M) + OTAM(Mᵀ) with soft-min temperature ``lam`` (None = hard min, equal to
    :func:`fsar.matchers.otam.pair_distance`).
    """
    cost = 1.0 - frame_cosine(query, support)
    if alignment == "otam":
        return symmetric_otam_distance(cost, lam)
    return dtw_path_mean(cost)


def task_distance(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """T-M pair distance (Sec. 3.4.3): [E, Q, T, D] x [E, S, T, D] -> [E, Q, S] float32.

    D_ij = (1/t) Σ_x min_y ‖f_x − g_y‖ + (1/t) Σ_y min_x ‖g_y − f_x‖ (f: query frames, g: support frames).
    """
    e, nq, t1, d = query.shape
    ns, t2 = support.shape[1], support.shape[2]
    dist = torch.cdist(query.float().reshape(e, nq * t1, d), support.float().reshape(e, ns * t2, d))
    dist = dist.view(e, nq, t1, ns, t2).transpose(2, 3)  # [E, Q, S, T, T]
    return dist.amin(dim=-1).mean(dim=-1) + dist.amin(dim=-2).mean(dim=-1)


class _Pairs(NamedTuple):
    """What a matching function compares: query [E', Q', T, D], support [E', S, T, D], labels [E', S].

    E' = E, Q' = Q, except for inductive IECE (``iece="inductive"``): one set per query, E' = E·Q, Q' = 1.
    """

    query: torch.Tensor
    support: torch.Tensor
    labels: torch.Tensor


@register("m3net", kind="learned", paper=PAPER, needs_patches=True)
class M3NetHead(Head):
    """M3Net: IFCE/IVCE/IECE encoders, I-M/C-M/T-M matching, sum of the branches' softmaxes.

    Tang et al., ACM MM 2023 (module docstring: equations, switches, choices).
    query {m: [E, Q, T, P, D]}, support {m: [E, W*K, T, P, D]}, support_labels [E, W*K] -> [E, Q, way]
    = Σ over the ``predict`` views of softmax(-D_v) (in [0, number of views]; higher = more similar).
    """

    Config = M3NetConfig
    eval_params = frozenset({"predict"})  # Table 4: single-branch predictions of the fused model
    defaults = TrainDefaults(
        optimizer="sgd", lr=1e-4, momentum=0.0, weight_decay=0.0, clip_norm=None, tasks_per_step=1,
        lr_decay_every=2_000, lr_decay=0.5, budget=60_000,
        origins={
            "optimizer": "paper: Sec. 4.2 (the SGD optimizer)",
            "lr": "paper: Sec. 4.2 (initialized learning rate of 1e-4)",
            "momentum": "fsar: not given (Sec. 4.2 names only SGD and its learning rate); plain SGD",
            "weight_decay": "fsar: not given; none",
            "clip_norm": "fsar: not given; no clipping",
            "tasks_per_step": "fsar: the paper does not say how many episodes make one step; one",
            "lr_decay_every": "paper: Sec. 4.2 (decaying after every 2,000 episodes)",
            "lr_decay": "paper: Sec. 4.2 (decaying by 0.5)",
            "budget": "paper: Sec. 4.2 (training continues for 60,000 episodes on all datasets)",
        },
    )
    # Per query-class pair C-M holds t x 1152 prototypes and K·t x 1152 reconstructions; every video also
    # runs through IFCE's D x D maps at each of its T·P patches.
    eval_pairs = 1024

    def __init__(self, dims: Mapping[str, int], frames: int, config: M3NetConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: M3NetConfig = self.config
        if len(self.dims) != 1:
            raise ValueError(f"m3net reads one modality, got {sorted(self.dims)}")
        self.views = self._check_views(cfg)
        self.predicted = tuple(parse_view(v) for v in cfg.predict) if cfg.predict else self.views
        if not set(self.predicted) <= set(self.views):
            raise ValueError(f"predict {cfg.predict} must be a subset of views {cfg.views}")
        unknown = sorted(set(cfg.encoders) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown encoder(s) {unknown}; encoders are {STAGES}")
        if cfg.iece not in IECE_MODES:
            raise ValueError(f"iece must be one of {IECE_MODES}, got {cfg.iece!r}")
        if cfg.im_alignment not in ALIGNMENTS:
            raise ValueError(f"im_alignment must be one of {ALIGNMENTS}, got {cfg.im_alignment!r}")
        dim = next(iter(self.dims.values()))
        read = {stage for _, stage in self.views}
        self.ifce = (IntraFrameEncoder(dim, cfg.patch_grid, max(1, round(cfg.ifce_mlp_ratio * dim)))
                     if "ifce" in cfg.encoders else None)
        self.ivce = FrameMixing(dim, frames) if "ivce" in cfg.encoders and "ivce" in read else None
        self.iece = (IntraEpisodeEncoder(dim, cfg.iece_token_hidden, cfg.iece_kernel)
                     if "iece" in cfg.encoders and "iece" in read else None)
        self.cross = nn.ModuleDict({_key(v): CrossReconstruction(dim, cfg.cm_dim) for v in self.views if v[0] == "cm"})

    @staticmethod
    def _check_views(cfg: M3NetConfig) -> tuple[tuple[str, str], ...]:
        views = tuple(parse_view(v) for v in cfg.views)
        if not views:
            raise ValueError("views must name at least one matching branch (im, cm, tm)")
        if len(set(views)) != len(views):
            raise ValueError(f"views {cfg.views} name a branch twice")
        return views

    def _frames(self, videos: torch.Tensor) -> torch.Tensor:
        """IFCE (if on) and spatial mean pooling: [E, N, T, P, D] (or [E, N, T, D]) -> [E, N, T, D]."""
        if videos.dim() == 4:  # frame features without a patch grid: one patch per frame
            videos = videos[..., None, :]
        return (self.ifce(videos) if self.ifce is not None else videos).mean(dim=-2)

    def _episode_stage(self, frames: torch.Tensor, queries: int) -> tuple[torch.Tensor, torch.Tensor]:
        """IECE over each episode's Q + S videos: frames [E, Q+S, T, D] -> (query, support) frames."""
        assert self.iece is not None
        out = self.iece(frames)
        return out[:, :queries], out[:, queries:]

    def _query_stage(self, frames: torch.Tensor, queries: int) -> tuple[torch.Tensor, torch.Tensor]:
        """IECE over the supports + one query: frames [E, Q+S, T, D] -> query [E·Q, 1, ..], support [E·Q, S, ..]."""
        assert self.iece is not None
        query, support = frames[:, :queries], frames[:, queries:]
        e, s = support.shape[:2]
        sets = torch.cat([query[:, :, None], support[:, None].expand(e, queries, *support.shape[1:])], dim=2)
        out = self.iece(sets)  # [E, Q, 1 + S, T, D]
        return out[:, :, :1].flatten(0, 1), out[:, :, 1:].flatten(0, 1)

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part: IFCE and spatial pooling, then IVCE when a view reads it,
        {m: [E, N, T, P, D]} -> {"ifce": [E, N, T, D]} (+ {"ivce": [E, N, T, D]})."""
        frames = self._frames(single_stream(videos))
        return {"ifce": frames} | ({"ivce": self.ivce(frames)} if self.ivce is not None else {})

    def stages(self, query: Features, support: Features, support_labels: torch.Tensor) -> dict[str, _Pairs]:
        """The encoded features each read stage offers the matching functions (module docstring)."""
        return self._stages(*self.encode_pair(query, support), support_labels)  # every video through IFCE once

    def _stages(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor) -> dict[str, _Pairs]:
        """:meth:`stages` from encoded videos: IECE, which mixes videos of the episode, runs here."""
        nq = query["ifce"].shape[1]
        frames = torch.cat([query["ifce"], support["ifce"]], dim=1)
        base = _Pairs(query["ifce"], support["ifce"], support_labels)
        out: dict[str, _Pairs] = {}
        for stage in {stage for _, stage in self.views}:
            if stage == "ivce" and self.ivce is not None:
                out[stage] = _Pairs(query["ivce"], support["ivce"], support_labels)
            elif stage == "iece" and self.iece is not None and self.config.iece == "inductive":
                out[stage] = _Pairs(*self._query_stage(frames, nq), support_labels.repeat_interleave(nq, dim=0))
            elif stage == "iece" and self.iece is not None:
                out[stage] = _Pairs(*self._episode_stage(frames, nq), support_labels)
            else:
                out[stage] = base
        return out

    def _distances(self, view: tuple[str, str], pairs: _Pairs, way: int, lam: float | None) -> torch.Tensor:
        """D_v of one view: [E', Q', way] (class distances; K shots averaged for I-M and T-M)."""
        match, _ = view
        if match == "cm":
            return self.cross[_key(view)](pairs.query, pairs.support, pairs.labels, way)
        pair = instance_distance(pairs.query, pairs.support, lam, self.config.im_alignment) if match == "im" \
            else task_distance(pairs.query, pairs.support)
        return shot_mean(pair, pairs.labels, way)

    def branch_logits(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
                      soft: bool = False) -> dict[str, torch.Tensor]:
        """-D_v of every view, keyed "im@ifce" etc.: {view: [E, Q, way] float32}.

        ``soft``: training; with ``im_alignment="otam"`` I-M uses the soft-min OTAM (λ = ``otam_lambda``)
        instead of the hard min (the printed DTW path mean has no soft form and is the same in both).
        """
        return self._branch_logits(*self.encode_pair(query, support), support_labels, way, soft)

    def _branch_logits(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
                       soft: bool) -> dict[str, torch.Tensor]:
        stages = self._stages(query, support, support_labels)
        e, nq = support_labels.shape[0], query["ifce"].shape[1]
        lam = self.config.otam_lambda if soft else None
        return {_key(v): -self._distances(v, stages[v[1]], way, lam).reshape(e, nq, way) for v in self.views}

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              **_: object) -> torch.Tensor:
        """The per-episode part: IECE, the matching branches and the sum of their softmaxes -> [E, Q, way]."""
        logits = self._branch_logits(query, support, support_labels, way, soft=False)
        return torch.stack([logits[_key(v)].softmax(dim=-1) for v in self.predicted]).sum(dim=0)

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        return self.match(*self.encode_pair(query, support), support_labels, way)

    def loss(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
             query_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """L = Σ_v CE(softmax(-D_v), y) over ``views`` (matching-losses fusion; soft OTAM if I-M uses OTAM)."""
        logits = self.branch_logits(query, support, support_labels, way, soft=True)
        target = query_labels.flatten()
        losses = {name: F.cross_entropy(value.flatten(0, 1), target) for name, value in logits.items()}
        total = torch.stack(list(losses.values())).sum()
        return total, {name: float(value.detach()) for name, value in losses.items()}


def _key(view: tuple[str, str]) -> str:
    """"im@ifce": the name of a view in logits, losses and module keys."""
    return f"{view[0]}@{view[1]}"
