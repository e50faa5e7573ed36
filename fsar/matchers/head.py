"""What every learned matcher (a small ``torch.nn.Module`` trained on cached features) provides.

A learned head answers the same question as a parameter-free matcher (how similar is each query to
each class?), in torch::

    head(query, support, support_labels, way) -> logits [E, Q, way]   (higher = more similar)

with ``query = {modality: [E, Q, T, D]}`` and ``support = {modality: [E, W*K, T, D]}`` (heads that need
patches get ``[.., T, P, D]``). ``support_labels`` [E, W*K] holds 0..way-1 in any order. Single-stream
heads read the one modality they are given (:func:`single_stream`); two-stream heads read ``rgb`` and
``flow``.

A head class is registered with ``@register(name, kind="learned", ...)`` and carries

- ``Config``: a frozen dataclass of its hyperparameters, each declared with :func:`paper` (the paper's value,
  and where the paper gives it) or :func:`chosen` (fsar's choice, and why); ``fsar train --param k=v``
  overrides fields by name, and the checkpoint stores them;
- ``defaults``: a :class:`TrainDefaults` with the paper's optimiser settings, each with its origin;
- ``loss(...)``: its training objective on one episode batch (cross-entropy unless the paper says
  otherwise), returning the loss and named parts for the progress bar.

A head whose matching reads the episode's class names (HCL's semantic attention) sets
:attr:`Head.uses_class_text`; its ``forward``/``loss``/``batch_loss`` then also take ``class_text``, the
name embeddings in label order, which the trainer and the evaluator pass to it (and to no other head).

The trainer (:mod:`fsar.runner.train`) builds a head as ``cls(dims, frames, config)``.

A head whose ``forward`` starts with a part that reads one video at a time (adapters, LSTMs, a video
encoder) may declare the split (:attr:`Head.encodes_videos`): :meth:`Head.encode_videos` is that per-video
part, :meth:`Head.match` the rest, which reads the encoded videos of an episode, and
``forward(q, s, labels, way) == match(*encode_pair(q, s), labels, way)``. The evaluator then encodes every
distinct video of an episode list once instead of once per episode it appears in
(:mod:`fsar.runner.encoded`). A part belongs to ``encode_videos`` only if its output for a video does not
depend on any other video of the episode (batch norm in eval mode and dropout, off at evaluation, are fine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ORIGIN",
    "Features",
    "Head",
    "Origin",
    "TrainDefaults",
    "VideoCodes",
    "chosen",
    "config_origins",
    "paper",
    "show_value",
    "train_origins",
    "class_one_hot",
    "class_prototypes",
    "config_from_params",
    "episode_targets",
    "shot_mean",
    "single_stream",
]

Features = dict[str, torch.Tensor]
# Per-video outputs of :meth:`Head.encode_videos`: name -> [E, N, *shape], rows in the order of the videos given.
VideoCodes = dict[str, torch.Tensor]


# Where a hyperparameter's default comes from, kept in each field's metadata under this key: "paper: <where in
# the paper>" for the paper's value, "fsar: <why>" for a value the paper does not give or that fsar changes.
ORIGIN = "origin"
T = TypeVar("T")


def paper(default: T, where: str) -> T:
    """A config field whose default is the paper's value; ``where``: its section, table or equation."""
    return cast(T, dataclasses.field(default=default, metadata={ORIGIN: f"paper: {where}"}))


def chosen(default: T, why: str) -> T:
    """A config field whose default is fsar's choice (the paper gives none, or fsar departs): ``why`` says why."""
    return cast(T, dataclasses.field(default=default, metadata={ORIGIN: f"fsar: {why}"}))


@dataclass(frozen=True)
class TrainDefaults:
    """A paper's optimiser settings; ``fsar train`` flags override them.

    ``origins`` says, per field name, where its value comes from in the same "paper: ..." / "fsar: ..." form
    as :func:`paper` and :func:`chosen` (a test holds every field of every head to have one).
    ``budget``: the training episodes the paper's schedule runs (0: not given); ``fsar train`` says when its
    own budget stops before the paper's schedule (a decay that is never reached, say).
    """

    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_norm: float | None = None
    tasks_per_step: int = 1  # episodes whose gradients are accumulated before one optimiser step
    lr_decay_every: int = 0  # step decay: lr x lr_decay after every this many training episodes (0: constant)
    lr_decay: float = 0.1
    budget: int = 0
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)


