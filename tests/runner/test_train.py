"""The trainer of learned heads: learning, best-epoch selection, determinism, resume, checkpoint errors."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fsar.cache.store import open_cache
from fsar.episodes import save_episodes
from fsar.episodes.pool import episodes_for
from fsar.runner.checkpoint import CheckpointError, build_head, load_checkpoint, save_checkpoint, variant
from fsar.runner.evaluate import EvalRun, evaluate
from fsar.runner.train import TrainConfig, last_path, train

# The layout of the cache the tests train on (tests/conftest.py, build_nuisance_cache), checked below.
T, D, PER_CLASS = 4, 16, 6
SPLITS = {"train": 30, "val": 4, "test": 5}
LAYOUT = {"frames": T, "dim": D, "per_class": PER_CLASS, "split_classes": SPLITS}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, nuisance_cache: Callable[..., Path]) -> Path:
    return nuisance_cache(tmp_path_factory.mktemp("train") / "toy.zarr", **LAYOUT)


def _config(**changes: object) -> TrainConfig:
    base = TrainConfig(matcher="ita", shots=1, way=3, query=2, episodes_per_epoch=48, epochs=3, lr=1e-2,
                       optimizer="adam", params={"hidden": "32"}, seed=0, device="cpu")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _test_list(tmp_path: Path, cache_path: Path) -> Path:
    episodes = episodes_for(open_cache(cache_path), split="test", way=5, shot=1, query=2, n=200, seed=1,
                            protocol="custom")
    return save_episodes(episodes, tmp_path / "test.npz")


def _quiet(_: str) -> None:
    pass


def test_training_beats_the_untrained_head_and_keeps_the_best_epoch(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "ita.pt"
    ckpt = train(_config(epochs=6), toy, out, val_episodes=60, progress=False, echo=_quiet)
    assert [h["epoch"] for h in ckpt.history] == [1, 2, 3, 4, 5, 6]
    val = [h["val_accuracy"] for h in ckpt.history]
    assert ckpt.val_accuracy == max(val)
    assert ckpt.epoch == 1 + val.index(max(val))  # the first epoch reaching the best
    saved = load_checkpoint(out)
    assert saved.epoch == ckpt.epoch and len(saved.history) == 6
    assert saved.cache_sha256 == open_cache(toy).content_hash()

    test = _test_list(tmp_path, toy)
    trained = evaluate(EvalRun("ita", checkpoint=out, device="cpu"), toy, test, progress=False)
    untrained_ckpt = dataclasses.replace(saved, state_dict=build_head(saved, load_weights=False).state_dict())
    torch.manual_seed(0)
    save_checkpoint(untrained_ckpt, tmp_path / "untrained.pt")
    untrained = evaluate(EvalRun("ita", checkpoint=tmp_path / "untrained.pt"), toy, test, progress=False)
    proto = evaluate(EvalRun("proto"), toy, test, progress=False)
    print(f"test accuracy: trained {trained.accuracy}, untrained {untrained.accuracy}, proto {proto.accuracy}")
    assert trained.accuracy > untrained.accuracy + 15
    assert trained.accuracy > proto.accuracy + 15  # raw cosine is swamped by the per-video offset
    assert trained.params["epoch"] == ckpt.epoch and trained.params["variant"] == "hidden=32"
    assert trained.modality == "rgb"


def test_same_seed_same_weights_and_resume_equals_one_run(toy: Path, tmp_path: Path) -> None:
    straight = train(_config(epochs=2), toy, tmp_path / "a.pt", val_episodes=20, progress=False, echo=_quiet)
    again = train(_config(epochs=2), toy, tmp_path / "b.pt", val_episodes=20, progress=False, echo=_quiet)
    interrupted = tmp_path / "c.pt"
    train(_config(epochs=1), toy, interrupted, val_episodes=20, progress=False, echo=_quiet)
    lines: list[str] = []
    resumed = train(_config(epochs=2), toy, interrupted, val_episodes=20, resume=True, progress=False,
                    echo=lines.append)
    assert any("resuming" in line for line in lines)
    last_a = load_checkpoint(last_path(tmp_path / "a.pt")).resume
    last_c = load_checkpoint(last_path(interrupted)).resume
    assert last_a is not None and last_c is not None
    for key, value in last_a["weights"].items():
        torch.testing.assert_close(last_c["weights"][key], value, rtol=0, atol=0)
        torch.testing.assert_close(again.state_dict[key], straight.state_dict[key], rtol=0, atol=0)
    assert [h["val_accuracy"] for h in resumed.history] == [h["val_accuracy"] for h in straight.history]
    other = train(_config(epochs=1, seed=5), toy, tmp_path / "d.pt", val_episodes=20, progress=False, echo=_quiet)
    assert any(not torch.equal(other.state_dict[k], v) for k, v in straight.state_dict.items())


def test_resume_with_other_settings_is_refused(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.pt"
    train(_config(epochs=1), toy, out, val_episodes=20, progress=False, echo=_quiet)
    with pytest.raises(CheckpointError, match="other settings.*lr"):
        train(_config(epochs=2, lr=1e-3), toy, out, val_episodes=20, resume=True, progress=False, echo=_quiet)


def test_checkpoint_that_does_not_fit_gives_clear_errors(toy: Path, tmp_path: Path,
                                                        nuisance_cache: Callable[..., Path]) -> None:
    out = tmp_path / "ita.pt"
    train(_config(epochs=1), toy, out, val_episodes=20, progress=False, echo=_quiet)
    test = _test_list(tmp_path, toy)
    wide = nuisance_cache(tmp_path / "wide.zarr", **(LAYOUT | {"dim": 24}))
    with pytest.raises(CheckpointError, match="16-d rgb features.*24-d"):
        evaluate(EvalRun("ita", checkpoint=out), wide, test, progress=False)
    sibling = nuisance_cache(tmp_path / "sibling.zarr", views=3, **LAYOUT)  # same layout, another cache
    with pytest.raises(CheckpointError, match="another cache.*--allow-other-cache"):
        evaluate(EvalRun("ita", checkpoint=out), sibling, test, progress=False)
    assert evaluate(EvalRun("ita", checkpoint=out, allow_other_cache=True), sibling, test, progress=False)
    with pytest.raises(ValueError, match="learned: train it"):
        evaluate(EvalRun("ita"), toy, test, progress=False)
    with pytest.raises(ValueError, match="holds a ita head, not tap"):
        evaluate(EvalRun("tap", checkpoint=out), toy, test, progress=False)
    with pytest.raises(ValueError, match="parameter-free: it takes no --checkpoint"):
        evaluate(EvalRun("otam", checkpoint=out), toy, test, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable fsar checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an fsar head checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_unknown_or_malformed_head_parameters(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown parameter.*bogus"):
        train(_config(params={"bogus": "1"}), toy, tmp_path / "x.pt", progress=False, echo=_quiet)
    with pytest.raises(CheckpointError, match="hidden='many': expected int"):
        train(_config(params={"hidden": "many"}), toy, tmp_path / "x.pt", progress=False, echo=_quiet)
    with pytest.raises(CheckpointError, match="parameter-free"):
        train(_config(matcher="otam"), toy, tmp_path / "x.pt", progress=False, echo=_quiet)
    with pytest.raises(CheckpointError, match="needs flow"):
        train(_config(matcher="tsjm", modality="rgb", params={}), toy, tmp_path / "x.pt", progress=False,
              echo=_quiet)


def test_variant_names_the_changed_hyperparameters(toy: Path, tmp_path: Path) -> None:
    ckpt = train(_config(epochs=1, params={"hidden": "32", "loss": "ce"}), toy, tmp_path / "v.pt",
                 val_episodes=10, progress=False, echo=_quiet)
    assert variant(ckpt) == "hidden=32,loss=ce"


def test_step_decay_of_the_learning_rate() -> None:
    from fsar.matchers.head import TrainDefaults
    from fsar.runner.train import set_lr

    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    settings = TrainDefaults(optimizer="sgd", lr=0.5, lr_decay_every=100, lr_decay=0.1)
    expected = {0: 0.5, 99: 0.5, 100: 0.05, 250: 0.005}
    for done, lr in expected.items():
        set_lr(optimiser, settings, done)
        assert optimiser.param_groups[0]["lr"] == pytest.approx(lr)
    set_lr(optimiser, dataclasses.replace(settings, lr_decay_every=0), 10_000)
    assert optimiser.param_groups[0]["lr"] == 0.5


def test_a_budget_short_of_the_papers_schedule_is_said() -> None:
    from fsar.matchers.head import TrainDefaults
    from fsar.runner.train import TrainConfig, training_notes

    ita = TrainDefaults(lr_decay_every=12_000, lr_decay=0.1, budget=20_000)
    short = TrainConfig(matcher="ita", epochs=10, episodes_per_epoch=1000)
    (note,) = training_notes(3, short, ita)
    assert "runs 20,000 training episodes, lr x0.1 every 12,000 episodes; this run trains 10,000" in note
    assert "(its decay is never reached)" in note and "--epochs 20" in note
    assert training_notes(3, TrainConfig(matcher="ita", epochs=20, episodes_per_epoch=1000), ita) == []
    assert "no augmented views" in training_notes(1, short, TrainDefaults())[0]


# Trains the toy head for one epoch on CPU; prints how much resident memory freeing a touched 256 MB block gave
# back in the first step, then after training.
AFTER_TRAINING = """
import sys
import numpy as np
from fsar.matchers.ita import ITAHead
from fsar.runner.train import TrainConfig, train

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def released() -> int:
    block = np.ones(256 << 20, np.uint8)
    before = rss()
    del block
    return before - rss()

in_step = []
loss = ITAHead.loss

def probed(self, *args, **kwargs):
    if not in_step:
        in_step.append(released())
    return loss(self, *args, **kwargs)

ITAHead.loss = probed
config = TrainConfig(matcher="ita", shots=1, way=3, query=2, episodes_per_epoch=8, epochs=1, params={"hidden": "8"},
                     seed=0, device="cpu")
train(config, sys.argv[1], sys.argv[2], val_episodes=4, progress=False, echo=lambda _: None)
print(in_step[0], released())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc on Linux")
def test_training_steps_on_cpu_keep_freed_blocks_in_the_heap_until_the_epoch_ends(toy: Path, tmp_path: Path) -> None:
    # By default glibc hands freed blocks above 128 kB-32 MB back to the kernel and trims the heap's top, so
    # each step page-faults its temporaries in anew (for a head of small steps, as much time as the step).
    out = subprocess.run([sys.executable, "-c", AFTER_TRAINING, str(toy), str(tmp_path / "h.pt")],
                         capture_output=True, text=True, check=True, timeout=300).stdout.split()
    in_step, after = int(out[-2]), int(out[-1])
    assert in_step < 16 << 20
    assert after > 200 << 20  # validation and evaluation after the epoch do not grow the heap with kept blocks
