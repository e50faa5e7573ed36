"""Temporal-Relational CrossTransformer, TRX (Perrett et al., CVPR 2021), as a learned head.

Equations (docs/methods.md, section trx), for each cardinality ω ∈ Ω = {2, 3}:

- frames x_t ← Dropout(x_t + 0.1·PE(t)), PE the standard sinusoid (Vaswani et al.);
- tuples Π_ω = {(t_1 < … < t_ω)} (itertools.combinations: 28 pairs, 56 triples of T = 8), a tuple's
  representation is the time-ordered concatenation p = [x_{t_1}; …; x_{t_ω}] ∈ R^{ωD};
- keys k = LayerNorm(W_k p), values v = W_v p ∈ R^{1152}, the same maps for query and support;
- for class c, a_{ps} = softmax over the K·|Π| tuples s of the class's supports of k_Q(p)·k_S(s)/√1152,
  prototype t_c(p) = Σ_s a_{ps} v_S(s);
- distance d_c = (1/|Π|) Σ_p ‖v_Q(p) − t_c(p)‖², logit −d_c; the logits are averaged over Ω.

Choices (the paper's printed forms below are as commonly quoted, not re-checked against the paper):

- ‖·‖² and the *mean* over Ω follow the public re-implementations; the paper, as
  commonly quoted, writes an unsquared norm and a sum over Ω (same argmax for the sum, a different
  softmax temperature in the cross-entropy);
- position encoding and dropout are applied once to the frames and shared by all cardinalities
  (the paper does not say where dropout sits);
- plain SGD (no momentum, no weight decay, no clipping): only "SGD, lr 1e-3" is specified; 16 tasks
  per step (the trainer batches them in one forward and averages the loss, which equals accumulating
  gradients of loss/16 over 16 tasks, up to dropout draws). No learning-rate decay and no budget: none
  is taken as given (the public implementation's decay milestone lies past its own training length).

Where the defaults come from: Ω = {2, 3}, d = 1152, SGD at lr 1e-3 and 16 tasks per step are TRX's
published settings, as the literature quotes them; the dropout 0.1 and the 0.1 factor on the position
encoding are the public implementation's, labelled fsar's because they could not be checked against
the paper's text. For the same reason no section numbers are given.

Per video and per episode (:meth:`TRXHead.encode_videos` / :meth:`TRXHead.match`): the position encoding
and every tuple's key and value read one video, so they are per video; the attention of each query tuple
over the class's support tuples, the query-specific prototypes and the distances are per episode.

Efficiency (same numbers, less work): W p over a concatenation equals Σ_i W^{(i)} x_{t_i}, so each
frame is projected once per tuple slot and tuple projections are gathered sums, instead of one
(ωD × 1152) product per tuple. Supports are gathered into per-class slots [E, way, K_max] from
``support_labels`` (any order; padded slots of smaller classes are masked out of the softmax), so
attention and prototypes cost O(Q·|Π|·S·|Π|·1152), not way times more. The distances are expanded
(:func:`prototype_distances`) so that no [Q, |Π|, way, 1152] prototype tensor is formed: a 16-task training
step's memory halves and it runs about twice as fast.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fsar.matchers.head import Features, Head, TrainDefaults, VideoCodes, chosen, paper, single_stream
from fsar.matchers.registry import register

__all__ = ["TRXConfig", "TRXHead", "class_attention", "class_slots", "position_encoding", "prototype_distances",
           "tuple_indices"]


_UNCHECKED = "section not re-checked against the paper's text"


@dataclass(frozen=True)
class TRXConfig:
    """TRX hyperparameters (see the module docstring for where each comes from)."""

    # tuple sizes ω; logits are averaged over them
    cardinalities: tuple[int, ...] = paper((2, 3), f"TRX's Ω = {{2, 3}}, pairs and triples ({_UNCHECKED})")
    # key / value dimension d_k = d_v
    hidden: int = paper(1152, f"TRX's key/value dimension 1152 ({_UNCHECKED})")
    # on frames after adding the position encoding
    dropout: float = chosen(0.1, "the public implementation's dropout, not checked against the paper")
    # multiplier of the sinusoidal position encoding
    pe_scale: float = chosen(0.1, "the public implementation's position-encoding factor, not checked against "
                                  "the paper")


@functools.lru_cache(maxsize=32)
def tuple_indices(frames: int, size: int) -> torch.Tensor:
    """Frame indices of every ω-tuple t_1 < … < t_ω, in itertools.combinations order: [|Π|, size] long.

    Cached: the returned tensor is shared, do not modify it in place.
    """
    combos = list(itertools.combinations(range(frames), size))
    if not combos:
        raise ValueError(f"no {size}-tuples of {frames} frames: cardinality must be between 1 and T")
    return torch.tensor(combos, dtype=torch.long)


@functools.lru_cache(maxsize=32)
def position_encoding(frames: int, dim: int) -> torch.Tensor:
    """Sinusoid PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(t / 10000^(2i/dim)): [frames, dim].

    Cached (computed once per shape; float64 trig is slow under thread contention): do not modify in place.
    """
    position = torch.arange(frames, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    angle = position * inv_freq  # [T, ceil(dim/2)]
    pe = torch.zeros(frames, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])  # odd dim: the last sine has no cosine partner
    return pe.to(torch.float32)


def class_slots(support_labels: torch.Tensor, way: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Supports grouped by class, whatever their order.

    support_labels: [E, S] in 0..way-1 -> (index [E, way, K_max] long into S, valid [E, way, K_max] bool);
    K_max is the largest class size; the padded slots of smaller classes point at support 0, valid False.
    """
    e, s = support_labels.shape
    labels = support_labels.long()
    one_hot = torch.nn.functional.one_hot(labels, way)  # [E, S, W]
    counts = one_hot.sum(dim=1)  # [E, W]
    lowest, largest = (int(v) for v in torch.aminmax(counts))
    if lowest == 0:
        raise ValueError("every class of an episode needs at least one support")
    rank = (one_hot.cumsum(dim=1) - 1).gather(2, labels[..., None])[..., 0]  # position within its class
    slot = labels * largest + rank  # [E, S] into the flattened [way * K_max] grid
    index = torch.zeros(e, way * largest, dtype=torch.long, device=labels.device)
    valid = torch.zeros(e, way * largest, dtype=torch.bool, device=labels.device)
    index.scatter_(1, slot, torch.arange(s, device=labels.device).expand(e, s))
    valid.scatter_(1, slot, True)
    return index.view(e, way, largest), valid.view(e, way, largest)


