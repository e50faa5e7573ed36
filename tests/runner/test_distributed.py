"""torchrun for training and head evaluation: shares of episodes, summed gradients, one record.

The process-group tests start two CPU processes (gloo) with torch.multiprocessing and compare what they write
with what one process writes on the same seeded data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fsar.cache.store import open_cache
from fsar.matchers.head import episode_targets
from fsar.matchers.registry import get
from fsar.report.results import Record, load_records
from fsar.runner.checkpoint import load_checkpoint
from fsar.runner.distributed import World, launched
from fsar.runner.evaluate import EvalPlan, run_plan
from fsar.runner.stream import plan_epoch, take_episodes, train_pool
from fsar.runner.train import TrainConfig, _shared_loss, last_path, train
from tests.gloo import spawn

LAYOUT = {"frames": 4, "dim": 16, "per_class": 6, "split_classes": {"train": 30, "val": 4, "test": 5}}
CONFIG = TrainConfig(matcher="ita", shots=1, way=3, query=2, episodes_per_epoch=16, epochs=2, lr=1e-2,
                     optimizer="adam", tasks_per_step=4, params={"hidden": "32"}, seed=0, device="cpu")
VAL = 20


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, nuisance_cache: Callable[..., Path]) -> Path:
    return nuisance_cache(tmp_path_factory.mktemp("dist") / "toy.zarr", **LAYOUT)


@pytest.fixture(scope="module")
def one_process(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CONFIG trained by one process: the reference."""
    out = tmp_path_factory.mktemp("one") / "ita.pt"
    train(CONFIG, toy, out, val_episodes=VAL, progress=False, echo=_quiet)
    return out


def _train_worker(cache: Path, folder: Path) -> None:
    train(CONFIG, cache, folder / "fresh.pt", val_episodes=VAL, progress=False, echo=_quiet)
    interrupted = folder / "resumed.pt"
    train(dataclasses.replace(CONFIG, epochs=1), cache, interrupted, val_episodes=VAL, progress=False, echo=_quiet)
    train(CONFIG, cache, interrupted, val_episodes=VAL, resume=True, progress=False, echo=_quiet)


def test_two_processes_train_the_weights_of_one(toy: Path, one_process: Path, tmp_path: Path) -> None:
    """Each of 2 ranks takes half of every step's episodes; the summed gradients are one process's, so the
    weights (and optimiser state) after 2 epochs match, from scratch and when resumed after epoch 1."""
    spawn(_train_worker, tmp_path, toy, tmp_path)
    reference = load_checkpoint(last_path(one_process))
    assert reference.resume is not None
    for name in ("fresh.pt", "resumed.pt"):
        ckpt = load_checkpoint(last_path(tmp_path / name))
        assert ckpt.resume is not None and ckpt.train["world_size"] == 2
        for key, value in reference.resume["weights"].items():
            torch.testing.assert_close(ckpt.resume["weights"][key], value, rtol=1e-5, atol=1e-6)
        assert [h["val_accuracy"] for h in ckpt.history] == [h["val_accuracy"] for h in reference.history]
        assert [h["loss"] for h in ckpt.history] == pytest.approx([h["loss"] for h in reference.history], rel=1e-5)
    best = load_checkpoint(tmp_path / "fresh.pt")
    assert best.epoch == load_checkpoint(one_process).epoch


def _plans(checkpoint: Path, cache: Path, workspace: Path, out: Path) -> list[EvalPlan]:
    """The head from ``checkpoint`` and proto, on a 51-episode list (shares of 25 and 26) made on first use."""
    common = dict(cache=cache, shots=(1,), way=5, workspace=workspace, protocol="custom", n_episodes=51,
                  device="cpu")
    return [EvalPlan(matchers="ita", checkpoint=checkpoint, out=out / "ita", **common),  # type: ignore[arg-type]
            EvalPlan(matchers="proto", out=out / "proto", **common)]  # type: ignore[arg-type]


