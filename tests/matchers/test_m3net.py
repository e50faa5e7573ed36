"""M3Net head: encoders against the printed equations, matching functions against plain-Python references and
brute force, OTAM I-M against the OTAM matcher, IECE order equivariance and (inductive) independence of the
other queries, fusion, the ablation switches, every default's origin and the evaluation preset's queries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fsar.cli import main
from fsar.episodes.protocols import PROTOCOLS
from fsar.matchers import otam
from fsar.matchers._m3net_blocks import (
    CrossReconstruction,
    FrameMixing,
    IntraEpisodeEncoder,
    IntraFrameEncoder,
    dtw_path_mean,
    resample_grid,
)
from fsar.matchers.head import config_from_params, config_origins, episode_targets, shot_mean, train_origins
from fsar.matchers.m3net import M3NetConfig, M3NetHead, parse_view, task_distance

D, T, P = 16, 4, 4


def _head(frames: int = T, seed: int = 0, **params) -> M3NetHead:
    torch.manual_seed(seed)
    return M3NetHead({"rgb": D}, frames, M3NetConfig(**params)).eval()


def _ifce(head: M3NetHead) -> IntraFrameEncoder:
    assert head.ifce is not None
    return head.ifce


def _episode(seed: int, e: int = 2, way: int = 3, shot: int = 2, query: int = 2, t: int = T, p: int = P):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(e, way * query, t, p, D, generator=gen)
    s = torch.randn(e, way * shot, t, p, D, generator=gen)
    labels = torch.stack([torch.arange(way).repeat_interleave(shot)[torch.randperm(way * shot, generator=gen)]
                          for _ in range(e)])
    return {"rgb": q}, {"rgb": s}, labels


# --- encoders -------------------------------------------------------------------------------------------


def test_ifce_is_eq_1() -> None:
    torch.manual_seed(0)
    block = IntraFrameEncoder(D, grid=2, hidden=8).double()
    with torch.no_grad():
        block.alpha.fill_(0.7)
    x = torch.randn(3, P, D, dtype=torch.float64)
    z = x + block.position.reshape(P, D)
    wq, wk, wv = block.query.weight.T, block.key.weight.T, block.value.weight.T
    z_hat = 0.7 * torch.softmax(z @ wq @ (z @ wk).transpose(1, 2) / math.sqrt(D), dim=-1) @ (z @ wv) + z
    l1, l2, l3 = block.mlp[0], block.mlp[2], block.mlp[4]
    mlp = l3(torch.relu(l2(torch.relu(l1(z_hat)))))
    with torch.no_grad():
        torch.testing.assert_close(block(x), mlp + z_hat)


def test_ivce_is_eq_2() -> None:
    torch.manual_seed(0)
    block = FrameMixing(D, T).double()
    x = torch.randn(2, T, D, dtype=torch.float64)
    v_t = (x + block.position).transpose(1, 2)  # Vᵀ: [d, t]
    t1, t2, c1, c2 = block.token[0], block.token[2], block.channel[0], block.channel[2]
    u_hat = t2(torch.relu(t1(v_t))) + v_t
    expected = c2(torch.relu(c1(u_hat.transpose(1, 2)))) + u_hat.transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    with pytest.raises(ValueError):
        block(torch.randn(2, T + 1, D, dtype=torch.float64))


def test_position_grid_resampling() -> None:
    grid = torch.arange(4 * 4 * 2, dtype=torch.float32).view(4, 4, 2)
    torch.testing.assert_close(resample_grid(grid, 16), grid.reshape(16, 2))
    blocks = grid.view(2, 2, 2, 2, 2).mean(dim=(1, 3)).reshape(4, 2)  # mean of each 2x2 block
    torch.testing.assert_close(resample_grid(grid, 4), blocks)
    with pytest.raises(ValueError):
        resample_grid(grid, 6)


@pytest.mark.parametrize(("token_hidden", "kernel"), [(1, 1), (3, 3)])
def test_iece_encoder_is_equivariant_to_video_order(token_hidden: int, kernel: int) -> None:
    torch.manual_seed(0)
    block = IntraEpisodeEncoder(D, token_hidden, kernel)
    x = torch.randn(2, 7, T, D)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, permuted = block(x), block(x[:, perm])
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, 0], block(x[:, :3])[:, 0], atol=1e-4)  # the other videos do matter


@pytest.mark.parametrize("iece", ["inductive", "transductive"])
def test_scores_follow_video_order(iece: str) -> None:
    """Permuting supports (with labels) leaves the scores; permuting queries permutes their rows."""
    head = _head(iece=iece)
    q, s, labels = _episode(1)
    gen = torch.Generator().manual_seed(2)
    sp, qp = torch.randperm(6, generator=gen), torch.randperm(6, generator=gen)
    with torch.no_grad():
        out = head.branch_logits(q, s, labels, 3)
        by_support = head.branch_logits(q, {"rgb": s["rgb"][:, sp]}, labels[:, sp], 3)
        by_query = head.branch_logits({"rgb": q["rgb"][:, qp]}, s, labels, 3)
    for view, logits in out.items():
        torch.testing.assert_close(by_support[view], logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(by_query[view], logits[:, qp], rtol=1e-4, atol=1e-4)


def test_default_scores_do_not_depend_on_the_other_queries() -> None:
    """Inductive by default: the same episode with extra or other queries scores the shared queries alike."""
    head = _head()  # every branch, IECE included, with the default settings
    q, s, labels = _episode(11, query=2)  # 6 queries
    gen = torch.Generator().manual_seed(12)
    extra = torch.randn(2, 5, T, P, D, generator=gen)
    more = {"rgb": torch.cat([extra[:, :2], q["rgb"], extra[:, 2:]], dim=1)}  # 11 queries, the 6 at 2..7
    other = {"rgb": torch.cat([q["rgb"][:, :2], 3.0 + extra[:, :1]], dim=1)}  # the first 2 with another one
    with torch.no_grad():
        base, fused = head.branch_logits(q, s, labels, 3), head(q, s, labels, 3)
        by_more, fused_more = head.branch_logits(more, s, labels, 3), head(more, s, labels, 3)
        by_other, fused_other = head.branch_logits(other, s, labels, 3), head(other, s, labels, 3)
    assert set(base) == {"im@ifce", "cm@ivce", "tm@iece"}
    for view, logits in base.items():
        torch.testing.assert_close(by_more[view][:, 2:8], logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(by_other[view][:, :2], logits[:, :2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_more[:, 2:8], fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_other[:, :2], fused[:, :2], rtol=1e-5, atol=1e-5)


def test_inductive_iece_equals_one_query_episodes() -> None:
    """Oracle: each query scored alone, in an episode of its own (Q = 1), gives the row of the batched episode."""
    head = _head(iece="inductive", views=("tm", "im@iece", "cm@iece"))
    q, s, labels = _episode(13)
    with torch.no_grad():
        batched = head.branch_logits(q, s, labels, 3)
        alone = [head.branch_logits({"rgb": q["rgb"][:, j:j + 1]}, s, labels, 3) for j in range(6)]
    for view, logits in batched.items():
        torch.testing.assert_close(torch.cat([a[view] for a in alone], dim=1), logits, rtol=1e-5, atol=1e-5)


def test_transductive_iece_lets_queries_see_each_other() -> None:
    """The paper's reading (all videos of the episode mixed): another query changes the first one's scores."""
    q, s, labels = _episode(3)
    changed = {"rgb": q["rgb"].clone()}
    changed["rgb"][:, 1:] += 3.0  # every query but the first
    for iece, coupled in (("transductive", True), ("inductive", False)):
        head = _head(iece=iece, views=("tm",))
        with torch.no_grad():
            first, after = head(q, s, labels, 3)[:, 0], head(changed, s, labels, 3)[:, 0]
        assert coupled != torch.allclose(first, after, atol=1e-6), iece


# --- matching functions ---------------------------------------------------------------------------------


def _dtw_paths(n: int, m: int) -> list[list[tuple[int, int]]]:
    """Every monotone path (0, 0) -> (n-1, m-1) of down, right or diagonal unit steps, as its cells: every
    ordering of d diagonals, n-1-d downs and m-1-d rights, built from the moves (not by a recursion)."""
    paths = set()
    for d in range(min(n, m)):
        for order in set(itertools.permutations([(1, 1)] * d + [(1, 0)] * (n - 1 - d) + [(0, 1)] * (m - 1 - d))):
            steps = np.cumsum([(0, 0), *order], axis=0)
            paths.add(tuple((int(i), int(j)) for i, j in steps))
    return [list(p) for p in paths]


def _path_mean_oracle(cost: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """Brute force of the printed I-M: the path of least summed cost (ties: fewest cells), its mean cost."""
    best = min(_dtw_paths(*cost.shape), key=lambda p: (sum(float(cost[c]) for c in p), len(p)))
    return sum(float(cost[c]) for c in best) / len(best), best


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 4), (3, 1), (2, 2), (3, 4), (4, 4), (5, 3)])
def test_dtw_path_mean_matches_brute_force(n: int, m: int) -> None:
    gen = torch.Generator().manual_seed(20 + 7 * n + m)
    cost = torch.rand(2, 3, n, m, generator=gen, dtype=torch.float64) * 2.0
    fast = dtw_path_mean(cost)
    assert fast.shape == (2, 3)
    for idx in itertools.product(range(2), range(3)):
        assert float(fast[idx]) == pytest.approx(_path_mean_oracle(cost[idx].numpy())[0], rel=1e-12)
    # The printed recursion has no direction: the transposed matrix has the transposed paths.
    torch.testing.assert_close(dtw_path_mean(cost.transpose(-1, -2)), fast)


def test_dtw_path_mean_is_not_the_least_mean_path() -> None:
    """The path is chosen by its summed cost (the recursion), then averaged: not the path of least mean.
    Here the diagonal costs 0.5 + 0.5 = 1.0 (mean 0.5); the detour through (0, 1) costs 0.5 + 0.1 + 0.5 = 1.1
    (mean 0.37), cheaper on average but dearer in total, so the printed I-M takes the diagonal."""
    cost = torch.tensor([[0.5, 0.1], [0.1, 0.5]], dtype=torch.float64)
    assert float(dtw_path_mean(cost)) == pytest.approx(0.5)
    assert float(dtw_path_mean(cost)) == pytest.approx(_path_mean_oracle(cost.numpy())[0])
    # A cost tie between paths of different lengths takes the shortest (diagonal) one: (1 + 1) / 2, not 2 / 3.
    tie = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(dtw_path_mean(tie)) == 1.0 == _path_mean_oracle(tie.numpy())[0]


def test_dtw_path_mean_gradient_is_the_path_average() -> None:
    """d mean / d M = 1/|path| on the cells of the optimal path, 0 elsewhere (training uses the same path)."""
    gen = torch.Generator().manual_seed(21)
    cost = torch.rand(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    dtw_path_mean(cost).backward()
    _, path = _path_mean_oracle(cost.detach().numpy())
    expected = torch.zeros(4, 5, dtype=torch.float64)
    for cell in path:
        expected[cell] = 1.0 / len(path)
    assert cost.grad is not None
    torch.testing.assert_close(cost.grad, expected)


def test_default_im_is_the_printed_dtw_path_mean() -> None:
    """I-M by default: mean over the K shots of the path-averaged 1 - cos (Sec. 3.4.1), in training too."""
    q, s, labels = _episode(14)
    pooled_q, pooled_s = q["rgb"].mean(dim=-2).double(), s["rgb"].mean(dim=-2).double()
    e, nq, ns = 2, 6, 6
    pair = torch.zeros(e, nq, ns, dtype=torch.float64)
    for a, j, i in itertools.product(range(e), range(nq), range(ns)):
        cos = torch.nn.functional.cosine_similarity(pooled_q[a, j][:, None], pooled_s[a, i][None], dim=-1)
        pair[a, j, i] = _path_mean_oracle((1.0 - cos).numpy())[0]
    expected = shot_mean(-pair, labels, 3).float()
    head = _head(views=("im",), encoders=())
    with torch.no_grad():
        for soft in (False, True):
            torch.testing.assert_close(head.branch_logits(q, s, labels, 3, soft=soft)["im@ifce"], expected,
                                       rtol=1e-5, atol=1e-5)


def test_otam_im_equals_otam_matcher() -> None:
    """``im_alignment=otam`` (fsar's earlier default, kept as a switch): hard OTAM equals the otam matcher."""
    q, s, labels = _episode(4)
    pooled_q, pooled_s = q["rgb"].mean(dim=-2), s["rgb"].mean(dim=-2)
    pair = torch.from_numpy(otam.pair_distance(pooled_q.numpy(), pooled_s.numpy())).float()  # numba kernel
    expected = shot_mean(-pair, labels, 3)
    raw = _head(views=("im",), encoders=(), im_alignment="otam")
    # Full model with IFCE made the identity: α = 0, zero position, zero last MLP layer.
    identity = _head(im_alignment="otam")
    ifce = _ifce(identity)
    last = ifce.mlp[4]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        ifce.alpha.zero_()
        ifce.position.zero_()
        last.weight.zero_()
        last.bias.zero_()
        for head in (raw, identity):
            torch.testing.assert_close(head.branch_logits(q, s, labels, 3)["im@ifce"], expected, rtol=1e-5,
                                       atol=1e-5)
        soft = raw.branch_logits(q, s, labels, 3, soft=True)["im@ifce"]
        sharp = _head(views=("im",), encoders=(), im_alignment="otam", otam_lambda=1e-4).branch_logits(
            q, s, labels, 3, soft=True)
    assert not torch.allclose(soft, expected, atol=1e-3)  # OTAM trains with the soft min
    torch.testing.assert_close(sharp["im@ifce"], expected, rtol=1e-2, atol=1e-2)


def _mat(rows: list[list[float]], w: list[list[float]]) -> list[list[float]]:
    """rows [n, D] times W [D, h] in plain Python."""
    return [[sum(r[i] * w[i][j] for i in range(len(r))) for j in range(len(w[0]))] for r in rows]


def _reconstruct(centre: list[list[float]], other: list[list[float]], w: dict[str, list[list[float]]]
                 ) -> list[list[float]]:
    """softmax(centre W_Q (other W_K)ᵀ / √h) other W_V, row by row."""
    cq, ok, ov = _mat(centre, w["q"]), _mat(other, w["k"]), _mat(other, w["v"])
    h = len(w["q"][0])
    out = []
    for row in cq:
        scores = [sum(a * b for a, b in zip(row, key, strict=True)) / math.sqrt(h) for key in ok]
        exp = [math.exp(x - max(scores)) for x in scores]
        out.append([sum(e / sum(exp) * v[j] for e, v in zip(exp, ov, strict=True)) for j in range(h)])
    return out


def _frobenius(a: list[list[float]], b: list[list[float]]) -> float:
    return math.sqrt(sum((x - y) ** 2 for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)))


