"""RVN head: split first convolution, class centroids and the MSE objective against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsar.matchers.head import config_origins, episode_targets, train_origins
from fsar.matchers.rvn import RVNConfig, RVNHead

D, T = 5, 4
TINY = RVNConfig(channels=6, hidden=4)


def _head(seed: int = 0, frames: int = T) -> RVNHead:
    torch.manual_seed(seed)
    return RVNHead({"rgb": D}, frames, TINY).double()


def _videos(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_split_first_conv_equals_conv_on_concatenation() -> None:
    head = _head()
    centroids, query = _videos(1, 2, 3, T, D), _videos(2, 2, 2, T, D)
    with torch.no_grad():
        got = head.first_conv(centroids, query)
        for e in range(2):
            for q in range(2):
                for w in range(3):
                    pair = torch.cat([centroids[e, w], query[e, q]], dim=-1).T[None]  # [1, 2D, T], support first
                    want = F.conv1d(pair, head.conv1.weight, padding=1)[0]
                    torch.testing.assert_close(got[e, q, w], want, rtol=1e-12, atol=1e-12)


def test_mse_loss_equals_hand_computation() -> None:
    head = _head(seed=3).eval()
    query, support = _videos(4, 2, 6, T, D), _videos(5, 2, 6, T, D)
    labels = torch.tensor([[2, 0, 1, 1, 0, 2], [0, 1, 2, 0, 1, 2]])
    targets = episode_targets(3, 2, 2)
    with torch.no_grad():
        scores = head({"rgb": query}, {"rgb": support}, labels, 3).tolist()
        loss, parts = head.loss({"rgb": query}, {"rgb": support}, labels, 3, targets)
    squares = [(scores[e][q][c] - (1.0 if int(targets[e, q]) == c else 0.0)) ** 2
               for e in range(2) for q in range(6) for c in range(3)]
    assert float(loss) == pytest.approx(sum(squares) / len(squares), rel=1e-12)
    assert parts["mse"] == pytest.approx(float(loss))
    assert all(0.0 <= s <= 1.0 for row in scores for s in sum(row, []))


@pytest.mark.parametrize("train", [False, True])
def test_k_shot_is_the_class_centroid_in_any_shot_order(train: bool) -> None:
    head = _head(seed=6).train(train)
    query, support = _videos(7, 1, 3, T, D), _videos(8, 1, 6, T, D)
    labels = torch.tensor([[1, 0, 1, 0, 1, 0]])
    with torch.no_grad():
        out = head({"rgb": query}, {"rgb": support}, labels, 2)
        reversed_shots = head({"rgb": query}, {"rgb": support.flip(1)}, labels.flip(1), 2)
        means = torch.stack([support[0, labels[0] == c].mean(0) for c in range(2)])[None]
        one_shot = head({"rgb": query}, {"rgb": means}, torch.tensor([[0, 1]]), 2)
    torch.testing.assert_close(reversed_shots, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(one_shot, out, rtol=1e-12, atol=1e-12)


def test_relation_module_matches_layer_by_layer_reference() -> None:
    """g_φ of Fig. 5 applied to one explicit concatenation, with eval-mode batch norm."""
    head = _head(seed=9).eval()
    with torch.no_grad():
        stats = {}
        for bn in (head.bn1, head.bn2):  # non-trivial running statistics
            mean, var = bn.running_mean, bn.running_var
            assert mean is not None and var is not None
            stats[bn] = (mean.uniform_(-0.5, 0.5), var.uniform_(0.5, 2.0))
        centroid, query = _videos(10, 1, 1, T, D), _videos(11, 1, 1, T, D)
        got = float(head.relation(centroid, query)[0, 0, 0])
        h = torch.cat([centroid[0, 0], query[0, 0]], dim=-1).T[None]
        for conv, bn in ((head.conv1, head.bn1), (head.conv2, head.bn2)):
            mean, var = stats[bn]
            h = (conv(h) - mean[:, None]) / torch.sqrt(var[:, None] + bn.eps)
            h = torch.relu(h * bn.weight[:, None] + bn.bias[:, None])
        h = torch.relu(head.fc1(h.mean(-1)))
        want = float(torch.sigmoid(head.fc2(h)))
    assert got == pytest.approx(want, rel=1e-12)


def test_schedule_is_the_ita_papers_and_every_default_says_where_it_comes_from() -> None:
    """RVN is the ITA paper's baseline: it takes that paper's training setup (SGD, lr 1e-5, x 0.1 every 12,000
    of 18,000 episodes), which the paper states for its own model, so the optimiser settings are fsar's."""
    d = RVNHead.defaults
    assert (d.lr_decay_every, d.lr_decay, d.budget) == (12_000, 0.1, 18_000)
    assert {o.source for o in train_origins(d, "rvn")} == {"fsar"}
    assert {o.name: o.source for o in config_origins(RVNConfig)} == {"channels": "paper", "kernel": "paper",
                                                                     "hidden": "paper"}


def test_paper_defaults_and_bad_kernel() -> None:
    assert RVNHead.defaults.optimizer == "sgd" and RVNHead.defaults.lr == 1e-5
    cfg = RVNConfig()
    assert (cfg.channels, cfg.kernel, cfg.hidden) == (64, 3, 64)
    with pytest.raises(ValueError):
        RVNHead({"rgb": D}, T, RVNConfig(kernel=2))


@pytest.mark.parametrize("frames", [1, 8])
def test_any_number_of_frames(frames: int) -> None:
    head = _head(seed=12, frames=frames).eval()
    query, support = _videos(13, 2, 2, frames, D), _videos(14, 2, 2, frames, D)
    with torch.no_grad():
        out = head({"rgb": query}, {"rgb": support}, torch.tensor([[0, 1], [1, 0]]), 2)
    assert out.shape == (2, 2, 2) and torch.isfinite(out).all()
