"""Contract every parameter-free matcher in the registry must meet.

``score(query [E, Q, T, D], support [E, W*K, T, D], support_labels [E, W*K], way) -> [E, Q, way]``, higher =
more similar: the right shape, finite, independent of the order of the supports, float16 input accepted, chance
accuracy on random features and near-perfect accuracy on separable ones, tiny episodes (way 2, shot 1, T 1)
handled, and a ValueError for a class without supports or non-finite features.
"""

from __future__ import annotations

import numpy as np
import pytest

from fsar.matchers.registry import MatcherInfo, load_all

PARAMETER_FREE = sorted(name for name, info in load_all().items() if info.kind == "parameter-free")


def _features(info: MatcherInfo, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random features [E, N, T, D]; matchers needing patches get [E, N, T, P, D] with P = 4."""
    if info.needs_patches:
        shape = (*shape[:-1], 4, shape[-1])
    return rng.normal(size=shape).astype(np.float32)


def _episodes(info: MatcherInfo, seed: int, e: int, way: int, shot: int, query: int, t: int, d: int = 16):
    rng = np.random.default_rng(seed)
    q = _features(info, rng, (e, way * query, t, d))
    s = _features(info, rng, (e, way * shot, t, d))
    labels = np.stack([rng.permutation(np.repeat(np.arange(way), shot)) for _ in range(e)])
    q_labels = np.tile(np.repeat(np.arange(way), query), (e, 1))
    return q, s, labels, q_labels


def _separable(q, s, labels, q_labels, way):
    """Add a strong class-specific direction to every frame (and patch) of every video."""
    e, d = q.shape[0], q.shape[-1]
    centres = np.random.default_rng(99).normal(size=(e, way, d)).astype(np.float32) * 4
    expand = (slice(None),) * 2 + (None,) * (q.ndim - 3)

    def shift(x, lab):
        return x + np.take_along_axis(centres, lab[..., None], axis=1)[expand]

    return shift(q, q_labels), shift(s, labels)


def _score(name: str, q, s, labels, way: int) -> np.ndarray:
    info = load_all()[name]
    return np.asarray(info.obj(q, s, labels, way))


def test_registry_lists_the_parameter_free_matchers() -> None:
    assert {"bimhm", "chamfer", "dtw", "jmm", "km", "otam", "proto", "zoom"} <= set(PARAMETER_FREE)
    assert load_all()["zoom"].needs_patches


@pytest.mark.parametrize("name", PARAMETER_FREE)
def test_shape_finite_and_support_order(name: str) -> None:
    info = load_all()[name]
    q, s, labels, _ = _episodes(info, seed=1, e=3, way=4, shot=3, query=2, t=6)
    out = _score(name, q, s, labels, 4)
    assert out.shape == (3, 8, 4)
    assert np.isfinite(out).all()
    perm = np.random.default_rng(2).permutation(s.shape[1])
    permuted = _score(name, q, s[:, perm], labels[:, perm], 4)
    np.testing.assert_allclose(permuted, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", PARAMETER_FREE)
def test_float16_input(name: str) -> None:
    info = load_all()[name]
    q, s, labels, _ = _episodes(info, seed=3, e=2, way=3, shot=2, query=1, t=4)
    out16 = _score(name, q.astype(np.float16), s.astype(np.float16), labels, 3)
    assert out16.shape == (2, 3, 3) and np.isfinite(out16).all()


@pytest.mark.parametrize("name", PARAMETER_FREE)
def test_chance_on_random_and_perfect_on_separable(name: str) -> None:
    info = load_all()[name]
    way = 5
    q, s, labels, q_labels = _episodes(info, seed=4, e=160, way=way, shot=1, query=1, t=8)
    accuracy = (_score(name, q, s, labels, way).argmax(-1) == q_labels).mean()
    assert 0.12 < accuracy < 0.28  # 800 queries: chance 0.2, std 0.014
    q, s = _separable(q, s, labels, q_labels, way)
    accuracy = (_score(name, q, s, labels, way).argmax(-1) == q_labels).mean()
    assert accuracy > 0.97


@pytest.mark.parametrize("name", PARAMETER_FREE)
@pytest.mark.parametrize(
    ("way", "shot", "query", "t"),
    [(2, 1, 1, 8), (5, 1, 1, 1), (2, 5, 1, 1), (3, 2, 2, 2), (5, 5, 1, 8)],
)
def test_small_episodes(name: str, way: int, shot: int, query: int, t: int) -> None:
    info = load_all()[name]
    q, s, labels, q_labels = _episodes(info, seed=5, e=2, way=way, shot=shot, query=query, t=t)
    out = _score(name, q, s, labels, way)
    assert out.shape == (2, way * query, way) and np.isfinite(out).all()
    q, s = _separable(q, s, labels, q_labels, way)
    assert (_score(name, q, s, labels, way).argmax(-1) == q_labels).all()


@pytest.mark.parametrize("name", PARAMETER_FREE)
def test_rejects_a_class_without_supports(name: str) -> None:
    info = load_all()[name]
    q, s, labels, _ = _episodes(info, seed=6, e=1, way=3, shot=1, query=1, t=4)
    with pytest.raises(ValueError):
        _score(name, q, s, np.zeros_like(labels), 3)


@pytest.mark.parametrize("name", PARAMETER_FREE)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("role", ["query", "support"])
def test_non_finite_features_are_rejected(name: str, value: float, role: str) -> None:
    info = load_all()[name]
    q, s, labels, _ = _episodes(info, seed=5, e=3, way=3, shot=2, query=2, t=4)
    bad = q if role == "query" else s
    rng = np.random.default_rng(6)
    bad[tuple(int(rng.integers(n)) for n in bad.shape)] = value  # one element, anywhere
    with pytest.raises(ValueError, match="NaN or inf"):
        _score(name, q, s, labels, 3)