def test_cm_matches_plain_python_reference() -> None:
    torch.manual_seed(0)
    dim, hidden, t = 4, 3, 3
    block = CrossReconstruction(dim, hidden)
    gen = torch.Generator().manual_seed(5)
    query, support = torch.randn(1, 2, t, dim, generator=gen), torch.randn(1, 3, t, dim, generator=gen)
    labels = torch.tensor([[1, 0, 1]])  # shuffled, unequal shots: class 0 has 1 support, class 1 has 2
    w = {k: getattr(block, name).weight.T.tolist() for k, name in (("q", "query"), ("k", "key"), ("v", "value"))}
    with torch.no_grad():
        fast = block(query, support, labels, 2)
    for j in range(2):
        vj = query[0, j].tolist()
        for c in range(2):
            shots = [i for i in range(3) if labels[0, i] == c]
            vc = [row for i in shots for row in support[0, i].tolist()]  # class frames stacked
            q_to_s = _frobenius(_mat(vj, w["v"]), _reconstruct(vj, vc, w))
            s_to_q = _frobenius(_mat(vc, w["v"]), _reconstruct(vc, vj, w)) / math.sqrt(len(shots))
            assert float(fast[0, j, c]) == pytest.approx(q_to_s + s_to_q, rel=1e-5)


