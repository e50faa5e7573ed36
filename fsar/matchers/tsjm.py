"""TSJM: Two-Stream Joint Matching based on contrastive learning, as a head trained on cached features.

Paper: Deng et al., "Two-Stream Joint Matching based on Contrastive Learning for Few-Shot Action
Recognition" (TSJM, arXiv:2401.04150): a multi-modal contrastive learning module (MCL, Sec. 3.3) and a
joint matching module (JMM, Sec. 3.4) over RGB and optical-flow frame features. Implemented here, for
each modality m in {rgb, flow}:

- Eq. 1, adapter:  x^m = W_up σ(W_down Φ(X^m) + b_down) + b_up, a bottleneck D -> D/r -> D applied to
  every frame feature (one adapter per modality);
- Eq. 2, InfoNCE (CPC form) between the video descriptors of the two modalities (:func:`info_nce`);
- Eq. 3-5, ordered temporal matching: D_f(l, m) = 1 - cos, D_v = OTAM(D_f) + OTAM(D_fᵀ) (the symmetric
  distance of :mod:`fsar.matchers.otam`), logits -D_v, cross-entropy L^m_ota;
- Eq. 6-8, bipartite matching: sim_v = sum of the frame cosines matched by Kuhn-Munkres, logits sim_v,
  cross-entropy L^m_km;
- final score: weighted average of Score^r_ota, Score^r_km, Score^f_ota, Score^f_km (Sec. 3.2), each
  z-normalised per episode first (:func:`episode_zscore`, see below).

Training loss = Σ_m (L^m_ota + L^m_km) + contrastive_weight · L_cl. Training uses the soft-min OTAM of
:mod:`fsar.matchers._soft` (λ = ``otam_lambda``); :meth:`TSJMHead.forward` uses the hard min, equal to
the numba evaluation kernel. KM takes its assignment from :func:`fsar.matchers.kernels.max_weight_matching`
on detached similarities; the gradient flows through the matched similarity entries only.
With K shots a class score is the mean of its K pair scores, as in the parameter-free ``jmm``.

Per video and per episode (:meth:`TSJMHead.encode_videos` / :meth:`TSJMHead.match`): the adapters act on
each frame of one video, so they are per video; OTAM and KM of every (query, support) pair and the
per-episode z-normalisation of the components are per episode.

Choices the paper leaves open (Config fields unless said otherwise; each field's declaration says
whether its default is the paper's or fsar's):

- adapter: reduction ratio r = 4, ReLU, not residual. The paper says only "two fully connected layers
  and an activation layer" projecting "into a new feature space" (Sec. 3.3) and writes
  x = Adapter(Φ(X)) (Eq. 1, no skip connection); r = 4 and ReLU are the common bottleneck-adapter
  values. ``residual=True`` gives x + adapter(x) instead.
- contrastive descriptors: the temporal mean of a video's adapted frame features, L2-normalised (the
  "global high-level feature"; the "cross-attention" the paper mentions is not specified, so similarity
  is the cosine). The videos contrasted are all query and support videos of one episode. Eq. 2 as
  printed (a sum of positives over a sum of negatives) is read as the CPC InfoNCE it cites: for each
  video a softmax over its pairings with every other-modality descriptor, averaged over both
  directions (rgb -> flow and flow -> rgb). τ = 0.07 (not given in the paper; the MoCo/CLIP value).
- "DTW" f(·) of Eq. 4 is OTAM, the baseline [12] the paper builds on (its ablation's "Baseline").
- score fusion: the paper gives neither the weights nor a normalisation. A raw OTAM distance sums about
  2T frame costs while KM sums T cosines, so a plain average of raw scores is decided by whichever
  component spreads most (OTAM). Each component is therefore z-normalised per episode, over its
  Q x way scores (:func:`episode_zscore`, the torch form of
  :func:`fsar.matchers.fusion.episode_zscore` that ``jmm`` uses), and the z-scores are averaged with
  equal weights. Learned fusion weights were the alternative; they were not taken because the paper's
  losses (Eq. 5, 8) train each component on its own, so nothing in the objective would fit them, and
  z-normalisation makes every term count from the first step on. Like ``jmm``, a query's fused score
  then depends on its episode's other queries through each component's mean and spread.
- the training losses stay on the raw -D_v and sim_v (Eq. 5 and 8 put no temperature on them).
- ``adapter=False`` passes the features through unchanged. The head would then have no parameter, so
  it keeps one learnable logit scale exp(s) (s = 0 at start) multiplying every component score. The
  scale tempers the training cross-entropies only: one positive factor on every component cancels in
  the z-normalisation, so with the default weights the prediction is the equal-weight z-normalised
  fusion of ``jmm``'s four components divided by four, ranking classes as
  ``fsar eval --matcher jmm --modality rgb+flow --weights paper`` does, whatever training does.
- OTAM soft-min λ = 0.1 (the paper gives none; OTAM's usual value). The paper's loss weights are not
  given: every cross-entropy term and the InfoNCE term weigh 1.
- the optimiser: Adam, lr 1e-5 (Sec. 4.2); the paper gives no weight decay, clipping, schedule or
  training length, so there are none (and no budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsar.matchers import kernels
from fsar.matchers._soft import symmetric_otam_distance
from fsar.matchers.head import Features, Head, TrainDefaults, VideoCodes, chosen, paper, shot_mean
from fsar.matchers.registry import register

__all__ = ["Adapter", "TSJMConfig", "TSJMHead", "episode_zscore", "frame_cosine", "info_nce", "matched_similarity",
           "pair_scores", "sim_scores"]

PAPER = ("Deng et al., Two-Stream Joint Matching based on Contrastive Learning for Few-Shot Action Recognition "
         "(TSJM), arXiv:2401.04150, 2024")
MODALITIES = ("rgb", "flow")
MATCHINGS = {"jmm": ("otam", "km"), "otam": ("otam",), "km": ("km",)}
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
_EPS = 1e-6  # as fsar.matchers.fusion: an episode whose scores spread less than this maps to zeros


_FUSION_WEIGHT = ("Sec. 3.2 fuses the four scores by a weighted average without giving the weights; equal "
                  "weights on the per-episode z-normalised scores")


@dataclass(frozen=True)
class TSJMConfig:
    """TSJM hyperparameters, each the paper's value or fsar's choice (see the module docstring)."""

    adapter: bool = paper(True, "Sec. 3.3, Eq. 1, Table 2 (False: the ablation without adapters, features pass "
                                "through unchanged and one learnable logit scale is kept)")
    reduction: int = chosen(4, "not given (Sec. 3.3: the first FC projects to 'a lower-dimensional space'); "
                               "bottleneck width D // 4, the usual bottleneck-adapter ratio")
    activation: str = chosen("relu", "Sec. 3.3 names only 'an activation layer'; ReLU, the usual choice "
                                     "(or gelu)")
    residual: bool = paper(False, "Eq. 1: x = Adapter(Φ(X)), no skip connection (True: x + adapter(x))")
    contrastive: bool = paper(True, "Sec. 3.3, Eq. 2, Table 2 (MCL; False: the ablation without it)")
    temperature: float = chosen(0.07, "τ of Eq. 2 is not given; 0.07, the common InfoNCE temperature "
                                      "(MoCo, CLIP's initial value)")
    contrastive_weight: float = chosen(1.0, "the paper gives no loss weights; the terms are summed unweighted")
    matching: str = paper("jmm", "Sec. 3.4, Table 2: JMM = OTAM + KM ('otam' or 'km' alone: ablations)")
    otam_lambda: float = chosen(0.1, "soft-min temperature of OTAM in training, not in the paper (its f of "
                                     "Eq. 4 is DTW, read as OTAM); OTAM's usual value")
    rgb_otam_weight: float = chosen(1.0, _FUSION_WEIGHT)
    rgb_km_weight: float = chosen(1.0, _FUSION_WEIGHT)
    flow_otam_weight: float = chosen(1.0, _FUSION_WEIGHT)
    flow_km_weight: float = chosen(1.0, _FUSION_WEIGHT)


class Adapter(nn.Module):
    """Bottleneck adapter (TSJM Eq. 1): FC D -> D//r, activation, FC D//r -> D; [..., D] -> [..., D]."""

    def __init__(self, dim: int, reduction: int, activation: str, residual: bool) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        hidden = max(1, dim // reduction)
        self.net = nn.Sequential(nn.Linear(dim, hidden), _ACTIVATIONS[activation](), nn.Linear(hidden, dim))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return x + out if self.residual else out


def info_nce(rgb: torch.Tensor, flow: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between the two modalities of the same videos (TSJM Eq. 2, CPC form).

    rgb, flow: [..., N, D] descriptors of N videos (row i of both = video i) -> scalar. With
    s_ij = cos(rgb_i, flow_j) / τ:

        L = 1/(2N) Σ_i [ -log softmax_j(s_ij)[i]  -log softmax_j(s_ji)[i] ]

    (averaged over the leading axes too): the pair (rgb_i, flow_i) is the positive, every pairing of
    video i's descriptor with another video's descriptor of the other modality a negative.
    """
    if rgb.shape != flow.shape or rgb.dim() < 2:
        raise ValueError(f"rgb and flow must both be [..., N, D], got {tuple(rgb.shape)} and {tuple(flow.shape)}")
    logits = F.normalize(rgb, dim=-1) @ F.normalize(flow, dim=-1).transpose(-1, -2) / temperature
    n = logits.shape[-1]
    flat = logits.reshape(-1, n, n)
    target = torch.arange(n, device=logits.device).expand(flat.shape[0], n).reshape(-1)
    rgb_to_flow = F.cross_entropy(flat.reshape(-1, n), target)
    flow_to_rgb = F.cross_entropy(flat.transpose(1, 2).reshape(-1, n), target)
    return (rgb_to_flow + flow_to_rgb) / 2


def frame_cosine(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Cosine of every frame pair (TSJM Eq. 6). [E, Q, T1, D] x [E, S, T2, D] -> [E, Q, S, T1, T2].

    One batched matmul on normalised frames: broadcasting [E, Q, 1, T, D] against [E, 1, S, T, D]
    would first copy the features once per pair.
    """
    e, nq, t1, d = query.shape
    ns, t2 = support.shape[1], support.shape[2]
    q = F.normalize(query, dim=-1).reshape(e, nq * t1, d)
    s = F.normalize(support, dim=-1).reshape(e, ns * t2, d)
    return (q @ s.transpose(1, 2)).view(e, nq, t1, ns, t2).permute(0, 1, 3, 2, 4)


def matched_similarity(sim: torch.Tensor) -> torch.Tensor:
    """Sum of the similarities matched by Kuhn-Munkres (TSJM Eq. 7). sim: [..., T1, T2] -> [...].

    The assignment comes from the numba kernel on detached values; the result gathers the matched
    entries of ``sim``, so the gradient reaches exactly those entries (with weight 1) and no other.
    """
    t1, t2 = sim.shape[-2], sim.shape[-1]
    flat = sim.reshape(-1, t1, t2)
    _, assignment = kernels.max_weight_matching(flat.detach().to(torch.float32).cpu().numpy())
    cols = torch.from_numpy(assignment).to(sim.device)
    picked = flat.gather(-1, cols.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # [B, T1]
    picked = torch.where(cols >= 0, picked, torch.zeros_like(picked))  # rows left unmatched when T1 > T2
    return picked.sum(-1).reshape(sim.shape[:-2])


def pair_scores(query: torch.Tensor, support: torch.Tensor, matchings: tuple[str, ...],
                lam: float | None) -> dict[str, torch.Tensor]:
    """Per-pair scores of one modality: [E, Q, T, D] x [E, S, T, D] -> {"otam"/"km": [E, Q, S]}.

    "otam" = -(OTAM(D_f) + OTAM(D_fᵀ)) with D_f = 1 - cos (Eq. 3-4; soft-min λ = ``lam``, hard if None),
    "km" = matched cosine sum (Eq. 6-7); higher = more similar.
    """
    return sim_scores(frame_cosine(query, support), matchings, lam)


def sim_scores(sim: torch.Tensor, matchings: tuple[str, ...], lam: float | None) -> dict[str, torch.Tensor]:
    """:func:`pair_scores` from the frame cosines: sim [..., T1, T2] -> {"otam"/"km": [...]}."""
    scores: dict[str, torch.Tensor] = {}
    if "otam" in matchings:
        scores["otam"] = -symmetric_otam_distance(1.0 - sim, lam)
    if "km" in matchings:
        scores["km"] = matched_similarity(sim)
    return scores


def episode_zscore(scores: torch.Tensor) -> torch.Tensor:
    """Standardise each episode's scores over its Q x way entries: [E, Q, W] -> [E, Q, W], differentiable.

    The torch form of :func:`fsar.matchers.fusion.episode_zscore` (population standard deviation; an
    episode whose scores spread less than 1e-6 maps to zeros, with a zero gradient).
    """
    mean = scores.mean(dim=(1, 2), keepdim=True)
    centred = scores - mean
    var = centred.square().mean(dim=(1, 2), keepdim=True)
    # The clamp keeps sqrt's gradient finite in constant episodes; where() then discards them.
    std = var.clamp_min(_EPS**2).sqrt()
    return torch.where(var > _EPS**2, centred / std, torch.zeros_like(centred))


@register("tsjm", kind="learned", paper=PAPER, needs_flow=True)
class TSJMHead(Head):
    """Two-stream joint matching (TSJM): adapters + RGB/flow InfoNCE + OTAM and KM scores per stream.

    query = {"rgb": [E, Q, T, D], "flow": [E, Q, T, D]}, support likewise with W*K videos -> [E, Q, way]:
    the weighted average of the per-episode z-normalised class scores rgb-otam, rgb-km, flow-otam,
    flow-km (those that ``matching`` selects). See the module docstring for the equations and the choices
    made.
    """

    Config = TSJMConfig
    defaults = TrainDefaults(
        optimizer="adam", lr=1e-5, weight_decay=0.0, clip_norm=None, tasks_per_step=1, lr_decay_every=0, budget=0,
        origins={
            "optimizer": "paper: Sec. 4.2 (Adam)",
            "lr": "paper: Sec. 4.2 (10^-5)",
            "momentum": "fsar: unused by Adam (its betas are PyTorch's defaults; the paper gives none)",
            "weight_decay": "fsar: not given (Sec. 4.2 names only Adam and its learning rate); none",
            "clip_norm": "fsar: not given; no clipping",
            "tasks_per_step": "fsar: the paper does not say how many episodes make one step; one",
            "lr_decay_every": "fsar: the paper gives no schedule; constant learning rate",
            "lr_decay": "fsar: unused (no decay)",
            "budget": "fsar: the paper does not give its number of training episodes",
        },
    )

    def __init__(self, dims: Mapping[str, int], frames: int, config: TSJMConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: TSJMConfig = self.config
        if set(self.dims) != set(MODALITIES):
            raise ValueError(f"tsjm reads the modalities {MODALITIES}, got {sorted(self.dims)}")
        if cfg.matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {sorted(MATCHINGS)}, got {cfg.matching!r}")
        if cfg.contrastive and self.dims["rgb"] != self.dims["flow"]:
            raise ValueError(f"the contrastive term needs equal rgb and flow dims, got {self.dims}")
        if cfg.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
        self.weights = {f"{m}-{k}": float(getattr(cfg, f"{m}_{k}_weight"))
                        for m in MODALITIES for k in MATCHINGS[cfg.matching]}
        if sum(self.weights.values()) <= 0 or min(self.weights.values()) < 0:
            raise ValueError(f"score weights must be >= 0 with a positive sum, got {self.weights}")
        self.adapters = nn.ModuleDict()
        self.logit_scale: nn.Parameter | None = None
        if cfg.adapter:
            for m in MODALITIES:
                self.adapters[m] = Adapter(self.dims[m], cfg.reduction, cfg.activation, cfg.residual)
        else:
            # Without adapters the head would have nothing to train; the scale leaves the ranking of
            # every component unchanged and starts at 1, so the untrained head equals jmm's components.
            self.logit_scale = nn.Parameter(torch.zeros(()))

    def adapt(self, features: Features) -> Features:
        """Adapter of each modality over every frame (Eq. 1); identity with ``adapter=False``."""
        missing = [m for m in MODALITIES if m not in features]
        if missing:
            raise ValueError(f"tsjm needs the modalities {MODALITIES}; missing {missing}")
        out = {m: features[m].to(torch.float32) for m in MODALITIES}
        if not self.config.adapter:
            return out
        return {m: self.adapters[m](x) for m, x in out.items()}

    def component_scores(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
                         lam: float | None = None) -> dict[str, torch.Tensor]:
        """Class scores {"<modality>-<otam|km>": [E, Q, way]} of the adapted features (logit scale applied)."""
        return self._components(self.adapt(query), self.adapt(support), support_labels, way, lam)

    def _components(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
                    lam: float | None) -> dict[str, torch.Tensor]:
        # Both streams go through one OTAM recursion: its cost is Python overhead per cell, not arithmetic.
        sims = torch.stack([frame_cosine(query[m], support[m]) for m in MODALITIES])  # [M, E, Q, S, T, T]
        scale = self.logit_scale.exp() if self.logit_scale is not None else None
        scores: dict[str, torch.Tensor] = {}
        for kind, pairs in sim_scores(sims, MATCHINGS[self.config.matching], lam).items():
            for m, modality_pairs in zip(MODALITIES, pairs, strict=True):
                classes = shot_mean(modality_pairs, support_labels, way)
                scores[f"{m}-{kind}"] = classes * scale if scale is not None else classes
        return scores

    def fuse(self, components: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted average of the per-episode z-normalised component scores, each [E, Q, way] -> [E, Q, way].

        Raw scores would let the component with the widest spread (OTAM's summed costs) decide alone.
        """
        total = sum(self.weights.values())
        fused = torch.zeros_like(components[next(iter(self.weights))])
        for name, weight in self.weights.items():
            fused = fused + (weight / total) * episode_zscore(components[name])
        return fused

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part: each modality's adapter over every frame, {m: [E, N, T, D]} -> same shapes."""
        return self.adapt(videos)

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              **_: object) -> torch.Tensor:
        """The per-episode part: OTAM/KM of every pair, each component z-normalised per episode, fused."""
        return self.fuse(self._components(query, support, support_labels, way, None))

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        """Evaluation scores with the hard-min OTAM, fused by :meth:`fuse`: [E, Q, way], higher = more similar."""
        return self.match(self.adapt(query), self.adapt(support), support_labels, way)

    def loss(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
             query_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ cross-entropy of each component (soft OTAM) + contrastive_weight · InfoNCE (if on)."""
        cfg: TSJMConfig = self.config
        q, s = self.adapt(query), self.adapt(support)
        targets = query_labels.flatten()
        parts: dict[str, torch.Tensor] = {
            name: F.cross_entropy(logits.flatten(0, 1), targets)
            for name, logits in self._components(q, s, support_labels, way, cfg.otam_lambda).items()
        }
        total = torch.stack(list(parts.values())).sum()
        if cfg.contrastive:
            # Video descriptor = temporal mean of the adapted frames; every video of the episode takes part.
            rgb, flow = (torch.cat([q[m], s[m]], dim=1).mean(dim=2) for m in MODALITIES)
            parts["infonce"] = info_nce(rgb, flow, cfg.temperature)
            total = total + cfg.contrastive_weight * parts["infonce"]
        return total, {name: float(value.detach()) for name, value in parts.items()}
