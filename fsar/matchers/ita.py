"""Implicit temporal alignment with an LSTM, trained with circle loss (Cao et al., 2021).

Paper: Cao, Li, Lv, Wang, Zhang, "Few-shot Action Recognition with Implicit Temporal Alignment and Pair
Similarity Optimization", Computer Vision and Image Understanding 210, 2021 (arXiv:2010.06215).

What is implemented:

- Sec. 3.3, Eq. 3-7: an LSTM (hidden 512, the best of Table 2) runs over the T frame features of a video;
  its last hidden state h^T is the video descriptor A(x).
- Eq. 8: cosine similarity of descriptors; for K > 1 shots the descriptors of a class's supports are
  averaged into a prototype first (Sec. 3.3, last paragraph). ``forward`` returns these cosines [E, Q, way].
- Sec. 3.4, Eq. 11-12 with O_p = 1 + m, O_n = -m, Δ_p = 1 - m, Δ_n = m: circle loss per query,
  :func:`circle_loss`. The weights α_p = [O_p - s_p]_+, α_n = [s_n - O_n]_+ are treated as constants
  in backpropagation (detached), as in Sun et al. (CVPR 2020); that is what gives the gradients of
  Eq. 14-15.
- Table 3's ablation: ``loss="ce"`` is cross-entropy over γ·cos.

Per video and per episode (:meth:`ITAHead.encode_videos` / :meth:`ITAHead.match`): the LSTM descriptor
A(x) reads one video, so it is per video; the class prototypes and the cosines are per episode.

Choices the paper leaves open, or where it had to be read:

- The paper's LSTM equations carry peephole terms (W_c ∘ c in Eq. 3, 4, 6) and Eq. 7 prints
  h = o + tanh(c). The paper says it uses PyTorch, whose ``nn.LSTM`` has no peepholes and uses
  h = o ∘ tanh(c); we use ``nn.LSTM`` (one layer, unidirectional) and read Eq. 7's "+" as a typo for ∘.
- Eq. 15 as printed weights the positives by softmax_i(γ(m² - (s_p^i - 1)²)); differentiating Eq. 12
  gives softmax_i(γ((s_p^i - 1)² - m²)) (as in Sun et al., Eq. 9). The sign only matters for more than
  one positive per query; tests/matchers/test_ita.py checks autograd against the derived form.
- Which similarities are the positives and negatives of a query: Sec. 3.4 speaks of "the videos of the
  support set", Sec. 3.3 of prototypes. They coincide for 1-shot (all the paper's ablations). The
  default ``pairs="prototype"`` uses the query's cosines to the ``way`` class prototypes (1 positive,
  way-1 negatives, the scores the head is evaluated with); ``pairs="support"`` uses the cosines to the
  individual supports (K positives, (way-1)K negatives; episodes must have K supports per class).
- The loss is the mean over the queries of the per-query circle loss.
- For the CE ablation the paper gives no scale or temperature; we use γ as the scale of the cosines.
- Optimiser (Sec. 4.2): SGD, lr 1e-5, ×0.1 every 12,000 episodes, 18,000 training episodes (the
  ``budget``; ``fsar train``'s default 10 x 1,000 episodes stops before the decay). Momentum, weight
  decay, clipping and episodes per step are not given: plain SGD, none, none, one. The paper fine-tunes
  the whole MFNet backbone end to end at that rate; here only the LSTM is trained on cached features,
  for which lr 1e-5 may well be too small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsar.matchers.head import (
    Features,
    Head,
    TrainDefaults,
    VideoCodes,
    chosen,
    class_prototypes,
    paper,
    single_stream,
)
from fsar.matchers.registry import register

__all__ = ["ITAConfig", "ITAHead", "circle_loss"]

_LOSSES = ("circle", "ce")
_PAIRS = ("prototype", "support")


@dataclass(frozen=True)
class ITAConfig:
    """Hyperparameters of ITA.

    hidden: LSTM units. gamma: circle-loss scale γ. m: relaxation margin.
    loss: "circle" (Eq. 12) or "ce" (cross-entropy over γ·cos, the Table 3 ablation).
    pairs: "prototype" or "support": what a query's positives/negatives are compared with (see module doc).
    """

    hidden: int = paper(512, "Table 2 (512, the best of 64/256/512)")
    gamma: float = paper(128.0, "Sec. 4.3.2, Fig. 7 (γ = 128 with m = 0.4, the setting both sweeps share)")
    m: float = paper(0.4, "Sec. 4.3.2, Fig. 7 (m = 0.4 with γ = 128, the setting both sweeps share)")
    loss: str = paper("circle", "Sec. 3.4, Eq. 12, Table 3 ('ce': the ablation)")
    pairs: str = chosen("prototype", "Sec. 3.4 compares with support videos, Sec. 3.3 with prototypes (the same "
                                     "at 1-shot); prototypes, the scores the head is evaluated with")


def circle_loss(pos: torch.Tensor, neg: torch.Tensor, gamma: float, m: float) -> torch.Tensor:
    """Circle loss of Eq. 12 with O_p = 1 + m, O_n = -m, Δ_p = 1 - m, Δ_n = m, one value per row.

    pos: [..., L] similarities s_p to the positives, neg: [..., M] similarities s_n to the negatives
    -> [...] = log(1 + Σ_j exp(γ α_n^j (s_n^j - Δ_n)) Σ_i exp(-γ α_p^i (s_p^i - Δ_p))),
    with α_p = [O_p - s_p]_+ and α_n = [s_n - O_n]_+ (Eq. 11) held constant under autograd.
    """
    if pos.shape[:-1] != neg.shape[:-1] or pos.shape[-1] < 1 or neg.shape[-1] < 1:
        raise ValueError(f"pos [..., L] and neg [..., M] need equal leading dims, got {pos.shape}, {neg.shape}")
    alpha_p = (1.0 + m - pos).clamp_min(0.0).detach()
    alpha_n = (neg + m).clamp_min(0.0).detach()
    logit_p = -gamma * alpha_p * (pos - (1.0 - m))
    logit_n = gamma * alpha_n * (neg - m)
    # log(1 + e^x) with x = lse_n + lse_p: the log of the factored double sum of Eq. 10/12, overflow-free.
    x = torch.logsumexp(logit_n, dim=-1) + torch.logsumexp(logit_p, dim=-1)
    return torch.logaddexp(torch.zeros_like(x), x)


def _split_pairs(sims: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[E, Q, N] similarities and a same-class mask -> positives [E, Q, L], negatives [E, Q, N-L].

    Every query must have the same number L of positives (balanced episodes); the order inside a row
    does not matter to the circle loss.
    """
    counts = positive.sum(-1)
    if not bool((counts == counts.flatten()[0]).all()) or int(counts.flatten()[0]) in (0, sims.shape[-1]):
        raise ValueError("circle loss over supports needs the same number K >= 1 of supports in every class")
    e, q, n = sims.shape
    k = int(counts.flatten()[0])
    return sims[positive].view(e, q, k), sims[~positive].view(e, q, n - k)


