"""ITA head: circle loss against its closed-form gradients and plain-Python references, the LSTM descriptor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsar.matchers.head import config_origins, episode_targets, train_origins
from fsar.matchers.ita import ITAConfig, ITAHead, circle_loss


def _circle_reference(pos: list[float], neg: list[float], gamma: float, m: float) -> float:
    """Eq. 12 written as the paper's double sum over (positive i, negative j), in plain Python."""
    o_p, o_n, d_p, d_n = 1 + m, -m, 1 - m, m
    total = 0.0
    for s_p in pos:
        for s_n in neg:
            a_p, a_n = max(o_p - s_p, 0.0), max(s_n - o_n, 0.0)
            total += math.exp(gamma * (a_n * (s_n - d_n) - a_p * (s_p - d_p)))
    return math.log1p(total)


def test_circle_loss_hand_computed_case() -> None:
    # γ = 2, m = 0.25: O_p = 1.25, Δ_p = 0.75, O_n = -0.25, Δ_n = 0.25.
    # s_p = 0.8:  α_p = 0.45, -γ α_p (s_p - Δ_p) = -2 * 0.45 * 0.05 = -0.045
    # s_n = 0.3:  α_n = 0.55,  γ α_n (s_n - Δ_n) =  2 * 0.55 * 0.05 =  0.055
    # s_n = -0.5: α_n = [-0.25]_+ = 0 -> exponent 0
    # L = log(1 + e^{-0.045} (e^{0.055} + e^0)) = log(1 + e^{0.01} + e^{-0.045}) = 1.08723...
    got = circle_loss(torch.tensor([[0.8]], dtype=torch.float64), torch.tensor([[0.3, -0.5]], dtype=torch.float64),
                      gamma=2.0, m=0.25)
    expected = math.log(1 + math.exp(0.01) + math.exp(-0.045))
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.08723, abs=1e-5)


