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
- final score: weighted average of Score^r_ota, Score^r_km, Score^f_ota, Score^f_km (Sec. 3.2).

Training loss = Σ_m (L^m_ota + L^m_km) + contrastive_weight · L_cl. Training uses the soft-min OTAM of
:mod:`fsar.matchers._soft` (λ = ``otam_lambda``); :meth:`TSJMHead.forward` uses the hard min, equal to
the numba evaluation kernel. KM takes its assignment from :func:`fsar.matchers.kernels.max_weight_matching`
on detached similarities; the gradient flows through the matched similarity entries only.
With K shots a class score is the mean of its K pair scores, as in the parameter-free ``jmm``.

Choices the paper leaves open (all are Config fields):

- adapter: reduction ratio r = 4, ReLU, not residual. The paper says only "two fully connected layers
  and an activation layer" projecting "into a new feature space"; r = 4 and ReLU are the common
  bottleneck-adapter values. ``residual=True`` gives x + adapter(x) instead.
- contrastive descriptors: the temporal mean of a video's adapted frame features, L2-normalised (the
  "global high-level feature"; the "cross-attention" the paper mentions is not specified, so similarity
  is the cosine). The videos contrasted are all query and support videos of one episode. Eq. 2 as
  printed (a sum of positives over a sum of negatives) is read as the CPC InfoNCE it cites: for each
  video a softmax over its pairings with every other-modality descriptor, averaged over both
  directions (rgb -> flow and flow -> rgb). τ = 0.07 (not given in the paper; the MoCo/CLIP value).
- "DTW" f(·) of Eq. 4 is OTAM, the baseline [12] the paper builds on (its ablation's "Baseline").
- score fusion: equal weights; logits are the raw -D_v and sim_v (Eq. 5 and 8 put no temperature on
  them), and the average is of those raw scores (the parameter-free ``jmm`` z-normalises per episode
  instead, since it cannot learn the scales). With ``adapter=False`` the head would have no parameter,
  so it then keeps one learnable logit scale exp(s) (s = 0 at start) multiplying every component
  score; with adapters it has none.
- OTAM soft-min λ = 0.1 (the paper gives none; OTAM's usual value). The paper's loss weights are not
  given: every cross-entropy term and the InfoNCE term weigh 1.
- the optimiser: Adam, lr 1e-5 (Sec. 4.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsar.matchers import kernels
from fsar.matchers._soft import symmetric_otam_distance
from fsar.matchers.head import Features, Head, TrainDefaults, shot_mean
from fsar.matchers.registry import register

__all__ = ["Adapter", "TSJMConfig", "TSJMHead", "frame_cosine", "info_nce", "matched_similarity", "pair_scores",
           "sim_scores"]

PAPER = ("Deng et al., Two-Stream Joint Matching based on Contrastive Learning for Few-Shot Action Recognition "
         "(TSJM), arXiv:2401.04150, 2024")
MODALITIES = ("rgb", "flow")
MATCHINGS = {"jmm": ("otam", "km"), "otam": ("otam",), "km": ("km",)}
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class TSJMConfig:
    """TSJM hyperparameters (see the module docstring for which the paper gives)."""

    adapter: bool = True  # ablation: False passes features through unchanged (adds a learnable logit scale)
    reduction: int = 4  # adapter bottleneck width = D // reduction
    activation: str = "relu"  # "relu" or "gelu"
    residual: bool = False  # x + adapter(x) instead of adapter(x)
    contrastive: bool = True  # ablation: the InfoNCE term (MCL) on/off
    temperature: float = 0.07  # τ of Eq. 2
    contrastive_weight: float = 1.0
    matching: str = "jmm"  # ablation: "jmm" = OTAM + KM, "otam" = OTAM only, "km" = KM only
    otam_lambda: float = 0.1  # soft-min temperature of OTAM in training
    rgb_otam_weight: float = 1.0  # weights of the final weighted average of the component scores
    rgb_km_weight: float = 1.0
    flow_otam_weight: float = 1.0
    flow_km_weight: float = 1.0


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


@register("tsjm", kind="learned", paper=PAPER, needs_flow=True)
class TSJMHead(Head):
    """Two-stream joint matching (TSJM): adapters + RGB/flow InfoNCE + OTAM and KM scores per stream.

    query = {"rgb": [E, Q, T, D], "flow": [E, Q, T, D]}, support likewise with W*K videos -> [E, Q, way]:
    the weighted average of the class scores rgb-otam, rgb-km, flow-otam, flow-km (those that
    ``matching`` selects). See the module docstring for the equations and the choices made.
    """

    Config = TSJMConfig
    defaults = TrainDefaults(optimizer="adam", lr=1e-5)

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
        """Weighted average of the component scores, each [E, Q, way] -> [E, Q, way]."""
        total = sum(self.weights.values())
        fused = torch.zeros_like(components[next(iter(self.weights))])
        for name, weight in self.weights.items():
            fused = fused + (weight / total) * components[name]
        return fused

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        """Evaluation scores with the hard-min OTAM: [E, Q, way], higher = more similar."""
        return self.fuse(self.component_scores(query, support, support_labels, way, lam=None))

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
