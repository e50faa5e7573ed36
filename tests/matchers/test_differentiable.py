"""Differentiable forms of the parameter-free matchers (``fsar finetune --episodic``) against the registered ones.

The registered numba matchers are the oracles: the torch forms must give their scores exactly where they claim
to (hard-min OTAM, soft-min OTAM at λ = 0.1, proto without its training scale), on random seeded episodes whose
supports come in shuffled label order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsar.matchers import otam, proto
from fsar.matchers.differentiable import (
    OTAM_LAMBDA,
    PROTO_SCALE,
    TRAINABLE,
    MatcherHead,
    otam_logits,
    proto_logits,
)

E, Q, T, D, WAY = 3, 4, 5, 16, 3


def episode(shots: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """query [E, Q, T, D], support [E, WAY*shots, T, D] float32 and labels [E, WAY*shots], each episode's labels
    in its own shuffled order."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((E, Q, T, D)).astype(np.float32)
    support = rng.standard_normal((E, WAY * shots, T, D)).astype(np.float32)
    labels = np.stack([rng.permutation(np.repeat(np.arange(WAY), shots)) for _ in range(E)]).astype(np.int64)
    assert not (labels == np.repeat(np.arange(WAY), shots)).all()  # the order really is shuffled
    return query, support, labels


def torch_form(form: object, query: np.ndarray, support: np.ndarray, labels: np.ndarray, **kw: object) -> np.ndarray:
    # float64 in torch: the comparison then measures the numba kernel's float32 rounding only
    out = form(torch.from_numpy(query).double(), torch.from_numpy(support).double(),  # type: ignore[operator]
               torch.from_numpy(labels), WAY, **kw)
    return out.numpy()


@pytest.mark.parametrize("shots", [1, 3])
def test_hard_min_otam_logits_equal_the_registered_otam(shots: int) -> None:
    query, support, labels = episode(shots, seed=10 + shots)
    expected = otam.score(query, support, labels, WAY)
    got = torch_form(otam_logits, query, support, labels, lam=None)
    assert got.shape == expected.shape == (E, Q, WAY)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # not a tautology: the soft form differs from the hard one by more than the tolerance
    soft = torch_form(otam_logits, query, support, labels, lam=OTAM_LAMBDA)
    assert np.abs(soft - expected).max() > 1e-3


@pytest.mark.parametrize("shots", [1, 3])
def test_soft_otam_logits_equal_the_registered_otam_soft(shots: int) -> None:
    query, support, labels = episode(shots, seed=20 + shots)
    expected = otam.score_soft(query, support, labels, WAY)
    got = torch_form(otam_logits, query, support, labels, lam=0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shots", [1, 3])
def test_proto_logits_without_scale_equal_the_registered_proto(shots: int) -> None:
    query, support, labels = episode(shots, seed=30 + shots)
    expected = proto.score(query, support, labels, WAY)
    got = torch_form(proto_logits, query, support, labels, scale=None)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # independent oracle: cosine of mean-pooled query to the mean of each class's mean-pooled supports
    for e in range(E):
        protos = np.stack([support[e, labels[e] == c].mean(axis=(0, 1)) for c in range(WAY)])
        pooled = query[e].mean(axis=1)
        cos = (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)) @ (
            protos / np.linalg.norm(protos, axis=1, keepdims=True)).T
        np.testing.assert_allclose(got[e], cos, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shots", [1, 3])
def test_proto_head_is_the_registered_proto_times_the_scale(shots: int) -> None:
    query, support, labels = episode(shots, seed=40 + shots)
    head = MatcherHead("proto", {"rgb": D}, T)
    with torch.no_grad():
        logits = head({"rgb": torch.from_numpy(query)}, {"rgb": torch.from_numpy(support)},
                      torch.from_numpy(labels), WAY).numpy()
    np.testing.assert_allclose(logits / PROTO_SCALE, proto.score(query, support, labels, WAY), rtol=1e-5, atol=1e-5)
    assert PROTO_SCALE != 1.0 and np.abs(logits).max() > 1.0  # the training scale is really applied


@pytest.mark.parametrize("name", ["otam", "otam_soft"])
def test_otam_heads_train_with_the_soft_min(name: str) -> None:
    query, support, labels = episode(1, seed=50)
    head = MatcherHead(name, {"rgb": D}, T)
    with torch.no_grad():
        logits = head({"rgb": torch.from_numpy(query)}, {"rgb": torch.from_numpy(support)},
                      torch.from_numpy(labels), WAY).numpy()
    np.testing.assert_allclose(logits, otam.score_soft(query, support, labels, WAY), rtol=1e-4, atol=1e-4)


def test_gradients_flow_through_the_otam_head_to_the_features() -> None:
    query, support, labels = episode(3, seed=60)
    q = torch.from_numpy(query).requires_grad_(True)
    s = torch.from_numpy(support).requires_grad_(True)
    head = MatcherHead("otam", {"rgb": D}, T)
    assert not list(head.parameters())  # a head without weights: only the features can learn
    logits = head({"rgb": q}, {"rgb": s}, torch.from_numpy(labels), WAY)
    targets = torch.arange(WAY).repeat_interleave(Q // WAY + 1)[:Q].expand(E, Q)
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for grad in (q.grad, s.grad):
        assert grad is not None and torch.isfinite(grad).all()
        assert (grad.abs().sum(dim=-1) > 0).all()  # the soft-min reaches every frame of every video


def test_a_matcher_without_a_differentiable_form_is_refused() -> None:
    with pytest.raises(ValueError, match="dtw has no differentiable form") as err:
        MatcherHead("dtw", {"rgb": D}, T)
    for name in TRAINABLE:
        assert name in str(err.value)
    assert set(TRAINABLE) >= {"otam", "otam_soft", "proto"}
