"""Relation Video Network (RVN): a learned relation module scores each (query, class) pair in [0, 1].

Paper: Cao, Li, Lv, Wang and Zhang, "Few-shot Action Recognition with Implicit Temporal Alignment and
Pair Similarity Optimization" (the ITA paper), §4.3.1 and Figs. 4-5, where RVN is the baseline; it
follows the relation network of Sung et al., "Learning to Compare: Relation Network for Few-Shot
Learning", CVPR 2018.

- Class centroid (Fig. 4): the support features of each class are averaged before the relation
  module, so K-shot is one relation per (query, class) and the order of the supports cannot matter.
- Concatenation C(support, query) along the channel axis (§4.3.1, support first).
- Relation module g_φ (Fig. 5): two convolution layers, each 64 filters + batch normalisation + ReLU,
  global average pooling, fully connected layers of sizes 64 and 1, sigmoid -> relation score in [0, 1].
- Loss: mean squared error between the relation scores and the one-hot match targets (Sung et al.,
  Eq. 2; the ITA paper does not name RVN's loss).

Adaptation to cached features. The paper's relation module takes 3D feature maps (C, T', H, W) of a
clip with 3 x 3 x 3 kernels after averaging its T = 3 clips. Cached features are one D-vector per
frame, [T, D], so the T frames take the place of T' and the convolutions are 1D over time with
kernel 3 and zero padding 1 (the second layer of the paper's RVN-2 variant is purely temporal too,
3 x 1 x 1); the frames are not averaged first, or the convolutions would see a sequence of length 1.
Padding keeps the length, so any T works. ReLU after the FC-64 layer, as in Sung et al.; no dropout.

Optimiser: the ITA paper trains with SGD at lr 1e-5, ×0.1 every 12,000 of 18,000 training episodes
(Sec. 4.2), stated for its own model; it gives no separate setup for the RVN baseline, so RVN takes that
one, schedule and budget included, as fsar's choice. Momentum and weight decay are not given; momentum
0.9 is a choice (the usual SGD value), no weight decay. That rate was for fine-tuning a pretrained
backbone; a head trained from scratch on frozen features learns slowly with it, and
``--optimizer adam --lr 1e-3`` (Sung et al.) is the usual alternative.

The first convolution acts on a concatenation, so it is split into a support half and a query half,
each run once per video, and their sum is broadcast over the (query, class) pairs.
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
    class_one_hot,
    class_prototypes,
    paper,
    single_stream,
)
from fsar.matchers.registry import register

__all__ = ["RVNConfig", "RVNHead"]


_SETUP = "the ITA paper's training setup (Sec. 4.2), stated for its own model, none being given for RVN"


@dataclass(frozen=True)
class RVNConfig:
    """RVN hyperparameters (ITA paper Sec. 4.3.1, Fig. 5)."""

    channels: int = paper(64, "ITA paper Sec. 4.3.1, Fig. 5: 64 filters in both convolution layers")
    # temporal kernel size (odd, zero-padded to keep the length)
    kernel: int = paper(3, "ITA paper Sec. 4.3.1, Table 1: RVN-1's 3x3x3 kernels span 3 time steps (fsar's "
                           "convolutions are over time only: cached features have no H, W)")
    hidden: int = paper(64, "ITA paper Sec. 4.3.1: fully connected layers of 64 and 1")


@register(
    "rvn",
    kind="learned",
    paper="Cao et al., Few-shot Action Recognition with Implicit Temporal Alignment and Pair Similarity "
    "Optimization (RVN baseline, after Sung et al., Relation Network, CVPR 2018)",
)
class RVNHead(Head):
    """RVN: relation module (conv-BN-ReLU x2, pool, FC 64, FC 1, sigmoid) on [class centroid; query].

    forward: query {m: [E, Q, T, D]}, support {m: [E, S, T, D]}, support_labels [E, S] -> relation
    scores [E, Q, way] in [0, 1]; ``loss`` is the MSE to the one-hot targets.
    """

    Config = RVNConfig
    defaults = TrainDefaults(
        optimizer="sgd", lr=1e-5, momentum=0.9, weight_decay=0.0, clip_norm=None, tasks_per_step=1,
        lr_decay_every=12_000, lr_decay=0.1, budget=18_000,
        origins={
            "optimizer": f"fsar: SGD, {_SETUP}",
            "lr": f"fsar: 1e-5, {_SETUP}",
            "momentum": "fsar: not given in the ITA paper; 0.9, the usual SGD momentum",
            "weight_decay": "fsar: not given in the ITA paper; none",
            "clip_norm": "fsar: not given in the ITA paper; no clipping",
            "tasks_per_step": "fsar: not given in the ITA paper; one episode per step",
            "lr_decay_every": f"fsar: every 12,000 episodes, {_SETUP}",
            "lr_decay": f"fsar: x 0.1, {_SETUP}",
            "budget": f"fsar: 18,000 training episodes, {_SETUP}",
        },
    )

    def __init__(self, dims: Mapping[str, int], frames: int, config: RVNConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: RVNConfig = self.config
        if len(self.dims) != 1:
            raise ValueError(f"RVN reads one modality, got {sorted(self.dims)}")
        if cfg.kernel < 1 or cfg.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd so that padding keeps the length, got {cfg.kernel}")
        (self.feat_dim,) = self.dims.values()
        pad = cfg.kernel // 2
        # No conv bias: batch normalisation right after subtracts it again, so it would get no gradient.
        self.conv1 = nn.Conv1d(2 * self.feat_dim, cfg.channels, cfg.kernel, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(cfg.channels)
        self.conv2 = nn.Conv1d(cfg.channels, cfg.channels, cfg.kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(cfg.channels)
        self.fc1 = nn.Linear(cfg.channels, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, 1)

    def first_conv(self, centroids: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """conv1 of concat(centroid, query) for every pair, split into a centroid and a query half.

        centroids: [E, W, T, D], query: [E, Q, T, D] -> [E, Q, W, channels, T], equal to
        conv1(cat([centroid_w, query_q], channel axis)).
        """
        w_support, w_query = self.conv1.weight.split(self.feat_dim, dim=1)
        pad = self.conv1.padding
        e, w, t, d = centroids.shape
        a = F.conv1d(centroids.reshape(e * w, t, d).transpose(1, 2), w_support, padding=pad)
        b = F.conv1d(query.reshape(-1, t, d).transpose(1, 2), w_query, padding=pad)
        a = a.view(e, 1, w, *a.shape[-2:])
        b = b.view(e, -1, 1, *b.shape[-2:])
        return a + b

    def relation(self, centroids: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """g_φ(C(centroid, query)) for every pair: [E, W, T, D] x [E, Q, T, D] -> [E, Q, W] in [0, 1]."""
        h = self.first_conv(centroids, query)  # [E, Q, W, C, T]
        lead = h.shape[:3]
        h = F.relu(self.bn1(h.flatten(0, 2)))  # batch statistics over all pairs and time steps
        h = F.relu(self.bn2(self.conv2(h)))
        h = F.relu(self.fc1(h.mean(dim=-1)))  # global average pooling over time
        return torch.sigmoid(self.fc2(h)).view(lead)

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        """Relation scores of every query with every class centroid: [E, Q, way] in [0, 1]."""
        centroids = class_prototypes(single_stream(support), support_labels, way)
        return self.relation(centroids, single_stream(query))

    def loss(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
             query_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over (episode, query, class) of (r - 1[query label = class])² (Sung et al., Eq. 2)."""
        scores = self(query, support, support_labels, way)
        loss = F.mse_loss(scores, class_one_hot(query_labels, way).to(scores.dtype))
        return loss, {"mse": float(loss.detach())}
