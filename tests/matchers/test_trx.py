"""TRX head against a plain-Python reference written straight from docs/methods.md (section trx)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from fsar.matchers.head import config_from_params, config_origins, train_origins
from fsar.matchers.trx import (
    TRXConfig,
    TRXHead,
    class_slots,
    position_encoding,
    prototype_distances,
    tuple_indices,
)


def _hand_pe(t: int, j: int, dim: int) -> float:
    """PE[t, j]: sin for even j, cos for odd j, frequency 1 / 10000^(2*(j//2)/dim)."""
    angle = t / 10000 ** (2 * (j // 2) / dim)
    return math.sin(angle) if j % 2 == 0 else math.cos(angle)


@dataclass(frozen=True)
class _Params:
    """One cardinality's weights in float64."""

    wk: torch.Tensor
    bk: torch.Tensor
    gamma: torch.Tensor
    beta: torch.Tensor
    eps: float
    wv: torch.Tensor
    bv: torch.Tensor


def _params(transformer: Any) -> _Params:
    return _Params(transformer.key.weight.double(), transformer.key.bias.double(),
                   transformer.key_norm.weight.double(), transformer.key_norm.bias.double(), transformer.key_norm.eps,
                   transformer.value.weight.double(), transformer.value.bias.double())


def _reference_tuples(video: torch.Tensor, omega: int) -> list[torch.Tensor]:
    """[x_t1 + 0.1 PE(t1); ...; x_tω + 0.1 PE(tω)] for every t1 < ... < tω."""
    frames, dim = video.shape
    encoded = [video[t].double() + 0.1 * torch.tensor([_hand_pe(t, j, dim) for j in range(dim)], dtype=torch.float64)
               for t in range(frames)]
    return [torch.cat([encoded[t] for t in combo]) for combo in itertools.combinations(range(frames), omega)]


def _reference_key(w: _Params, p: torch.Tensor) -> torch.Tensor:
    """LayerNorm(W_k p), the normalisation written out."""
    z = w.wk @ p + w.bk
    return (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + w.eps) * w.gamma + w.beta


def _reference_distance(w: _Params, query_tuples: list[torch.Tensor], class_tuples: list[torch.Tensor]) -> float:
    """(1/|Π|) Σ_p ‖v_Q(p) − Σ_s softmax_s(k_Q(p)·k_S(s)/√d) v_S(s)‖², s over all tuples of the class."""
    total = 0.0
    for p in query_tuples:
        scores = [float(_reference_key(w, p) @ _reference_key(w, s)) / math.sqrt(w.wk.shape[0]) for s in class_tuples]
        top = max(scores)
        weights = [math.exp(x - top) for x in scores]
        prototype = sum(a / sum(weights) * (w.wv @ s + w.bv) for a, s in zip(weights, class_tuples, strict=True))
        total += float(((w.wv @ p + w.bv - prototype) ** 2).sum())
    return total / len(query_tuples)


def _reference_logits(head: TRXHead, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor,
                      way: int) -> torch.Tensor:
    """Loops over cardinalities, episodes, queries and classes, in float64. Head in eval mode."""
    out = torch.zeros(query.shape[0], query.shape[1], way, dtype=torch.float64)
    cardinalities = head.config.cardinalities
    for transformer, omega in zip(head.transformers, cardinalities, strict=True):
        w = _params(transformer)
        for e in range(query.shape[0]):
            for qi in range(query.shape[1]):
                query_tuples = _reference_tuples(query[e, qi], omega)
                for c in range(way):
                    class_tuples = [p for s in range(support.shape[1]) if labels[e, s] == c
                                    for p in _reference_tuples(support[e, s], omega)]
                    out[e, qi, c] -= _reference_distance(w, query_tuples, class_tuples) / len(cardinalities)
    return out


def _episode(seed: int, labels: list[list[int]], queries: int, frames: int = 4, dim: int = 8):
    gen = torch.Generator().manual_seed(seed)
    support_labels = torch.tensor(labels)
    e, s = support_labels.shape
    query = torch.randn(e, queries, frames, dim, generator=gen)
    support = torch.randn(e, s, frames, dim, generator=gen)
    return query, support, support_labels


def _head(dim: int = 8, frames: int = 4, seed: int = 0) -> TRXHead:
    """The head with paper defaults, in eval mode."""
    torch.manual_seed(seed)
    head = TRXHead({"rgb": dim}, frames)
    # Non-trivial LayerNorm affine parameters so that the reference checks they are used.
    with torch.no_grad():
        for norm in head.modules():
            if isinstance(norm, nn.LayerNorm):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.2, 0.2)
    return head.eval()


@pytest.mark.parametrize(
    "labels",
    [
        [[1, 0, 0, 1], [0, 1, 1, 0]],  # way 2, shot 2, supports shuffled
        [[0, 1, 0, 0]],  # unequal class sizes: padded class slots must not leak into the softmax
    ],
)
def test_matches_plain_python_reference(labels: list[list[int]]) -> None:
    head = _head()
    query, support, support_labels = _episode(0, labels, queries=3)
    with torch.no_grad():
        fast = head({"rgb": query}, {"rgb": support}, support_labels, 2)
        reference = _reference_logits(head, query, support, support_labels, 2)
    torch.testing.assert_close(fast.double(), reference, rtol=1e-5, atol=1e-4)


def test_tuples_are_every_combination_in_time_order() -> None:
    pairs, triples = tuple_indices(8, 2), tuple_indices(8, 3)
    assert pairs.shape == (28, 2) and triples.shape == (56, 3)
    assert pairs.tolist() == [list(c) for c in itertools.combinations(range(8), 2)]
    assert triples.tolist() == [list(c) for c in itertools.combinations(range(8), 3)]
    assert (triples[:, 1:] > triples[:, :-1]).all()
    with pytest.raises(ValueError):
        tuple_indices(2, 3)


@pytest.mark.parametrize("dim", [8, 7])
def test_position_encoding_is_the_standard_sinusoid_times_a_tenth(dim: int) -> None:
    frames = 5
    hand = torch.tensor([[_hand_pe(t, j, dim) for j in range(dim)] for t in range(frames)], dtype=torch.float32)
    torch.testing.assert_close(position_encoding(frames, dim), hand)
    head = _head(dim=dim, frames=frames)
    x = torch.randn(2, 3, frames, dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(head._encode(x), x + 0.1 * hand)  # eval mode: no dropout


def test_one_shot_attention_sums_to_one_over_the_single_support() -> None:
    head = _head()
    way = 3
    query, support, labels = _episode(2, [[2, 0, 1], [1, 2, 0]], queries=2)
    with torch.no_grad():
        maps = head.attention({"rgb": query}, {"rgb": support}, labels, way)
    for attention, omega in zip(maps, (2, 3), strict=True):
        n_tuples = math.comb(4, omega)
        assert attention.shape == (2, 2, n_tuples, way, n_tuples)  # one support: K*|Π| = |Π|
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 2, n_tuples, way))


def test_class_slots_group_supports_of_any_order() -> None:
    labels = torch.tensor([[2, 0, 1, 0, 2, 1], [0, 0, 0, 1, 2, 2]])
    index, valid = class_slots(labels, 3)
    assert index.shape == (2, 3, 3)
    for e in range(2):
        for c in range(3):
            assert sorted(index[e, c][valid[e, c]].tolist()) == [s for s in range(6) if labels[e, s] == c]
    with pytest.raises(ValueError):
        class_slots(torch.tensor([[0, 0, 1]]), 3)  # class 2 has no support


def test_dropout_only_in_train_mode_and_config_from_params() -> None:
    head = _head()
    query, support, labels = _episode(3, [[0, 1]], queries=2)
    args = ({"rgb": query}, {"rgb": support}, labels, 2)
    with torch.no_grad():
        torch.testing.assert_close(head(*args), head(*args))
        head.train()
        assert not torch.equal(head(*args), head(*args))
    config = config_from_params(TRXConfig, {"cardinalities": "1,2,3", "hidden": "64"})
    assert config == TRXConfig(cardinalities=(1, 2, 3), hidden=64)
    assert len(TRXHead({"rgb": 8}, 4, config).transformers) == 3
    with pytest.raises(ValueError):
        TRXHead({"rgb": 8}, 4, TRXConfig(cardinalities=(5,)))


def test_every_default_says_whether_it_is_the_papers() -> None:
    config = {o.name: o.source for o in config_origins(TRXConfig)}
    assert config == {"cardinalities": "paper", "hidden": "paper", "dropout": "fsar", "pe_scale": "fsar"}
    train = {o.name: o for o in train_origins(TRXHead.defaults, "trx")}
    assert {n for n, o in train.items() if o.source == "paper"} == {"optimizer", "lr", "tasks_per_step"}
    assert (train["tasks_per_step"].value, train["budget"].value, train["lr_decay_every"].value) == (16, 0, 0)


@pytest.mark.parametrize("autocast", [False, True])
def test_expanded_distances_equal_the_prototypes_and_their_gradients(autocast: bool) -> None:
    gen = torch.Generator().manual_seed(4)
    v = torch.randn(2, 3, 5, 64, generator=gen, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2, 3, 5, 4, 10, generator=gen, dtype=torch.float64).softmax(-1).requires_grad_()
    values = torch.randn(2, 4, 10, 64, generator=gen, dtype=torch.float64, requires_grad=True)
    # Oracle: form every prototype t = Σ_n a_n V_n and square the difference, in float64.
    direct = (v[:, :, :, None] - torch.einsum("eqpwn,ewnh->eqpwh", a, values)).square().sum(-1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # bf16 would not survive the cancelling
        fast = prototype_distances(v.float(), a.float(), values.float())
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), direct, rtol=1e-5, atol=1e-4)
    weights = torch.randn(direct.shape, generator=gen, dtype=torch.float64)
    expected = torch.autograd.grad((direct * weights).sum(), (v, a, values))
    got = torch.autograd.grad((fast.double() * weights).sum(), (v, a, values))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_a_training_step_never_keeps_a_prototype_sized_tensor() -> None:
    # The prototypes [E, Q, |Π|, way, 1152] and their differences to the query values held most of a
    # training step's memory (2.9 GB of 16 five-way tasks): nothing that large may be saved for backward.
    head = TRXHead({"rgb": 16}, 6).train()
    query, support, labels = _episode(5, [[3, 0, 2, 1]] * 2, queries=8, frames=6, dim=16)  # 4-way, 2 queries each
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        largest[0] = max(largest[0], t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = head({"rgb": query}, {"rgb": support}, labels, 4)
    logits.sum().backward()
    triples = math.comb(6, 3)
    prototypes = 2 * 8 * triples * 4 * head.config.hidden
    tuple_codes = 2 * (8 + 4) * triples * head.config.hidden  # every video's triples, encoded together
    assert largest[0] == tuple_codes < prototypes