class Origin(NamedTuple):
    """One hyperparameter's default and where it comes from (``fsar train --list-params``, docs/methods.md)."""

    name: str
    value: Any
    source: str  # "paper" or "fsar"
    note: str


def _origin(name: str, value: Any, text: str | None, owner: str, how: str) -> Origin:
    if not text or text.split(":", 1)[0] not in ("paper", "fsar") or ":" not in text:
        raise ValueError(f"{owner}.{name} does not say whether its default is the paper's or fsar's ({how})")
    source, note = text.split(":", 1)
    return Origin(name, value, source, note.strip())


def config_origins(config_cls: type) -> list[Origin]:
    """Every field of a head's ``Config`` with its default and origin; raises for a field without one."""
    defaults = config_cls()
    return [_origin(f.name, getattr(defaults, f.name), f.metadata.get(ORIGIN), config_cls.__name__,
                    "declare it with paper(...) or chosen(...)") for f in dataclasses.fields(config_cls)]


def show_value(value: Any) -> str:
    """A default as ``-p NAME=VALUE`` takes it: tuples comma-separated, booleans lower case."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def train_origins(defaults: TrainDefaults, owner: str) -> list[Origin]:
    """Every optimiser setting of ``defaults`` with its origin; raises for one without."""
    return [_origin(f.name, getattr(defaults, f.name), defaults.origins.get(f.name), owner,
                    'give it in TrainDefaults(origins={"name": "paper: <where>" or "fsar: <why>"})')
            for f in dataclasses.fields(defaults) if f.name != "origins"]


@dataclass(frozen=True)
class NoConfig:
    """A head without hyperparameters."""


class Head(nn.Module):
    """Base class of learned heads; subclasses implement ``forward`` and may override ``loss``."""

    Config: ClassVar[type] = NoConfig
    defaults: ClassVar[TrainDefaults] = TrainDefaults()
    # Episodes per forward pass at evaluation = max(1, eval_pairs // (Q * S)): bounds the memory of
    # heads that build per-pair tensors (TAP's alignment MLP over T x T frame pairs).
    eval_pairs: ClassVar[int] = 4096
    # Videos per :meth:`encode_videos` call when the evaluator encodes every video of a list once.
    encode_batch: ClassVar[int] = 64
    # (classes, videos per class) of an extra class-balanced batch drawn for every step, for losses that
    # want more negatives than an episode holds; its loss (:meth:`batch_loss`) is added. None: episodes only.
    # A head may set it per instance from its config.
    balanced_batch: tuple[int, int] | None = None
    # Config fields that change only how a trained head scores, not what it learns: ``fsar eval -p`` may
    # set them on a checkpoint (M3Net's ``predict``: which branches are summed in the prediction).
    eval_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, dims: Mapping[str, int], frames: int, config: Any = None) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.frames = frames
        self.config = config if config is not None else self.Config()

    @property
    def uses_class_text(self) -> bool:
        """Whether ``forward``, ``loss`` and ``batch_loss`` need ``class_text``: embeddings of the class names
        in label order, [E, way, text_dim] for episodes and [C, text_dim] for a balanced batch. Heads that
        return False are never given it."""
        return False

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def encodes_videos(self) -> bool:
        """Whether ``forward`` splits into :meth:`encode_videos` and :meth:`match` (module docstring): True for
        heads that override ``encode_videos``; a head may return False for configurations without a split."""
        return type(self).encode_videos is not Head.encode_videos

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part of ``forward``: {modality: [E, N, T, (P,) D]} -> {name: [E, N, *shape]}.

        Row n of every output is a function of video n alone (and the weights), so that encoding a video
        once serves every episode it appears in.
        """
        raise NotImplementedError(f"{type(self).__name__} does not split its forward per video")

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              **kwargs: Any) -> torch.Tensor:
        """The per-episode part of ``forward``, on encoded videos: [E, Q, ...] and [E, S, ...] -> [E, Q, way].

        ``kwargs``: what ``forward`` takes besides the features (``class_text``).
        """
        raise NotImplementedError(f"{type(self).__name__} does not split its forward per video")

    def encode_pair(self, query: Features, support: Features) -> tuple[VideoCodes, VideoCodes]:
        """:meth:`encode_videos` of an episode batch's queries and supports, in one call.

        One pass over Q + S videos instead of two (fewer, larger kernels); row n still sees video n alone.
        """
        nq = next(iter(query.values())).shape[1]
        both = self.encode_videos({m: torch.cat([query[m], support[m]], dim=1) for m in query})
        return {k: v[:, :nq] for k, v in both.items()}, {k: v[:, nq:] for k, v in both.items()}

    def loss(self, query: Features, support: Features, support_labels: torch.Tensor, way: int,
             query_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training objective of one batch of episodes; default: cross-entropy over the logits.

        query_labels: [E, Q] in 0..way-1. Returns (scalar loss, named parts for logging).
        """
        logits = self(query, support, support_labels, way)
        loss = F.cross_entropy(logits.flatten(0, 1), query_labels.flatten())
        return loss, {"ce": float(loss.detach())}

    def batch_loss(self, videos: Features, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a class-balanced batch (only for heads that set ``balanced_batch``).

        videos: {modality: [B, T, D]} (or [B, T, P, D]); labels: [B] class indices.
        """
        raise NotImplementedError(f"{type(self).__name__} sets balanced_batch but has no batch_loss")


def single_stream(features: Features) -> torch.Tensor:
    """The one modality a single-stream head was given."""
    if len(features) != 1:
        raise ValueError(f"this head reads one modality, got {sorted(features)}")
    return next(iter(features.values()))


def class_one_hot(support_labels: torch.Tensor, way: int) -> torch.Tensor:
    """[E, S] labels -> [E, S, way] float one-hot."""
    return F.one_hot(support_labels.long(), way).to(torch.float32)


def shot_mean(pair_scores: torch.Tensor, support_labels: torch.Tensor, way: int) -> torch.Tensor:
    """Per-class mean of per-pair scores: [E, Q, S] -> [E, Q, way] (supports in any order)."""
    one_hot = class_one_hot(support_labels, way).to(pair_scores.dtype)
    counts = one_hot.sum(dim=1).clamp_min(1.0)  # [E, way]
    return (pair_scores @ one_hot) / counts[:, None, :]


def class_prototypes(support: torch.Tensor, support_labels: torch.Tensor, way: int) -> torch.Tensor:
    """Mean of each class's supports: [E, S, ...] -> [E, way, ...]."""
    one_hot = class_one_hot(support_labels, way).to(support.dtype)  # [E, S, W]
    counts = one_hot.sum(dim=1).clamp_min(1.0)  # [E, W]
    flat = support.flatten(2)
    protos = one_hot.transpose(1, 2) @ flat / counts[..., None]
    return protos.view(support.shape[0], way, *support.shape[2:])


def episode_targets(way: int, query: int, episodes: int, device: torch.device | None = None) -> torch.Tensor:
    """Query labels of episodes whose queries come class by class: [E, way*query]."""
    return torch.arange(way, device=device).repeat_interleave(query).expand(episodes, -1)


def config_from_params(config_cls: type, params: Mapping[str, str]) -> Any:
    """``config_cls`` with fields set from ``name=value`` strings (``--param``); unknown names are errors."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        known = ", ".join(fields) or "(none)"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; this matcher has: {known}")
    defaults = config_cls()
    values: dict[str, Any] = {}
    for name, text in params.items():
        values[name] = _parse_like(getattr(defaults, name), text, name)
    return dataclasses.replace(defaults, **values)


def _parse_like(default: Any, text: str, name: str) -> Any:
    """``text`` converted to the type of ``default`` (bool, int, float, str or a tuple of str)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            items = tuple(item.strip() for item in text.split(",") if item.strip())
            if default and isinstance(default[0], int):
                return tuple(int(i) for i in items)
            return items
    except ValueError:
        raise ValueError(f"parameter {name}={text!r}: expected {type(default).__name__}") from None
    return text
