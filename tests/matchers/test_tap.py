"""TAP head against plain per-pair references of the paper's Eqs. 11-14."""

from __future__ import annotations

import math

import pytest
import torch

from fsar.matchers.head import config_from_params, config_origins, train_origins
from fsar.matchers.tap import TAPConfig, TAPHead
from fsar.runner.train import TrainConfig

D, T = 6, 3
TINY = TAPConfig(lstm_hidden=3, align_sizes=(5, 4))


def _head(seed: int = 0, config: TAPConfig = TINY) -> TAPHead:
    torch.manual_seed(seed)
    return TAPHead({"rgb": D}, T, config).double().eval()


def _videos(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _alignment_loop(head: TAPHead, x: torch.Tensor, y: torch.Tensor) -> list[list[list[list[list[float]]]]]:
    """Eq. 11 literally: h_β on concat(X_i, Y_j), one frame pair at a time."""
    e, q, t, _ = x.shape
    s = y.shape[1]
    return [[[[[float(torch.sigmoid(head.align(torch.cat([x[ei, qi, i], y[ei, si, j]]))))
                for j in range(t)] for i in range(t)] for si in range(s)] for qi in range(q)] for ei in range(e)]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(u * v for u, v in zip(a, b, strict=True))
    return dot / math.sqrt(sum(u * u for u in a) * sum(v * v for v in b))


def test_decomposed_alignment_equals_per_pair_mlp_on_concatenation() -> None:
    head = _head()
    x, y = _videos(1, 2, 2, T, 6), _videos(2, 2, 3, T, 6)  # BiLSTM outputs: 2 * lstm_hidden = 6 features
    with torch.no_grad():
        got = head.alignment(x, y)
        want = torch.tensor(_alignment_loop(head, x, y), dtype=torch.float64)
    assert got.shape == (2, 2, 3, T, T)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_video_similarity_is_sum_of_alignment_times_cosine() -> None:
    head = _head(seed=3)
    query, support = _videos(4, 2, 2, T, D), _videos(5, 2, 3, T, D)
    with torch.no_grad():
        got = head.pair_similarity(query, support)
        x, y = head.message_passing(query), head.message_passing(support)
        p = _alignment_loop(head, x, y)
    xs, ys = x.tolist(), y.tolist()
    for e in range(2):
        for q in range(2):
            for s in range(3):
                want = sum(p[e][q][s][i][j] * _cosine(xs[e][q][i], ys[e][s][j]) for i in range(T) for j in range(T))
                assert float(got[e, q, s]) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_message_passing_is_per_video_and_bidirectional() -> None:
    head = _head(seed=6)
    videos = _videos(7, 3, T, D)
    with torch.no_grad():
        together = head.message_passing(videos)
        alone = torch.stack([head.message_passing(v[None])[0] for v in videos])
        changed = videos.clone()
        changed[0, -1] += 1.0
        after = head.message_passing(changed)
    assert together.shape == (3, T, 6)
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)
    # The backward direction carries the last frame's change to the first time step (context, §4.2).
    assert not torch.allclose(after[0, 0], together[0, 0])
    torch.testing.assert_close(after[1:], together[1:], rtol=0, atol=0)


def test_class_score_is_mean_over_that_class_shots() -> None:
    head = _head(seed=8)
    query, support = _videos(9, 1, 2, T, D), _videos(10, 1, 5, T, D)
    labels = torch.tensor([[1, 0, 2, 1, 0]])
    with torch.no_grad():
        pair = head.pair_similarity(query, support)
        got = head({"rgb": query}, {"rgb": support}, labels, 3)
    shots = {c: [i for i, label in enumerate(labels[0].tolist()) if label == c] for c in range(3)}
    for q in range(2):
        for c, idx in shots.items():
            want = sum(float(pair[0, q, i]) for i in idx) / len(idx)
            assert float(got[0, q, c]) == pytest.approx(want, rel=1e-12)


def test_paper_defaults_and_params() -> None:
    assert TAPHead.defaults.optimizer == "sgd"
    assert (TAPHead.defaults.lr, TAPHead.defaults.momentum) == (1e-3, 0.9)
    assert (TAPHead.defaults.weight_decay, TAPHead.defaults.clip_norm) == (1e-4, 40.0)
    assert TAPHead.eval_pairs < 4096
    torch.manual_seed(0)
    head = TAPHead({"rgb": 32}, 8)
    assert head.lstm.hidden_size == 1024 and head.lstm.num_layers == 1 and head.lstm.bidirectional
    linear = [m for m in head.align if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(4096, 1024), (1024, 256), (256, 64), (64, 1)]
    assert config_from_params(TAPConfig, {"align_sizes": "32,8"}).align_sizes == (32, 8)
    with pytest.raises(ValueError):
        TAPHead({"rgb": D, "flow": D}, T)


def test_learning_rate_decays_every_200_epochs_of_the_trainer() -> None:
    """Sec. 5.2: lr x 0.1 every 200 epochs. The paper does not size an epoch; fsar counts the decay in training
    episodes, 200 of the trainer's default epochs."""
    epoch = TrainConfig(matcher="tap").episodes_per_epoch
    assert epoch == 1000
    assert (TAPHead.defaults.lr_decay_every, TAPHead.defaults.lr_decay) == (200 * epoch, 0.1)
    # No total is given; the schedule runs at least to its first decay, which the budget records.
    assert TAPHead.defaults.budget == 200 * epoch


def test_every_default_says_whether_it_is_the_papers() -> None:
    assert {o.source for o in config_origins(TAPConfig)} == {"paper"}
    train = {o.name: o for o in train_origins(TAPHead.defaults, "tap")}
    paper = {"optimizer", "lr", "momentum", "weight_decay", "clip_norm", "lr_decay"}
    assert {name for name, o in train.items() if o.source == "paper"} == paper
    assert "200 epochs" in train["lr_decay_every"].note


def test_logits_are_bounded_by_frame_pairs() -> None:
    """0 < P < 1 and |S| <= 1, so |s| < T² (Eq. 13): a sanity bound the softmax of Eq. 15 sees."""
    head = _head(seed=11)
    query, support = _videos(12, 2, 3, T, D) * 50, _videos(13, 2, 3, T, D) * 50
    with torch.no_grad():
        out = head({"rgb": query}, {"rgb": support}, torch.tensor([[0, 1, 2], [2, 1, 0]]), 3)
    assert out.abs().max() < T * T