@register(
    "ita",
    kind="learned",
    paper="Cao et al., Few-shot Action Recognition with Implicit Temporal Alignment and Pair Similarity "
    "Optimization, CVIU 2021",
)
class ITAHead(Head):
    """LSTM last hidden state as video descriptor, cosine to class prototypes, circle loss (Cao et al., CVIU 2021).

    Implements Eq. 3-8 (LSTM descriptor, cosine) and Eq. 11-12 (circle loss); shapes: query
    {m: [E, Q, T, D]}, support {m: [E, W*K, T, D]}, support_labels [E, W*K] -> cosines [E, Q, way].
    """

    Config = ITAConfig
    defaults = TrainDefaults(
        optimizer="sgd", lr=1e-5, momentum=0.0, weight_decay=0.0, clip_norm=None, tasks_per_step=1,
        lr_decay_every=12_000, lr_decay=0.1, budget=18_000,
        origins={
            "optimizer": "paper: Sec. 4.2 (stochastic gradient descent)",
            "lr": "paper: Sec. 4.2 (initial learning rate 0.00001)",
            "momentum": "fsar: not given (Sec. 4.2); plain SGD",
            "weight_decay": "fsar: not given; none",
            "clip_norm": "fsar: not given; no clipping",
            "tasks_per_step": "fsar: the paper does not say how many episodes make one step; one",
            "lr_decay_every": "paper: Sec. 4.2 (every 12,000 episodes)",
            "lr_decay": "paper: Sec. 4.2 (by 0.1)",
            "budget": "paper: Sec. 4.2 (18,000 training episodes)",
        },
    )

    def __init__(self, dims: Mapping[str, int], frames: int, config: ITAConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: ITAConfig = self.config
        if cfg.loss not in _LOSSES:
            raise ValueError(f"ita: loss must be one of {_LOSSES}, got {cfg.loss!r}")
        if cfg.pairs not in _PAIRS:
            raise ValueError(f"ita: pairs must be one of {_PAIRS}, got {cfg.pairs!r}")
        if len(self.dims) != 1:
            raise ValueError(f"ita reads one modality, got {sorted(self.dims)}")
        (dim,) = self.dims.values()
        self.lstm = nn.LSTM(dim, cfg.hidden, num_layers=1, batch_first=True)

    def describe(self, videos: torch.Tensor) -> torch.Tensor:
        """Video descriptor A(x) = h^T, the LSTM's last hidden state (Sec. 3.3): [..., T, D] -> [..., hidden]."""
        _, (h_last, _) = self.lstm(videos.flatten(0, -3))
        return h_last[-1].view(*videos.shape[:-2], -1)

    def _descriptors(self, query: Features, support: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM pass over all videos of the batch -> query [E, Q, H], support [E, S, H]."""
        q, s = self.encode_pair(query, support)
        return q["descriptor"], s["descriptor"]

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part, A(x) = h^T: {m: [E, N, T, D]} -> {"descriptor": [E, N, hidden]}."""
        return {"descriptor": self.describe(single_stream(videos))}

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              **_: object) -> torch.Tensor:
        """The per-episode part: class prototypes and their cosines (Eq. 8) -> [E, Q, way]."""
        protos = class_prototypes(support["descriptor"], support_labels, way)
        return F.normalize(query["descriptor"], dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor, way: int) -> torch.Tensor:
        """Cosine of each query descriptor to each class prototype (Eq. 8): -> [E, Q, way]."""
        return self.match(*self.encode_pair(query, support), support_labels, way)

    def loss(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
             query_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean per-query circle loss (Eq. 12), or cross-entropy over γ·cos when ``loss="ce"``.

        query_labels: [E, Q] in 0..way-1. Returns (scalar loss, {"circle" or "ce": value}).
        """
        cfg: ITAConfig = self.config
        if cfg.loss == "ce" or cfg.pairs == "prototype":
            sims = self(query, support, support_labels, way)  # [E, Q, way]
            if cfg.loss == "ce":
                ce = F.cross_entropy(cfg.gamma * sims.flatten(0, 1), query_labels.flatten().long())
                return ce, {"ce": float(ce.detach())}
            positive = query_labels.long()[..., None] == torch.arange(way, device=sims.device)
        else:
            q, s = self._descriptors(query, support)
            sims = F.normalize(q, dim=-1) @ F.normalize(s, dim=-1).transpose(1, 2)  # [E, Q, S]
            positive = query_labels.long()[..., None] == support_labels.long()[:, None, :]
        pos, neg = _split_pairs(sims, positive)
        loss = circle_loss(pos, neg, cfg.gamma, cfg.m).mean()
        return loss, {"circle": float(loss.detach())}
