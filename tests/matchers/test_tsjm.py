"""TSJM head: InfoNCE by hand, KM gradient, hard OTAM and KM against the numba matchers, ablation switches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsar.matchers import jmm, km, otam
from fsar.matchers.head import episode_targets, shot_mean
from fsar.matchers.tsjm import TSJMConfig, TSJMHead, info_nce, matched_similarity, pair_scores

D, T = 16, 4


def _episode(seed: int, e: int = 2, way: int = 3, shot: int = 2, query: int = 2, t: int = T):
    gen = torch.Generator().manual_seed(seed)
    q = {m: torch.randn(e, way * query, t, D, generator=gen) for m in ("rgb", "flow")}
    s = {m: torch.randn(e, way * shot, t, D, generator=gen) for m in ("rgb", "flow")}
    labels = torch.stack([torch.arange(way).repeat_interleave(shot)[torch.randperm(way * shot, generator=gen)]
                          for _ in range(e)])
    return q, s, labels


def _head(**params) -> TSJMHead:
    torch.manual_seed(0)
    return TSJMHead({"rgb": D, "flow": D}, T, TSJMConfig(**params))


def test_info_nce_hand_case() -> None:
    # Two videos, unit 2-d descriptors: rgb_1 = (1, 0), rgb_2 = (0, 1), flow_1 = (0.6, 0.8), flow_2 = (0, 1).
    # Dot products: <r1,f1> = 0.6, <r1,f2> = 0, <r2,f1> = 0.8, <r2,f2> = 1; τ = 0.5 doubles them.
    rgb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    flow = torch.tensor([[0.6, 0.8], [0.0, 2.0]])  # flow_2 has norm 2: the loss normalises descriptors
    # rgb -> flow rows: r1: logits (1.2, 0), positive 1.2; r2: logits (1.6, 2.0), positive 2.0.
    rgb_to_flow = math.log(1 + math.exp(-1.2)) + math.log(1 + math.exp(-0.4))
    # flow -> rgb columns: f1: logits (1.2, 1.6), positive 1.2; f2: logits (0, 2.0), positive 2.0.
    flow_to_rgb = math.log(1 + math.exp(0.4)) + math.log(1 + math.exp(-2.0))
    expected = (rgb_to_flow + flow_to_rgb) / 4  # mean over 2 anchors, then over the 2 directions
    assert expected == pytest.approx(0.454060, abs=1e-6)
    got = info_nce(rgb, flow, temperature=0.5)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    batched = info_nce(torch.stack([rgb, rgb]), torch.stack([flow, flow]), temperature=0.5)  # [E, N, D]
    assert float(batched) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError):
        info_nce(rgb, flow[:1], temperature=0.5)


def test_km_loss_gradient_only_through_matched_entries() -> None:
    # One query, two supports (class 0, class 1), T = 2. Support 0 matches the diagonal (0.9 + 0.8 = 1.7),
    # support 1 the anti-diagonal (0.6 + 0.7 = 1.3).
    sim = torch.tensor([[[[[0.9, 0.1], [0.2, 0.8]],
                          [[0.1, 0.6], [0.7, 0.3]]]]], requires_grad=True)  # [E=1, Q=1, S=2, 2, 2]
    scores = matched_similarity(sim)
    torch.testing.assert_close(scores, torch.tensor([[[1.7, 1.3]]]))
    logits = shot_mean(scores, torch.tensor([[0, 1]]), 2)
    F.cross_entropy(logits.flatten(0, 1), torch.tensor([0])).backward()
    p1 = 1 / (1 + math.exp(0.4))  # softmax(1.7, 1.3)[1]; dL/dscore_0 = p0 - 1 = -p1, dL/dscore_1 = p1
    assert p1 == pytest.approx(0.401312, abs=1e-6)
    expected = torch.tensor([[[[[-p1, 0.0], [0.0, -p1]],
                               [[0.0, p1], [p1, 0.0]]]]])
    assert sim.grad is not None
    torch.testing.assert_close(sim.grad, expected)


def test_km_unequal_lengths_and_numba_scores() -> None:
    sim = torch.rand(5, 6, 4, generator=torch.Generator().manual_seed(1))  # T1 > T2: two rows unmatched
    ref = km.kernels.max_weight_matching(sim.numpy())[0]
    np.testing.assert_allclose(matched_similarity(sim).numpy(), ref, rtol=1e-6)


@pytest.mark.parametrize("t", [4, 8])
def test_hard_otam_and_km_pair_scores_equal_the_numba_matchers(t: int) -> None:
    q, s, _ = _episode(seed=2, t=t)
    scores = pair_scores(q["rgb"], s["rgb"], ("otam", "km"), lam=None)
    np.testing.assert_allclose(-scores["otam"].numpy(), otam.pair_distance(q["rgb"].numpy(), s["rgb"].numpy()),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores["km"].numpy(), km.pair_similarity(q["rgb"].numpy(), s["rgb"].numpy()),
                               rtol=1e-5, atol=1e-5)


def test_forward_with_adapters_off_is_the_otam_distance() -> None:
    """matching="otam", one shot: the head's score is -(d_rgb + d_flow) / 2 with d = otam.pair_distance."""
    head = _head(adapter=False, matching="otam").eval()
    q, s, labels = _episode(seed=3, shot=1)
    with torch.no_grad():
        out = head(q, s, labels, 3).numpy()
    d = (otam.pair_distance(q["rgb"].numpy(), s["rgb"].numpy())
         + otam.pair_distance(q["flow"].numpy(), s["flow"].numpy())) / 2  # [E, Q, S]
    expected = np.take_along_axis(-d, np.argsort(labels.numpy(), axis=1)[:, None, :], axis=2)  # supports -> classes
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_adapters_off_components_equal_jmm_up_to_the_logit_scale() -> None:
    head = _head(adapter=False)
    q, s, labels = _episode(seed=4)
    ref = jmm.component_scores({m: x.numpy() for m, x in q.items()}, {m: x.numpy() for m, x in s.items()},
                               labels.numpy(), 3)
    for scale in (1.0, 2.5):
        with torch.no_grad():
            head.logit_scale.fill_(math.log(scale))  # type: ignore[union-attr]
            got = head.component_scores(q, s, labels, 3)
        assert set(got) == set(ref) == {"rgb-otam", "rgb-km", "flow-otam", "flow-km"}
        for name in ref:
            np.testing.assert_allclose(got[name].numpy(), scale * ref[name], rtol=1e-5, atol=1e-4)
        with torch.no_grad():
            fused = head(q, s, labels, 3)
        torch.testing.assert_close(fused, sum(got.values()) / 4)