@pytest.mark.parametrize(("gamma", "m"), [(2.0, 0.25), (32.0, 0.4), (128.0, -0.2)])
def test_circle_loss_equals_plain_python_double_sum(gamma: float, m: float) -> None:
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(6, 3, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    neg = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    got = circle_loss(pos, neg, gamma, m)
    for row in range(6):
        ref = _circle_reference(pos[row].tolist(), neg[row].tolist(), gamma, m)
        assert float(got[row]) == pytest.approx(ref, rel=1e-10)


def _closed_form_grads(pos: torch.Tensor, neg: torch.Tensor, gamma: float, m: float):
    """∂L/∂s_n^j and ∂L/∂s_p^i of Eq. 14-15 with Z = 1 - exp(-L), generalised to clipped weights.

    Where α > 0, γ α_n (s_n - Δ_n) = γ(s_n² - m²) and -γ α_p (s_p - Δ_p) = γ((s_p - 1)² - m²) (Eq. 14's
    softmax; Eq. 15 prints the opposite sign, a typo), and the last factors γ α_n = γ(s_n + m),
    -γ α_p = γ(s_p - 1 - m). Where [.]_+ clips α to 0, the exponent is 0 and the gradient 0.
    """
    loss = circle_loss(pos, neg, gamma, m)
    z = 1 - torch.exp(-loss)[:, None]
    alpha_n, alpha_p = (neg + m).clamp_min(0), (1 + m - pos).clamp_min(0)
    exp_n = torch.where(alpha_n > 0, gamma * (neg**2 - m**2), torch.zeros_like(neg))
    exp_p = torch.where(alpha_p > 0, gamma * ((pos - 1) ** 2 - m**2), torch.zeros_like(pos))
    grad_n = z * torch.softmax(exp_n, dim=-1) * gamma * torch.where(alpha_n > 0, neg + m, torch.zeros_like(neg))
    grad_p = z * torch.softmax(exp_p, dim=-1) * gamma * torch.where(alpha_p > 0, pos - 1 - m, torch.zeros_like(pos))
    return grad_p, grad_n


@pytest.mark.parametrize(("gamma", "m"), [(2.0, 0.25), (8.0, 0.4), (4.0, -0.2)])
def test_circle_loss_gradients_match_eq_14_15(gamma: float, m: float) -> None:
    gen = torch.Generator().manual_seed(1)
    pos = (torch.rand(8, 3, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    neg = (torch.rand(8, 5, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    # With m = 0.4, s_n < -0.4 clips α_n; with m = -0.2, s_p > 0.8 clips α_p (and s_n < 0.2 clips α_n).
    clipped = ((neg + m) < 0).sum() + ((1 + m - pos) < 0).sum()
    if m == -0.2:
        assert ((1 + m - pos) < 0).any()
    assert clipped > 0
    circle_loss(pos, neg, gamma, m).sum().backward()  # rows are independent: each row's own gradient
    grad_p, grad_n = _closed_form_grads(pos.detach(), neg.detach(), gamma, m)
    torch.testing.assert_close(pos.grad, grad_p, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(neg.grad, grad_n, rtol=1e-10, atol=1e-12)


def test_eq_15_as_printed_differs_for_several_positives() -> None:
    """The printed softmax sign of Eq. 15 is not what Eq. 12 gives once there are two positives."""
    pos = torch.tensor([[0.9, 0.2]], dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([[0.1]], dtype=torch.float64)
    gamma, m = 4.0, 0.25
    loss = circle_loss(pos, neg, gamma, m)
    loss.sum().backward()
    z = 1 - torch.exp(-loss)
    printed = z * torch.softmax(gamma * (m**2 - (pos.detach() - 1) ** 2), -1) * gamma * (pos.detach() - 1 - m)
    assert not torch.allclose(pos.grad, printed)


def _episode(way: int, shot: int, query: int, d: int = 8, t: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = {"rgb": torch.randn(1, way * query, t, d, generator=gen)}
    s = {"rgb": torch.randn(1, way * shot, t, d, generator=gen)}
    labels = torch.arange(way).repeat_interleave(shot)[torch.randperm(way * shot, generator=gen)][None]
    return q, s, labels, episode_targets(way, query, 1)


def test_ce_ablation_is_cross_entropy_of_scaled_cosines() -> None:
    torch.manual_seed(0)
    head = ITAHead({"rgb": 8}, 5, ITAConfig(loss="ce", gamma=16.0))
    q, s, labels, targets = _episode(way=3, shot=2, query=2)
    loss, parts = head.loss(q, s, labels, 3, targets)
    cos = head(q, s, labels, 3).detach().double()
    ref = sum(-math.log(math.exp(16 * cos[0, i, int(c)]) / sum(math.exp(16 * v) for v in cos[0, i].tolist()))
              for i, c in enumerate(targets[0])) / cos.shape[1]
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-5)
    assert set(parts) == {"ce"}
    torch.testing.assert_close(loss, F.cross_entropy(16 * head(q, s, labels, 3)[0], targets[0]))


def _lstm_by_hand(head: ITAHead, video: torch.Tensor) -> torch.Tensor:
    """Eq. 3-7 without peepholes (torch's gate order i, f, g, o) on one [T, D] video -> h^T."""
    w_ih, w_hh = head.lstm.weight_ih_l0, head.lstm.weight_hh_l0
    b = head.lstm.bias_ih_l0 + head.lstm.bias_hh_l0
    h = c = torch.zeros(head.config.hidden)
    for x in video:
        i, f, g, o = (w_ih @ x + w_hh @ h + b).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def test_descriptor_is_last_lstm_hidden_state_and_scores_are_prototype_cosines() -> None:
    torch.manual_seed(0)
    head = ITAHead({"rgb": 8}, 5, ITAConfig(hidden=6)).eval()
    q, s, labels, _ = _episode(way=2, shot=3, query=1)
    with torch.no_grad():
        by_hand_q = torch.stack([_lstm_by_hand(head, v) for v in q["rgb"][0]])
        by_hand_s = torch.stack([_lstm_by_hand(head, v) for v in s["rgb"][0]])
        torch.testing.assert_close(head.describe(q["rgb"][0]), by_hand_q, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(head.describe(s["rgb"]), by_hand_s[None], rtol=1e-5, atol=1e-6)
        protos = torch.stack([by_hand_s[labels[0] == c].mean(0) for c in range(2)])
        expected = F.cosine_similarity(by_hand_q[:, None], protos[None], dim=-1)
        torch.testing.assert_close(head(q, s, labels, 2)[0], expected, rtol=1e-5, atol=1e-6)


def test_prototype_loss_is_circle_loss_of_query_to_prototype_cosines() -> None:
    torch.manual_seed(0)
    head = ITAHead({"rgb": 8}, 5, ITAConfig(gamma=32.0, m=0.25))
    q, s, labels, targets = _episode(way=3, shot=2, query=2)
    loss, parts = head.loss(q, s, labels, 3, targets)
    cos = head(q, s, labels, 3)[0].detach().double().tolist()
    refs = [_circle_reference([row[c]], [v for k, v in enumerate(row) if k != c], 32.0, 0.25)
            for row, c in zip(cos, targets[0].tolist(), strict=True)]
    assert float(loss.detach()) == pytest.approx(sum(refs) / len(refs), rel=1e-5)
    assert set(parts) == {"circle"}


def test_support_pairs_use_every_support_and_equal_prototypes_at_one_shot() -> None:
    torch.manual_seed(0)
    head = ITAHead({"rgb": 8}, 5, ITAConfig(gamma=32.0, m=0.25, pairs="support"))
    q, s, labels, targets = _episode(way=3, shot=2, query=2)
    loss, _ = head.loss(q, s, labels, 3, targets)
    with torch.no_grad():
        dq, ds = F.normalize(head.describe(q["rgb"][0]), dim=-1), F.normalize(head.describe(s["rgb"][0]), dim=-1)
    cos = (dq @ ds.T).double().tolist()
    lab = labels[0].tolist()
    refs = [_circle_reference([v for v, y in zip(row, lab, strict=True) if y == c],
                              [v for v, y in zip(row, lab, strict=True) if y != c], 32.0, 0.25)
            for row, c in zip(cos, targets[0].tolist(), strict=True)]
    assert float(loss.detach()) == pytest.approx(sum(refs) / len(refs), rel=1e-5)

    q1, s1, labels1, targets1 = _episode(way=3, shot=1, query=2, seed=1)
    proto_head = ITAHead({"rgb": 8}, 5, ITAConfig(gamma=32.0, m=0.25))
    proto_head.load_state_dict(head.state_dict())
    torch.testing.assert_close(head.loss(q1, s1, labels1, 3, targets1)[0],
                               proto_head.loss(q1, s1, labels1, 3, targets1)[0])


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss"):
        ITAHead({"rgb": 8}, 5, ITAConfig(loss="triplet"))
    with pytest.raises(ValueError, match="pairs"):
        ITAHead({"rgb": 8}, 5, ITAConfig(pairs="frames"))


def test_paper_schedule_and_where_every_default_comes_from() -> None:
    """Sec. 4.2: SGD, lr 1e-5, x 0.1 every 12,000 episodes, 18,000 training episodes (the budget)."""
    d = ITAHead.defaults
    assert (d.optimizer, d.lr, d.lr_decay_every, d.lr_decay, d.budget) == ("sgd", 1e-5, 12_000, 0.1, 18_000)
    assert (d.momentum, d.weight_decay, d.clip_norm, d.tasks_per_step) == (0.0, 0.0, None, 1)
    train = {o.name: o.source for o in train_origins(d, "ita")}
    assert {n for n, source in train.items() if source == "paper"} == {"optimizer", "lr", "lr_decay_every",
                                                                      "lr_decay", "budget"}
    config = {o.name: o for o in config_origins(ITAConfig)}
    assert [config[n].value for n in ("hidden", "gamma", "m", "loss")] == [512, 128.0, 0.4, "circle"]
    assert {n for n, o in config.items() if o.source == "fsar"} == {"pairs"}