def test_tm_matches_plain_python_reference() -> None:
    gen = torch.Generator().manual_seed(6)
    query, support = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 2, 3, 5, generator=gen)
    fast = task_distance(query, support)
    assert fast.shape == (2, 3, 2)
    for e in range(2):
        for j in range(3):
            for i in range(2):
                f, g = query[e, j].tolist(), support[e, i].tolist()
                forward = sum(min(math.dist(x, y) for y in g) for x in f) / len(f)
                backward = sum(min(math.dist(y, x) for x in f) for y in g) / len(g)
                assert float(fast[e, j, i]) == pytest.approx(forward + backward, rel=1e-5)


# --- fusion and switches --------------------------------------------------------------------------------


def test_fusion_is_sum_of_branch_softmaxes() -> None:
    head = _head(frames=8)
    q, s, labels = _episode(7, t=8)
    with torch.no_grad():
        logits = head.branch_logits(q, s, labels, 3)
        out = head(q, s, labels, 3)
    assert set(logits) == {"im@ifce", "cm@ivce", "tm@iece"}
    torch.testing.assert_close(out, sum(x.softmax(-1) for x in logits.values()))
    # Turning C-M off (same weights otherwise) removes exactly its term; IVCE is then not built at all.
    reduced = _head(frames=8, views=("im", "tm"))
    assert reduced.ivce is None and len(reduced.cross) == 0
    missing, unexpected = reduced.load_state_dict(head.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith(("ivce.", "cross.")) for k in unexpected)
    with torch.no_grad():
        torch.testing.assert_close(reduced(q, s, labels, 3), out - logits["cm@ivce"].softmax(-1))
    # ``predict`` keeps the trained branches but sums only some of them (Table 4, single-view Y1).
    only_im = _head(frames=8, predict=("im",))
    only_im.load_state_dict(head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(only_im(q, s, labels, 3), logits["im@ifce"].softmax(-1))


def test_loss_is_sum_of_branch_cross_entropies() -> None:
    head = _head(views=("im", "tm")).train()
    q, s, labels = _episode(8)
    targets = episode_targets(3, 2, 2)
    loss, parts = head.loss(q, s, labels, 3, targets)
    assert set(parts) == {"im@ifce", "tm@iece"}
    assert float(loss.detach()) == pytest.approx(sum(parts.values()), rel=1e-6)
    logits = head.branch_logits(q, s, labels, 3, soft=True)
    ce = torch.nn.functional.cross_entropy(logits["tm@iece"].flatten(0, 1), targets.flatten())
    assert parts["tm@iece"] == pytest.approx(float(ce.detach()), rel=1e-6)


def test_encoder_switches_route_the_stages() -> None:
    q, s, labels = _episode(9)
    pooled = q["rgb"].mean(dim=-2)
    # Table 2, "I-V + C-M" without I-F: IVCE reads the backbone's pooled frames.
    head = _head(views=("cm",), encoders=("ivce",))
    assert head.ifce is None and head.iece is None and head.ivce is not None
    ivce = head.ivce
    with torch.no_grad():
        torch.testing.assert_close(head.stages(q, s, labels)["ivce"].query, ivce(pooled))
    # An encoder switched off passes its input stage through; "match@stage" reads another stage (Table 3).
    head = _head(views=("tm", "im@iece"), encoders=("ifce",))
    with torch.no_grad():
        stages = head.stages(q, s, labels)
        torch.testing.assert_close(stages["iece"].query, _ifce(head)(q["rgb"]).mean(dim=-2))
        assert set(head.branch_logits(q, s, labels, 3)) == {"tm@iece", "im@iece"}
    # Views that read no IVCE/IECE output leave those encoders unbuilt.
    head = _head(views=("im",))
    assert head.ivce is None and head.iece is None and head.ifce is not None


def test_frame_features_without_patch_grid() -> None:
    head = _head()
    q, s, labels = _episode(10, p=1)
    with torch.no_grad():
        with_grid = head({"rgb": q["rgb"]}, {"rgb": s["rgb"]}, labels, 3)
        frames_only = head({"rgb": q["rgb"][..., 0, :]}, {"rgb": s["rgb"][..., 0, :]}, labels, 3)
    torch.testing.assert_close(frames_only, with_grid)


def test_config_checks_and_cli_params() -> None:
    assert parse_view("cm") == ("cm", "ivce") and parse_view("cm@iece") == ("cm", "iece")
    config = config_from_params(M3NetConfig, {"views": "im,tm@ivce,cm@iece", "encoders": "ifce,iece"})
    assert config.views == ("im", "tm@ivce", "cm@iece") and config.encoders == ("ifce", "iece")
    for bad in ({"views": ("xm",)}, {"views": ("im@foo",)}, {"views": ()}, {"views": ("im", "im@ifce")},
                {"predict": ("cm",), "views": ("im",)}, {"encoders": ("ifce", "xyz")}, {"iece": "episode"},
                {"iece_kernel": 2}, {"im_alignment": "dtw"}):
        with pytest.raises(ValueError):
            _head(**bad)


def test_paper_defaults() -> None:
    config = M3NetConfig()
    assert config.views == ("im", "cm", "tm") and config.encoders == ("ifce", "ivce", "iece")
    assert config.patch_grid == 4 and config.im_alignment == "dtw_mean" and config.iece == "inductive"
    d = M3NetHead.defaults
    assert (d.optimizer, d.lr, d.lr_decay_every, d.lr_decay, d.budget) == ("sgd", 1e-4, 2_000, 0.5, 60_000)
    assert np.isclose(_ifce(_head()).alpha.item(), 1.0)


def test_every_default_says_where_it_comes_from() -> None:
    config = {o.name: o for o in config_origins(M3NetConfig)}
    train = {o.name: o for o in train_origins(M3NetHead.defaults, "m3net")}
    paper = {"views", "predict", "encoders", "patch_grid", "im_alignment"}
    assert {n for n, o in config.items() if o.source == "paper"} == paper
    assert {n for n, o in train.items() if o.source == "paper"} == {"optimizer", "lr", "lr_decay_every", "lr_decay",
                                                                   "budget"}
    assert "Sec. 3.4.1" in config["im_alignment"].note and "Sec. 4.2" in train["budget"].note
    result = CliRunner().invoke(main, ["train", "--matcher", "m3net", "--list-params"], catch_exceptions=False)
    assert result.exit_code == 0
    for o in [*config.values(), *train.values()]:
        assert f"{o.source}: {o.note}" in result.output


# Table 1 of the paper, M3Net's row: (accuracy %, reported ± %) for Diving48, Gym99, Gym288 at 1/3/5 shots.
M3NET_TABLE_1 = [(72.35, 0.33), (82.50, 0.26), (85.44, 0.24), (72.70, 0.33), (83.03, 0.27), (86.71, 0.24),
                 (68.66, 0.34), (79.73, 0.29), (83.05, 0.26)]


def test_m3net_preset_can_give_the_papers_intervals() -> None:
    """The 95% CI over 6,000 episodes (1.96·std/√n) is at least what the queries of one episode alone give,
    1.96·√(p(1−p)/(5·q))/√6000 for 5-way episodes of q queries per class (episodes all equally hard). With
    q = 1 that floor (0.38-0.52) is above every ± M3Net reports; the preset's q must bring it below them."""
    preset = PROTOCOLS["m3net"]
    assert preset.n_episodes == 6_000 and preset.ci_over == "episodes"

    def floor(accuracy: float, query: int) -> float:
        p = accuracy / 100
        return 196 * math.sqrt(p * (1 - p) / (5 * query)) / math.sqrt(preset.n_episodes)

    assert all(floor(acc, 1) > ci for acc, ci in M3NET_TABLE_1)
    assert all(floor(acc, preset.query) < ci for acc, ci in M3NET_TABLE_1)
