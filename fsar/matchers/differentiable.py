"""Parameter-free matchers in a differentiable form, to train a backbone through them (``fsar finetune
--episodic``).

Each form is a :class:`~fsar.matchers.head.Head` without weights: its ``forward`` gives the logits the
registered numba matcher scores at evaluation, computed in torch so that a cross-entropy over them trains the
backbone beneath. Where the training form departs from the evaluation kernel it says so:

- ``otam`` / ``otam_soft``: -(mean over the K shots of OTAM(D) + OTAM(Dᵀ)), D = 1 - cos, with OTAM's soft-min
  at λ = 0.1 in training (Cao et al. 2020, Sec. 3: the soft relaxation is what makes the alignment
  trainable); ``lam=None`` gives the hard minimum of ``otam``'s kernel, equal to it (a test).
- ``proto``: cosine of the mean-pooled query to each class's mean-pooled prototype, times
  :data:`PROTO_SCALE` in training (cosines lie in [-1, 1], where a cross-entropy barely separates the classes).
  Divided by the scale it equals ``proto``'s scores (a test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fsar.matchers._soft import cosine_distance, symmetric_otam_distance
from fsar.matchers.head import Features, Head, TrainDefaults, class_prototypes, shot_mean, single_stream

OTAM_LAMBDA = 0.1
PROTO_SCALE = 10.0

Form = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float | None], torch.Tensor]


def otam_logits(query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, way: int,
                lam: float | None = OTAM_LAMBDA) -> torch.Tensor:
    """-(symmetric OTAM distance) averaged over each class's shots: [E, Q, T, D] x [E, S, T, D] -> [E, Q, way]."""
    dists = cosine_distance(query[:, :, None], support[:, None])  # [E, Q, S, T, T]
    return shot_mean(-symmetric_otam_distance(dists, lam), labels, way)


def proto_logits(query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, way: int,
                 scale: float | None = PROTO_SCALE) -> torch.Tensor:
    """``scale`` x cosine of the mean-pooled query to each class prototype: -> [E, Q, way]."""
    protos = class_prototypes(support.mean(dim=2), labels, way)  # [E, way, D]
    cos = F.normalize(query.mean(dim=2), dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
    return cos * (scale or 1.0)


@dataclass(frozen=True)
class Trainable:
    """How a parameter-free matcher trains: its form, the form's training argument, the optimiser settings."""

    form: Form
    argument: float
    defaults: TrainDefaults


# Neither OTAM's paper nor ProtoNet's gives a recipe for fine-tuning a video backbone episodically in the
# papers fsar implements; fsar uses TRX's (SGD 1e-3, 16 episodes per step), the baseline recipe of the FSAR
# literature that OTAM re-implementations share.
_RECIPE = TrainDefaults(optimizer="sgd", lr=1e-3, momentum=0.9, tasks_per_step=16, lr_decay_every=0, budget=0,
                        origins=dict.fromkeys(
                            ("optimizer", "lr", "momentum", "weight_decay", "clip_norm", "tasks_per_step",
                             "lr_decay_every", "lr_decay", "budget"),
                            "fsar: TRX's recipe (SGD 1e-3, 16 episodes per step), shared by OTAM re-implementations"))

# The matchers registered with ``trainable=True`` (a test holds the two lists equal).
TRAINABLE: Mapping[str, Trainable] = {
    "otam": Trainable(otam_logits, OTAM_LAMBDA, _RECIPE),
    "otam_soft": Trainable(otam_logits, OTAM_LAMBDA, _RECIPE),
    "proto": Trainable(proto_logits, PROTO_SCALE, _RECIPE),
}


class MatcherHead(Head):
    """A parameter-free matcher as a head without weights (single stream)."""

    def __init__(self, name: str, dims: Mapping[str, int], frames: int, config: Any = None) -> None:
        if name not in TRAINABLE:
            raise ValueError(f"{name} has no differentiable form; these do: {', '.join(sorted(TRAINABLE))}")
        super().__init__(dims, frames, config)
        self.name = name

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor, way: int) -> torch.Tensor:
        trainable = TRAINABLE[self.name]
        return trainable.form(single_stream(query), single_stream(support), support_labels, way, trainable.argument)


__all__ = ["OTAM_LAMBDA", "PROTO_SCALE", "TRAINABLE", "MatcherHead", "Trainable", "otam_logits", "proto_logits"]