def class_attention(query_keys: torch.Tensor, support_keys: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """a_{ps}: softmax over the tuples of each class's supports of k_Q(p)·k_S(s)/√d.

    query_keys: [E, Q, P, d]; support_keys: [E, W, K, P', d] (per-class slots); valid: [E, W, K].
    Returns [E, Q, P, W, K*P'], each class's row summing to 1 over its valid supports' tuples.
    """
    scores = torch.einsum("eqpd,ewksd->eqpwks", query_keys, support_keys) / math.sqrt(query_keys.shape[-1])
    scores = scores.masked_fill(~valid[:, None, None, :, :, None], float("-inf"))
    return scores.flatten(-2).softmax(dim=-1)


class _CrossTransformer(nn.Module):
    """One cardinality ω: tuple keys/values and the query-to-class distances d_c."""

    def __init__(self, dim: int, size: int, hidden: int) -> None:
        super().__init__()
        self.size = size
        self.key = nn.Linear(size * dim, hidden)
        self.value = nn.Linear(size * dim, hidden)
        self.key_norm = nn.LayerNorm(hidden)

    def _tuples(self, linear: nn.Linear, frames: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
        """W p + b for every tuple p, as Σ_i W^{(i)} x_{t_i} + b: [..., T, D] -> [..., |Π|, hidden]."""
        hidden, dim = linear.out_features, frames.shape[-1]
        # Row block i of the stacked weight is the slice of W that multiplies the tuple's i-th frame.
        per_slot = linear.weight.view(hidden, self.size, dim).transpose(0, 1).reshape(self.size * hidden, dim)
        projected = (frames @ per_slot.T).unflatten(-1, (self.size, -1)).flatten(-3, -2)  # [..., T*ω, hidden]
        # Row t*ω + i of ``projected`` is W^{(i)} x_t; one gather of all slots beats ω advanced indexings.
        rows = (tuples * self.size + torch.arange(self.size, device=tuples.device)).flatten()
        return projected.index_select(-2, rows).unflatten(-2, (-1, self.size)).sum(-2) + linear.bias

    def keys_values(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k = LayerNorm(W_k p), v = W_v p: [..., T, D] -> two [..., |Π|, hidden]."""
        tuples = tuple_indices(frames.shape[-2], self.size).to(frames.device)
        return self.key_norm(self._tuples(self.key, frames, tuples)), self._tuples(self.value, frames, tuples)

    def forward(self, query: torch.Tensor, support: torch.Tensor, index: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """d_c = (1/|Π|) Σ_p ‖v_Q(p) − Σ_s a_{ps} v_S(s)‖².

        query [E, Q, T, D], support [E, S, T, D], index/valid [E, W, K] from :func:`class_slots`.
        Returns (distances [E, Q, W], attention [E, Q, |Π|, W, K*|Π|]).
        """
        return self.distances(*self.keys_values(query), *self.keys_values(support), index, valid)

    def distances(self, query_keys: torch.Tensor, query_values: torch.Tensor, support_keys: torch.Tensor,
                  support_values: torch.Tensor, index: torch.Tensor, valid: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from the tuples' keys and values ([E, Q, |Π|, hidden], [E, S, |Π|, hidden])."""
        episodes = torch.arange(index.shape[0], device=index.device)[:, None, None]
        attention = class_attention(query_keys, support_keys[episodes, index], valid)
        class_values = support_values[episodes, index].flatten(2, 3)  # [E, W, K*|Π|, hidden]
        return prototype_distances(query_values, attention, class_values).mean(dim=2), attention


def prototype_distances(query_values: torch.Tensor, attention: torch.Tensor, class_values: torch.Tensor
                        ) -> torch.Tensor:
    """‖v_Q(p) − t_c(p)‖² with t_c(p) = Σ_n a_{pn} V_n, without forming the prototypes t_c.

    query_values [E, Q, P, h], attention [E, Q, P, W, N], class_values [E, W, N, h] -> [E, Q, P, W].
    Expanded as ‖v‖² − 2 Σ_n a_n (v·V_n) + Σ_{n,m} a_n a_m (V_n·V_m): every intermediate is [E, Q, P, W, N]
    (N = K·|Π| tuples of the class) instead of [E, Q, P, W, h] prototypes and their differences, which with
    h = 1152 held most of a training step's memory. In float32 even under autocast: the three terms cancel,
    and squares summed over 1152 dims could overflow in float16.
    """
    with torch.autocast(query_values.device.type, enabled=False):
        v, a, values = query_values.float(), attention.float(), class_values.float()
        cross = torch.einsum("eqph,ewnh->eqpwn", v, values)  # v·V_n
        gram = values @ values.transpose(-1, -2)  # V_n·V_m, [E, W, N, N]
        spread = torch.einsum("eqpwn,ewnm->eqpwm", a, gram)  # Σ_m a_m V_n·V_m
        return v.square().sum(-1)[..., None] + (a * (spread - 2 * cross)).sum(-1)


@register(
    "trx",
    kind="learned",
    paper="Perrett et al., Temporal-Relational CrossTransformers for Few-Shot Action Recognition, CVPR 2021",
)
class TRXHead(Head):
    """Temporal-Relational CrossTransformer: query-specific class prototypes over frame pairs and triples.

    Perrett et al., CVPR 2021 (docs/methods.md, section trx); see the module docstring for the equations.
    query {m: [E, Q, T, D]}, support {m: [E, W*K, T, D]}, support_labels [E, W*K] -> logits [E, Q, way]
    = −(mean over ω of the mean squared tuple distance to the query-specific prototype).
    """

    Config = TRXConfig
    defaults = TrainDefaults(
        optimizer="sgd", lr=1e-3, momentum=0.0, weight_decay=0.0, clip_norm=None, tasks_per_step=16,
        lr_decay_every=0, lr_decay=0.1, budget=0,
        origins={
            "optimizer": f"paper: SGD ({_UNCHECKED})",
            "lr": f"paper: 1e-3 ({_UNCHECKED})",
            "momentum": "fsar: not given; plain SGD, as the public implementation",
            "weight_decay": "fsar: not given; none",
            "clip_norm": "fsar: not given; no clipping",
            "tasks_per_step": f"paper: gradients averaged over 16 tasks per step ({_UNCHECKED})",
            "lr_decay_every": "fsar: no decay taken as given; constant learning rate",
            "lr_decay": "fsar: unused (no decay)",
            "budget": "fsar: the training length per dataset was not checked against the paper; 0 = not given",
        },
    )
    # Per episode forward, every video's tuple keys and values (84 tuples x 1152 x 2 at T = 8, ~0.8 MB a video)
    # dominate: 256 gives 10 one-shot / 2 five-shot 5-way episodes (~80 MB) per forward.
    eval_pairs = 256

    def __init__(self, dims: Mapping[str, int], frames: int, config: TRXConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: TRXConfig = self.config
        if len(self.dims) != 1:
            raise ValueError(f"trx reads one modality, got {sorted(self.dims)}")
        if not cfg.cardinalities or not all(1 <= w <= frames for w in cfg.cardinalities):
            raise ValueError(f"cardinalities {cfg.cardinalities} must lie in 1..{frames} (the frames)")
        dim = next(iter(self.dims.values()))
        self.dropout = nn.Dropout(cfg.dropout)
        self.transformers = nn.ModuleList(_CrossTransformer(dim, w, cfg.hidden) for w in cfg.cardinalities)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Dropout(x_t + scale·PE(t)): [..., T, D] -> [..., T, D]."""
        pe = position_encoding(frames.shape[-2], frames.shape[-1]).to(frames.device, frames.dtype)
        return self.dropout(frames + self.config.pe_scale * pe)

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part: position encoding and every cardinality's tuple keys and values,
        {m: [E, N, T, D]} -> {"k<i>", "v<i>": [E, N, |Π_ω|, hidden]} for the i-th ω of ``cardinalities``."""
        frames = self._encode(single_stream(videos))
        codes: VideoCodes = {}
        for i, transformer in enumerate(self.transformers):
            assert isinstance(transformer, _CrossTransformer)
            codes[f"k{i}"], codes[f"v{i}"] = transformer.keys_values(frames)
        return codes

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              **_: object) -> torch.Tensor:
        """The per-episode part: query-specific class prototypes and distances, mean over Ω -> [E, Q, way]."""
        distances = [d for d, _ in self._per_cardinality(query, support, support_labels, way)]
        return -torch.stack(distances).mean(dim=0)

    def _per_cardinality(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor,
                         way: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(distances [E, Q, W], attention [E, Q, |Π|, W, K*|Π|]) for each ω in ``cardinalities``."""
        index, valid = class_slots(support_labels, way)
        for i, transformer in enumerate(self.transformers):
            assert isinstance(transformer, _CrossTransformer)
            yield transformer.distances(query[f"k{i}"], query[f"v{i}"], support[f"k{i}"], support[f"v{i}"],
                                        index, valid)

    def attention(self, query: Features, support: Features, support_labels: torch.Tensor,
                  way: int) -> list[torch.Tensor]:
        """The attention maps a_{ps}, one [E, Q, |Π|, W, K*|Π|] per cardinality (for inspection)."""
        codes = self.encode_pair(query, support)
        return [attention for _, attention in self._per_cardinality(*codes, support_labels, way)]

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        return self.match(*self.encode_pair(query, support), support_labels, way)