def test_ablation_switches() -> None:
    q, s, labels = _episode(seed=5)
    targets = episode_targets(3, 2, 2)
    _, parts = _head().loss(q, s, labels, 3, targets)
    assert set(parts) == {"rgb-otam", "rgb-km", "flow-otam", "flow-km", "infonce"}
    _, parts = _head(contrastive=False).loss(q, s, labels, 3, targets)
    assert "infonce" not in parts
    _, parts = _head(matching="otam").loss(q, s, labels, 3, targets)
    assert set(parts) == {"rgb-otam", "flow-otam", "infonce"}
    _, parts = _head(matching="km", contrastive=False).loss(q, s, labels, 3, targets)
    assert set(parts) == {"rgb-km", "flow-km"}

    on, off = _head(), _head(adapter=False)
    assert {n.split(".")[0] for n, _ in on.named_parameters()} == {"adapters"}
    assert [n for n, _ in off.named_parameters()] == ["logit_scale"]
    assert off.adapt(q)["rgb"] is q["rgb"]  # features pass through unchanged
    assert not torch.equal(on.adapt(q)["rgb"], q["rgb"])


def test_loss_is_sum_of_soft_otam_and_km_cross_entropies_plus_weighted_infonce() -> None:
    q, s, labels = _episode(seed=6)
    targets = episode_targets(3, 2, 2)
    head = _head(contrastive_weight=0.5)
    loss, parts = head.loss(q, s, labels, 3, targets)
    assert loss.item() == pytest.approx(sum(v for k, v in parts.items() if k != "infonce") + 0.5 * parts["infonce"],
                                        rel=1e-5)
    with torch.no_grad():
        soft = head.component_scores(q, s, labels, 3, lam=head.config.otam_lambda)
        hard = head.component_scores(q, s, labels, 3)
    ce = float(F.cross_entropy(soft["rgb-otam"].flatten(0, 1), targets.flatten()))
    assert parts["rgb-otam"] == pytest.approx(ce, rel=1e-5)  # training uses the soft-min OTAM
    assert not torch.allclose(soft["rgb-otam"], hard["rgb-otam"])
    assert (soft["rgb-otam"] >= hard["rgb-otam"] - 1e-5).all()  # soft-min distance <= hard-min distance


def test_weights_and_bad_configs() -> None:
    q, s, labels = _episode(seed=7)
    head = _head(rgb_otam_weight=3.0, flow_otam_weight=0.0, flow_km_weight=0.0).eval()
    with torch.no_grad():
        parts = head.component_scores(q, s, labels, 3)
        torch.testing.assert_close(head(q, s, labels, 3), 0.75 * parts["rgb-otam"] + 0.25 * parts["rgb-km"])
    for bad in ({"matching": "dtw"}, {"activation": "tanh"}, {"temperature": 0.0}, {"rgb_otam_weight": -1.0}):
        with pytest.raises(ValueError):
            _head(**bad)
    with pytest.raises(ValueError, match="modalities"):
        TSJMHead({"rgb": D}, T)
    with pytest.raises(ValueError, match="equal"):
        TSJMHead({"rgb": D, "flow": 8}, T)
    assert TSJMHead.defaults.optimizer == "adam" and TSJMHead.defaults.lr == 1e-5
