"""Contract every learned head in the registry must meet.

Shape and finiteness, invariance to the order of the supports, a gradient for every parameter, and
overfitting a tiny 2-way task. Heads are built with their paper defaults on small features (D = 16); heads
that read class names (HCL's semantic attention) get a fixed random embedding per class (:func:`_names`).
"""

from __future__ import annotations

import pytest
import torch

from fsar.matchers.head import Features, Head, episode_targets
from fsar.matchers.registry import MatcherInfo, load_all

LEARNED = sorted(name for name, info in load_all().items() if info.kind == "learned")
D, T, P = 16, 4, 4


TEXT_DIM = 384


def _names(head: Head, e: int, way: int, rename: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``class_text=`` for a head that reads class names ({} for the others): a fixed random embedding per
    class [e, way, 384]; ``rename`` [way] moves class c's embedding to label rename[c]."""
    if not head.uses_class_text:
        return {}
    text = torch.randn(e, way, TEXT_DIM, generator=torch.Generator().manual_seed(99))
    if rename is not None:
        text = torch.empty_like(text).index_copy_(1, rename, text)
    return {"class_text": text}


def _modalities(info: MatcherInfo) -> tuple[str, ...]:
    return ("rgb", "flow") if info.needs_flow else ("rgb",)


def _build(name: str, seed: int = 0) -> Head:
    info = load_all()[name]
    torch.manual_seed(seed)
    head = info.obj({m: D for m in _modalities(info)}, T)
    assert isinstance(head, Head)
    return head


def _random(info: MatcherInfo, gen: torch.Generator, e: int, n: int) -> Features:
    shape = (e, n, T, P, D) if info.needs_patches else (e, n, T, D)
    return {m: torch.randn(shape, generator=gen) for m in _modalities(info)}


def _episode(name: str, seed: int, e: int, way: int, shot: int, query: int):
    info = load_all()[name]
    gen = torch.Generator().manual_seed(seed)
    q = _random(info, gen, e, way * query)
    s = _random(info, gen, e, way * shot)
    labels = torch.stack([torch.arange(way).repeat_interleave(shot)[torch.randperm(way * shot, generator=gen)]
                          for _ in range(e)])
    return q, s, labels


def test_learned_heads_are_registered() -> None:
    assert {"tap", "ita", "rvn", "tsjm", "trx"} <= set(LEARNED)
    assert load_all()["tsjm"].needs_flow


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize(("way", "shot", "query"), [(3, 2, 2), (2, 1, 1)])
def test_shape_finite_and_support_order(name: str, way: int, shot: int, query: int) -> None:
    head = _build(name).eval()
    q, s, labels = _episode(name, seed=1, e=2, way=way, shot=shot, query=query)
    with torch.no_grad():
        out = head(q, s, labels, way, **_names(head, 2, way))
        perm = torch.randperm(way * shot, generator=torch.Generator().manual_seed(2))
        permuted = head(q, {m: x[:, perm] for m, x in s.items()}, labels[:, perm], way, **_names(head, 2, way))
    assert out.shape == (2, way * query, way)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(permuted, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", LEARNED)
def test_relabelling_classes_permutes_scores(name: str) -> None:
    """Class c of the episode is just a label: renaming the support classes (their names' embeddings moving with
    them) permutes the score columns."""
    head = _build(name).eval()
    q, s, labels = _episode(name, seed=3, e=2, way=3, shot=2, query=1)
    rename = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = head(q, s, labels, 3, **_names(head, 2, 3))
        renamed = head(q, s, rename[labels], 3, **_names(head, 2, 3, rename))
    torch.testing.assert_close(renamed[..., rename], out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", LEARNED)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    head = _build(name).train()
    q, s, labels = _episode(name, seed=4, e=2, way=3, shot=2, query=2)
    loss, parts = head.loss(q, s, labels, 3, episode_targets(3, 2, 2), **_names(head, 2, 3))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert parts and all(isinstance(v, float) for v in parts.values())
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"parameters without gradient: {missing}"


def _tiny_task(name: str, n_episodes: int = 6):
    """2-way 1-shot episodes over 2 classes x 4 videos; a class is a noisy direction (weak: noise 1, signal 0.6)."""
    info = load_all()[name]
    gen = torch.Generator().manual_seed(5)
    centres = {m: torch.randn(2, D, generator=gen) * 0.6 for m in _modalities(info)}
    shape = (2, 4, T, P, D) if info.needs_patches else (2, 4, T, D)
    videos = {m: torch.randn(shape, generator=gen) + c.view(2, 1, *([1] * (len(shape) - 3)), D)
              for m, c in centres.items()}
    qs, ss = [], []
    for _ in range(n_episodes):
        picks = torch.stack([torch.randperm(4, generator=gen)[:2] for _ in range(2)])  # per class: support, query
        ss.append(picks[:, 0])
        qs.append(picks[:, 1])
    sup_idx, q_idx = torch.stack(ss), torch.stack(qs)  # [E, 2]
    cls = torch.arange(2)
    support = {m: v[cls, sup_idx] for m, v in videos.items()}
    query = {m: v[cls, q_idx] for m, v in videos.items()}
    labels = cls.expand(n_episodes, 2)
    return query, support, labels


@pytest.mark.parametrize("name", LEARNED)
def test_overfits_a_tiny_two_way_task(name: str) -> None:
    head = _build(name, seed=6)
    query, support, labels = _tiny_task(name)
    targets = episode_targets(2, 1, labels.shape[0])
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    head.train()
    first = None
    for _ in range(300):
        optimizer.zero_grad()
        loss, _ = head.loss(query, support, labels, 2, targets, **_names(head, labels.shape[0], 2))
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
        head.eval()
        with torch.no_grad():
            accuracy = (head(query, support, labels, 2, **_names(head, labels.shape[0], 2)).argmax(-1)
                        == targets).float().mean()
        head.train()
        if accuracy == 1.0 and float(loss.detach()) < first:
            break
    assert accuracy == 1.0
    assert float(loss.detach()) < first