def _eval_worker(checkpoint: Path, cache: Path, workspace: Path, out: Path) -> None:
    lines = [line for plan in _plans(checkpoint, cache, workspace, out) for line in run_plan(plan, progress=False)]
    assert bool(lines) == (dist.get_rank() == 0)  # rank 0 alone reports


def _only_record(folder: Path) -> Record:
    (record,) = load_records(folder)
    return record


def test_two_processes_write_the_record_of_one(toy: Path, one_process: Path, tmp_path: Path) -> None:
    """2 ranks score halves of the list; rank 0 writes one record with one process's correctness array."""
    workspace = tmp_path / "ws"
    spawn(_eval_worker, tmp_path, one_process, toy, workspace, tmp_path / "two")
    for plan in _plans(one_process, toy, workspace, tmp_path / "one"):  # the list rank 0 wrote, read again
        list(run_plan(plan, progress=False))
    for name in ("ita", "proto"):
        two, one = _only_record(tmp_path / "two" / name), _only_record(tmp_path / "one" / name)
        assert two.correct.shape == (51, 5) and np.array_equal(two.correct, one.correct)
        assert two.accuracy == one.accuracy and two.ci95 == one.ci95
        assert two.episodes_sha256 == one.episodes_sha256 and two.params == one.params
        assert two.extra == one.extra | {"world_size": 2}  # metadata; the provenance does not name it
        assert "world_size" not in one.extra


def test_shares_cover_every_item_once_in_order() -> None:
    for n in range(1, 12):
        for size in range(1, 5):
            parts = [range(n)[World(rank, size).part(n)] for rank in range(size)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shares_of_a_step_are_its_episodes(toy: Path) -> None:
    pool = train_pool(open_cache(toy), "rgb")
    full = list(plan_epoch(pool, CONFIG, 1, 4, None))
    shares = [list(take_episodes(plan_epoch(pool, CONFIG, 1, 4, None), World(r, 3).part(4))) for r in range(3)]
    for step, parts in zip(full, zip(*shares, strict=True), strict=True):
        np.testing.assert_array_equal(np.concatenate([p.query.rows for p in parts]), step.query.rows)
        np.testing.assert_array_equal(np.concatenate([p.support.views for p in parts]), step.support.views)
        np.testing.assert_array_equal(np.concatenate([p.names for p in parts]), step.names)


def test_summed_shares_of_the_loss_give_the_whole_steps_gradient() -> None:
    """Without a process group: Σ_r ∇ _shared_loss(rank r's episodes) = ∇ (loss of all episodes + batch loss),
    for 3 ranks sharing 4 episodes (shares of 1, 1 and 2)."""
    torch.manual_seed(0)
    way, shot, query, episodes, size = 3, 1, 2, 4, 3
    head = get("ita").obj({"rgb": 8}, 4, get("ita").obj.Config(hidden=16))
    q = {"rgb": torch.randn(episodes, way * query, 4, 8)}
    s = {"rgb": torch.randn(episodes, way * shot, 4, 8)}
    labels = torch.arange(way).repeat_interleave(shot).expand(episodes, -1)

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad(loss, list(head.parameters()), allow_unused=True, materialize_grads=True))

    def batch_loss() -> torch.Tensor:  # stands for a balanced batch's loss, the same on every rank
        return sum((p ** 2).sum() for p in head.parameters())

    whole = grads(head.loss(q, s, labels, way, episode_targets(way, query, episodes))[0] + batch_loss())
    summed = [torch.zeros_like(g) for g in whole]
    for rank in range(size):
        part = World(rank, size).part(episodes)
        n = part.stop - part.start
        loss = head.loss({"rgb": q["rgb"][part]}, {"rgb": s["rgb"][part]}, labels[part], way,
                         episode_targets(way, query, n))[0]
        for total, g in zip(summed, grads(_shared_loss(loss, batch_loss(), n / episodes, World(rank, size))),
                            strict=True):
            total += g
    for a, b in zip(summed, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_launched_reads_torchruns_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched()
