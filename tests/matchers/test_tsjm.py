"""TSJM head: InfoNCE by hand, KM gradient, hard OTAM and KM against the numba matchers, z-normalised score
fusion, ablation switches, and where every default comes from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsar.matchers import fusion, jmm, km, otam
from fsar.matchers.head import config_origins, episode_targets, shot_mean, train_origins
from fsar.matchers.tsjm import TSJMConfig, TSJMHead, episode_zscore, info_nce, matched_similarity, pair_scores

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


def _classes(pairs: np.ndarray, labels: torch.Tensor) -> np.ndarray:
    """One-shot pair scores [E, Q, S] -> class scores [E, Q, way] (support s has class labels[e, s])."""
    return np.take_along_axis(pairs, np.argsort(labels.numpy(), axis=1)[:, None, :], axis=2)


def test_forward_with_adapters_off_is_the_zscored_otam_distance() -> None:
    """matching="otam", one shot: the score is (z(-d_rgb) + z(-d_flow)) / 2, d = otam.pair_distance and z the
    per-episode z-score of fsar.matchers.fusion.

    Before the fusion z-normalised, this pinned the raw average -(d_rgb + d_flow) / 2."""
    head = _head(adapter=False, matching="otam").eval()
    q, s, labels = _episode(seed=3, shot=1)
    with torch.no_grad():
        out = head(q, s, labels, 3).numpy()
    z = [fusion.episode_zscore(_classes(-otam.pair_distance(q[m].numpy(), s[m].numpy()), labels))
         for m in ("rgb", "flow")]
    np.testing.assert_allclose(out, (z[0] + z[1]) / 2, rtol=1e-4, atol=1e-4)


def test_episode_zscore_equals_the_numpy_fusion_and_is_differentiable() -> None:
    gen = torch.Generator().manual_seed(8)
    scores = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 7 + 2
    scores[1] = 0.25  # a constant episode maps to zeros, as in the numpy version
    got = episode_zscore(scores)
    np.testing.assert_allclose(got.numpy(), fusion.episode_zscore(scores.numpy()), rtol=1e-6, atol=1e-6)
    assert torch.equal(got[1], torch.zeros(4, 5, dtype=torch.float64))
    varying = scores[[0, 2]].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(episode_zscore, (varying,))
    constant = scores.clone().requires_grad_(True)
    (episode_zscore(constant) * torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)).sum().backward()
    assert constant.grad is not None and torch.isfinite(constant.grad).all()
    assert torch.equal(constant.grad[1], torch.zeros(4, 5, dtype=torch.float64))


def test_every_component_counts_in_the_fused_score() -> None:
    """Scaling one component's raw scores by 1000 (and shifting them) leaves the fused logits unchanged.

    The old raw average fails this: the scaled component alone decided the prediction."""
    head = _head()
    gen = torch.Generator().manual_seed(9)
    parts = {name: torch.randn(2, 6, 3, generator=gen) for name in head.weights}
    fused = head.fuse(parts)
    louder = dict(parts, **{"rgb-otam": 1000.0 * parts["rgb-otam"] - 50.0})
    torch.testing.assert_close(head.fuse(louder), fused, rtol=1e-5, atol=1e-5)
    # Each component enters as its z-score, weighted 1/4: every term has the same spread in the sum.
    torch.testing.assert_close(fused, sum(episode_zscore(x) for x in parts.values()) / 4)
    raw_average = sum(louder.values()) / 4
    assert torch.equal(raw_average.argmax(-1), louder["rgb-otam"].argmax(-1))
    assert not torch.equal(fused.argmax(-1), louder["rgb-otam"].argmax(-1))


def test_adapters_off_predicts_like_jmm_with_equal_weights_whatever_the_logit_scale() -> None:
    """adapter=false: the components are jmm's (times the logit scale); the scale cancels in the fusion, so the
    prediction is jmm's equal-weight z-normalised fusion (``--weights paper``) divided by the 4 components."""
    head = _head(adapter=False)
    q, s, labels = _episode(seed=4)
    numpy_q, numpy_s = ({m: x.numpy() for m, x in v.items()} for v in (q, s))
    ref = jmm.component_scores(numpy_q, numpy_s, labels.numpy(), 3)
    ref_fused = jmm.score_multimodal(numpy_q, numpy_s, labels.numpy(), 3) / 4
    for scale in (1.0, 2.5):
        with torch.no_grad():
            head.logit_scale.fill_(math.log(scale))  # type: ignore[union-attr]
            got = head.component_scores(q, s, labels, 3)
            fused = head(q, s, labels, 3)
        assert set(got) == set(ref) == {"rgb-otam", "rgb-km", "flow-otam", "flow-km"}
        for name in ref:
            np.testing.assert_allclose(got[name].numpy(), scale * ref[name], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(fused.numpy(), ref_fused, rtol=1e-4, atol=1e-4)


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
        # Weights 3:1 on the z-normalised scores (they applied to the raw scores before the fusion normalised).
        torch.testing.assert_close(head(q, s, labels, 3),
                                   0.75 * episode_zscore(parts["rgb-otam"]) + 0.25 * episode_zscore(parts["rgb-km"]))
    for bad in ({"matching": "dtw"}, {"activation": "tanh"}, {"temperature": 0.0}, {"rgb_otam_weight": -1.0}):
        with pytest.raises(ValueError):
            _head(**bad)
    with pytest.raises(ValueError, match="modalities"):
        TSJMHead({"rgb": D}, T)
    with pytest.raises(ValueError, match="equal"):
        TSJMHead({"rgb": D, "flow": 8}, T)
    assert TSJMHead.defaults.optimizer == "adam" and TSJMHead.defaults.lr == 1e-5


def test_every_default_says_whether_it_is_the_papers() -> None:
    config = {o.name: o for o in config_origins(TSJMConfig)}
    assert set(config) == {f for f in TSJMConfig.__dataclass_fields__}
    # Neither τ nor the adapter's bottleneck ratio is given in the paper.
    assert (config["temperature"].value, config["temperature"].source) == (0.07, "fsar")
    assert (config["reduction"].value, config["reduction"].source) == (4, "fsar")
    assert config["adapter"].source == config["matching"].source == "paper"
    train = {o.name: o for o in train_origins(TSJMHead.defaults, "tsjm")}
    assert {name for name, o in train.items() if o.source == "paper"} == {"optimizer", "lr"}
    assert train["budget"].value == 0 and train["lr_decay_every"].value == 0
