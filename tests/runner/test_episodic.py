"""Episodic end-to-end fine-tuning (``fsar finetune --episodic``): learning, exact resume, the written backbone and
head in extraction and evaluation, gradient checkpointing, CLI errors, unreadable videos.

Everything runs on a tiny synthetic dataset (16 classes of 3 videos, 32 px, 2 frames) with EfficientNet-Lite0's
packaged ImageNet weights; the trained runs are shared through module-scoped fixtures.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from fsar.cache.store import open_cache
from fsar.cli import main
from fsar.datasets.catalog import load_dataset
from fsar.datasets.synthetic import synthesize
from fsar.extract.backbone import load_backbone
from fsar.extract.finetune import train_mode
from fsar.extract.finetune_data import ClipSpec, LabelledVideo, read_clip
from fsar.extract.finetune_state import EpochStats, FinetuneError, state_path
from fsar.extract.transforms import CropConfig
from fsar.matchers import kernels
from fsar.runner.checkpoint import load_checkpoint
from fsar.runner.episodic import EpisodicConfig, EpisodicSummary, describe, finetune_episodic, trainable_head

SIZE, FRAMES, SEED = 32, 2, 1
Run = tuple[EpisodicSummary, Path]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on two busy cores, OpenMP's spinning threads make the tiny backbone ~100x slower. numba
    resets the OpenMP thread count when its pool starts (validation starts it), so start it first."""
    kernels.all_finite(np.zeros((2, 2), np.float32))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 train, 2 val and 4 test classes of 3 videos each; ``splits-2`` keeps only 2 of the train classes."""
    root = tmp_path_factory.mktemp("episodic-data")
    synthesize(root, classes=16, videos_per_class=3, size=SIZE, seed=5, progress=False, workers=1)
    lines = (root / "splits" / "trainlist.txt").read_text().splitlines()
    two = sorted({line.split("/")[0] for line in lines})[:2]
    (root / "splits-2").mkdir()
    (root / "splits-2" / "trainlist.txt").write_text("".join(f"{x}\n" for x in lines if x.split("/")[0] in two))
    for split in ("val", "test"):
        shutil.copy(root / "splits" / f"{split}list.txt", root / "splits-2" / f"{split}list.txt")
    return root


def config(root: Path, matcher: str = "proto", **kw: object) -> EpisodicConfig:
    base = EpisodicConfig(dataset="synthetic", root=root, matcher=matcher, backbone="efficientnet_lite0", way=2,
                          shots=1, query=1, episodes_per_epoch=4, epochs=2, val_episodes=4, lr=1e-3,
                          tasks_per_step=1, frames=FRAMES, input_size=SIZE, short_side=SIZE, workers=0,
                          device="cpu", seed=SEED)
    return replace(base, **kw)  # type: ignore[arg-type]


def learning_config(root: Path) -> EpisodicConfig:
    """proto, SGD 1e-3, 5 epochs of 8 episodes in steps of 2, on the 2 train classes of ``splits-2`` (every
    episode tells the same two classes apart, in new views): the loss falls well below chance."""
    return config(root, "proto", split_dir=root / "splits-2", epochs=5, episodes_per_epoch=8, tasks_per_step=2)


def ita_config(root: Path) -> EpisodicConfig:
    """ITA (a learned, single-stream LSTM head) with a small LSTM: 2 epochs of 4 episodes."""
    return config(root, "ita", params=(("hidden", "32"),))


def keep_last_state(out: Path, epochs: int) -> Callable[[EpochStats], None]:
    """An ``on_epoch`` that copies the resume file after the last epoch to ``<out>.last``: the last epoch's
    weights and optimiser state (the run then writes its best epoch's weights and deletes the resume file)."""
    def keep(stats: EpochStats) -> None:
        if stats.epoch == epochs:
            shutil.copy(state_path(out), f"{out}.last")
    return keep


def last_state(out: Path) -> dict[str, Any]:
    return torch.load(f"{out}.last", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def learning(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out, cfg = tmp_path_factory.mktemp("learning") / "proto.pt", learning_config(dataset)
    return finetune_episodic(cfg, out, progress=False, on_epoch=keep_last_state(out, cfg.epochs)), out


@pytest.fixture(scope="module")
def ita(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out, cfg = tmp_path_factory.mktemp("ita") / "ita-backbone.pt", ita_config(dataset)
    return finetune_episodic(cfg, out, progress=False, on_epoch=keep_last_state(out, cfg.epochs)), out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# --- training -------------------------------------------------------------------------------------------


def test_training_lowers_the_episode_loss(learning: Run) -> None:
    summary, out = learning
    losses = [e.loss for e in summary.history]
    assert [e.epoch for e in summary.history] == [1, 2, 3, 4, 5] and all(map(math.isfinite, losses))
    assert losses[-1] < losses[0] - 0.1
    assert losses[-1] < math.log(2) - 0.1  # below chance for 2-way: the backbone learned, it did not collapse
    # every episode was read: 8 episodes x 2 classes x (1 shot + 1 query) x 2 frames per epoch
    assert all(e.frames == 8 * 2 * 2 * FRAMES for e in summary.history)
    assert summary.settings.lr == 1e-3 and summary.settings.tasks_per_step == 2 and summary.head_out is None
    assert 1 <= summary.best_epoch <= 5 and summary.best_val == max(e.val_accuracy or 0 for e in summary.history)
    assert out.is_file() and not state_path(out).exists() and not summary.skipped


@pytest.mark.parametrize("run", ["learning", "ita"])
def test_an_interrupted_run_resumes_to_the_same_weights(run: str, dataset: Path, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    reference, reference_out = request.getfixturevalue(run)
    cfg = learning_config(dataset) if run == "learning" else ita_config(dataset)
    out = tmp_path / "resumed.pt"
    head = tmp_path / "resumed-head.pt"

    def stop(stats: EpochStats) -> None:
        raise KeyboardInterrupt(f"stopped after epoch {stats.epoch}")

    with pytest.raises(KeyboardInterrupt, match="epoch 1"):
        finetune_episodic(cfg, out, progress=False, on_epoch=stop)
    state = state_path(out)
    assert state.is_file() and not out.exists() and not head.exists()
    saved = state.read_bytes()
    with pytest.raises(FinetuneError, match=r"other settings \(lr\)") as err:
        finetune_episodic(replace(cfg, lr=2e-3), out, progress=False)
    assert str(state) in str(err.value) and "delete the file" in str(err.value)
    assert state.read_bytes() == saved  # the refused run left the interrupted one intact

    summary = finetune_episodic(replace(cfg, workers=1), out, progress=False,  # the worker count may change
                                on_epoch=keep_last_state(out, cfg.epochs))
    assert summary.resumed_from == 1
    assert [e.loss for e in summary.history] == [e.loss for e in reference.history]  # deterministic for the seed
    assert summary.best_epoch == reference.best_epoch
    assert_same_tensors(weights(out), weights(reference_out))  # the best epoch's backbone, as written
    resumed_last, reference_last = last_state(out), last_state(reference_out)
    assert_same_tensors(resumed_last["model"], reference_last["model"])  # the last epoch's backbone and head
    start = load_backbone("efficientnet_lite0", "imagenet").model.state_dict()
    assert not torch.equal(resumed_last["model"]["backbone._blocks.5._project_conv.weight"],
                           start["_blocks.5._project_conv.weight"])  # training moved the weights compared
    if reference.head_out is not None:
        assert summary.head_out == str(head)
        assert_same_tensors(load_checkpoint(head).state_dict, load_checkpoint(Path(reference.head_out)).state_dict)
    assert not state.exists()


# --- the outputs in extraction and evaluation -----------------------------------------------------------


def val_frames(root: Path) -> np.ndarray:
    """The test view (segment centres, centre crop) of two val videos: [2 * FRAMES, SIZE, SIZE, 3] uint8."""
    spec = ClipSpec(frames=FRAMES, crop=CropConfig(SIZE, SIZE, flip=False))
    videos = load_dataset("synthetic", root).split("val")[:2]
    clips = [read_clip(LabelledVideo(v.id, v.path, 0), 0, spec).frames for v in videos]
    assert all(c is not None for c in clips)
    return np.concatenate(clips)  # type: ignore[arg-type]


def test_the_written_backbone_loads_and_its_features_moved(learning: Run, dataset: Path) -> None:
    summary, out = learning
    tuned = load_backbone("efficientnet_lite0", weights=out)
    imagenet = load_backbone("efficientnet_lite0", weights="imagenet")
    assert tuned.preprocessing.input_size == SIZE and tuned.weights_sha256 == sha256(out)
    frames = val_frames(dataset)
    a, _ = tuned.extract(frames, precision="fp32")
    b, _ = imagenet.extract(frames, precision="fp32")
    assert a.shape == b.shape == (2 * FRAMES, tuned.feature_dim)
    assert np.abs(a - b).max() > 1e-3
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["matcher"] == "proto" and ckpt["best_epoch"] == summary.best_epoch
    assert ckpt["episodic_config"] == learning_config(dataset).to_dict()
    assert [e["loss"] for e in ckpt["finetune_history"]] == [e.loss for e in summary.history]


def extract_args(root: Path, weights: str, out: Path) -> list[str]:
    return ["extract", "--dataset", "synthetic", "--root", str(root), "--splits", "test", "--backbone",
            "efficientnet_lite0", "--weights", weights, "--frames", str(FRAMES), "--short-side", str(SIZE),
            "--input-size", str(SIZE), "--device", "cpu", "--precision", "fp32", "--workers", "0", "--quiet",
            "--out", str(out)]


@pytest.fixture(scope="module")
def caches(ita: Run, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Test-split caches extracted with the ITA run's backbone ("tuned") and with ImageNet weights, and a
    2-way 1-shot list of their test videos."""
    _, backbone = ita
    where = tmp_path_factory.mktemp("caches")
    paths = {"tuned": where / "tuned.zarr", "imagenet": where / "imagenet.zarr", "episodes": where / "e.npz"}
    for name, weights_arg in (("tuned", str(backbone)), ("imagenet", "imagenet")):
        code, output = invoke(*extract_args(dataset, weights_arg, paths[name]))
        assert code == 0, output
    code, output = invoke("episodes", "--cache", str(paths["tuned"]), "--split", "test", "--way", "2", "--shot",
                          "1", "--protocol", "custom", "--n", "8", "--out", str(paths["episodes"]))
    assert code == 0, output
    return paths


def test_extract_with_the_backbone_records_its_sha256(ita: Run, caches: dict[str, Path]) -> None:
    _, backbone = ita
    tuned, imagenet = open_cache(caches["tuned"]).spec, open_cache(caches["imagenet"]).spec
    assert tuned.weights_sha256 == sha256(backbone)
    assert imagenet.weights_sha256 != tuned.weights_sha256
    assert tuned.frames == FRAMES and tuned.input_size == SIZE and tuned.backbone == "efficientnet_lite0"


def test_the_learned_head_is_written_and_tied_to_its_backbone(ita: Run) -> None:
    summary, backbone = ita
    head = backbone.with_name(f"{backbone.stem}-head.pt")
    assert summary.head_out == str(head) and head.is_file()
    ckpt = load_checkpoint(head)
    assert ckpt.matcher == "ita" and ckpt.frames == FRAMES and ckpt.dims == {"rgb": 1280}
    assert ckpt.train["backbone_sha256"] == sha256(backbone) and ckpt.train["backbone"] == str(backbone)
    assert ckpt.config["hidden"] == 32 and ckpt.epoch == summary.best_epoch


def eval_args(ita: Run, caches: dict[str, Path], cache: str, out: Path, *extra: str) -> list[str]:
    summary, _ = ita
    assert summary.head_out is not None
    return ["eval", "--matcher", "ita", "--checkpoint", summary.head_out, "--cache", str(caches[cache]),
            "--episodes", str(caches["episodes"]), "--device", "cpu", "--quiet", "--json", "--out", str(out), *extra]


def test_fsar_eval_accepts_the_head_on_its_backbones_cache_only(ita: Run, caches: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    summary, backbone = ita
    code, output = invoke(*eval_args(ita, caches, "tuned", tmp_path / "res"))
    assert code == 0, output
    record = json.loads(output)
    assert record["matcher"] == "ita" and record["way"] == 2 and record["shot"] == 1
    assert record["params"]["checkpoint"] == summary.head_out
    (written,) = (tmp_path / "res").glob("*.json")
    assert json.loads(written.read_text())["accuracy"] == record["accuracy"]

    code, output = invoke(*eval_args(ita, caches, "imagenet", tmp_path / "refused"))
    assert code == 1
    assert "--weights" in output and str(backbone) in output and "--allow-other-cache" in output
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").glob("*.json"))

    code, output = invoke(*eval_args(ita, caches, "imagenet", tmp_path / "other", "--allow-other-cache"))
    assert code == 0, output
    assert len(list((tmp_path / "other").glob("*.json"))) == 1


# --- describe -------------------------------------------------------------------------------------------


def test_describe_names_the_backbone_and_for_a_head_the_eval_command(learning: Run, ita: Run) -> None:
    text = describe(learning[0])
    assert f"fsar extract --weights {learning[1]}" in text and "--checkpoint" not in text
    assert "through proto" in text and "epoch 5:" in text
    summary, backbone = ita
    text = describe(summary)
    assert f"fsar extract --weights {backbone}" in text
    assert f"fsar eval --matcher ita --checkpoint {summary.head_out}" in text


# --- gradient checkpointing -----------------------------------------------------------------------------


def grads_and_buffers(name: str, weights_arg: str, checkpointing: bool, partial_bn: bool
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Parameter gradients of a backward through ``Backbone.forward`` in train mode, the buffers after it, and how
    many times a middle stage ran (2 when its activations were recomputed in the backward pass)."""
    torch.manual_seed(0)
    backbone = load_backbone(name, weights_arg, "cpu")
    backbone.module.checkpointing = checkpointing  # type: ignore[assignment]
    train_mode(backbone.model, partial_bn)
    calls: list[int] = []
    stage: nn.Module = backbone.model.get_submodule("layer2" if name.startswith("resnet") else "_blocks.3")
    stage.register_forward_pre_hook(lambda *_: calls.append(1))  # a recomputation may stop before its end
    frames = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    pooled, grid = backbone.forward(backbone.to_input(frames), 2)
    assert grid is not None
    (pooled.square().sum() + grid.sin().sum()).backward()
    grads = {n: p.grad.clone() for n, p in backbone.model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in backbone.model.named_buffers()}
    return grads, buffers, len(calls)


@pytest.mark.parametrize(("name", "weights_arg"), [("efficientnet_lite0", "imagenet"), ("resnet18", "none")])
def test_gradient_checkpointing_gives_the_same_gradients(name: str, weights_arg: str) -> None:
    plain, plain_buffers, plain_calls = grads_and_buffers(name, weights_arg, False, partial_bn=True)
    recomputed, recomputed_buffers, recomputed_calls = grads_and_buffers(name, weights_arg, True, partial_bn=True)
    assert (plain_calls, recomputed_calls) == (1, 2)  # the stage really was recomputed in the backward pass
    assert plain.keys() == recomputed.keys() and len(plain) > 20
    assert all(g.abs().sum() > 0 for g in plain.values())
    for key in plain:
        torch.testing.assert_close(recomputed[key], plain[key], rtol=1e-4, atol=1e-6, msg=key)
    assert_same_tensors(recomputed_buffers, plain_buffers)  # partial BN: only the stem's statistics move


def test_gradient_checkpointing_needs_partial_bn(dataset: Path, tmp_path: Path) -> None:
    """A recomputed stage runs its BatchNorms twice: training them (partial_bn=False) would move their
    statistics twice, so the combination is refused before anything is trained."""
    with pytest.raises(FinetuneError, match="needs partial BN"):
        finetune_episodic(config(dataset, "proto", grad_checkpoint=True, partial_bn=False), tmp_path / "x.pt",
                          progress=False)
    assert not (tmp_path / "x.pt").exists()


# --- CLI errors -----------------------------------------------------------------------------------------


def finetune_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["finetune", "--dataset", "synthetic", "--root", str(root), "--backbone", "efficientnet_lite0",
            "--epochs", "1", "--frames-per-video", str(FRAMES), "--input-size", str(SIZE), "--short-side", str(SIZE),
            "--workers", "0", "--device", "cpu", "--quiet", "--workspace", str(tmp_path / "ws"), *extra]


def test_cli_episodic_needs_a_matcher_and_a_matcher_needs_episodic(dataset: Path, tmp_path: Path) -> None:
    code, output = invoke(*finetune_args(dataset, tmp_path, "--episodic"))
    assert code == 2 and "--episodic needs --matcher" in output
    code, output = invoke(*finetune_args(dataset, tmp_path, "--matcher", "otam"))
    assert code == 2 and "--matcher" in output and "only with --episodic" in output
    assert not (tmp_path / "ws").exists()  # nothing was trained or written


def test_cli_refuses_matchers_it_cannot_train_through(dataset: Path, tmp_path: Path) -> None:
    code, output = invoke(*finetune_args(dataset, tmp_path, "--episodic", "--matcher", "dtw"))
    assert code == 2 and "'dtw'" in output and "otam" in output and "proto" in output  # the choices it has
    code, output = invoke(*finetune_args(dataset, tmp_path, "--episodic", "--matcher", "tsjm"))
    assert code == 2 and "'tsjm'" in output  # two-stream: not among the choices
    with pytest.raises(FinetuneError, match="tsjm reads rgb and flow together.*single-stream"):
        trainable_head(config(dataset, "tsjm"), 1280)
    code, output = invoke(*finetune_args(dataset, tmp_path, "--grad-checkpoint", "--center"))
    assert code == 2 and "--grad-checkpoint, --center: only with --episodic" in output
    with pytest.raises(FinetuneError, match="dtw has no differentiable form") as err:
        trainable_head(config(dataset, "dtw"), 1280)
    assert "otam" in str(err.value) and "proto" in str(err.value)


def test_cli_episodic_trains_and_writes_the_default_paths(dataset: Path, tmp_path: Path) -> None:
    code, output = invoke(*finetune_args(dataset, tmp_path, "--episodic", "--matcher", "otam", "--way", "2",
                                         "--query", "1", "--episodes-per-epoch", "2", "--val-episodes", "2",
                                         "--tasks-per-step", "1", "--lr", "1e-3"))
    assert code == 0, output
    out = tmp_path / "ws" / "checkpoints" / "synthetic-efficientnet_lite0-episodic-otam.pt"
    assert out.is_file() and f"fsar extract --weights {out}" in output and "through otam" in output
    assert not out.with_name(f"{out.stem}-head.pt").exists()  # a parameter-free matcher has no head to write


# --- unreadable videos ----------------------------------------------------------------------------------


def test_unreadable_videos_are_skipped_and_reported(dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    listing = load_dataset("synthetic", root)
    broken = [listing.split("train")[0], listing.split("val")[0]]
    for video in broken:
        video.path.write_bytes(b"not a video")
    # a 5-way episode of the 10 train classes reads 2 of the broken video's class's 3 videos with odds 1/2: it
    # holds the broken one with odds 1/3, and some of 16 episodes do (seeded; all miss it with odds (2/3)^16)
    cfg = config(root, "proto", way=5, episodes_per_epoch=16, tasks_per_step=4, epochs=1, val_episodes=8)
    out = tmp_path / "out.pt"
    summary = finetune_episodic(cfg, out, progress=False)
    assert set(summary.skipped) == {v.id for v in broken} and all(summary.skipped.values())
    (epoch,) = summary.history
    assert math.isfinite(epoch.loss) and 0 < epoch.frames < 16 * 5 * 2 * FRAMES  # its episodes were left out
    assert epoch.val_accuracy is not None and math.isfinite(epoch.val_accuracy)
    assert out.is_file() and not state_path(out).exists()
    text = describe(summary)
    assert "2 unreadable videos skipped" in text and all(v.id in text for v in broken)


def test_a_run_without_a_readable_val_episode_reports_the_epoch_it_wrote(dataset: Path, tmp_path: Path) -> None:
    """Two of a val class's three videos unreadable: every 1-shot, 1-query val episode holds one, so no epoch has
    a val accuracy and the last epoch's weights are written; the summary, describe and the head must say so
    (not "epoch 0, val -1.00 %")."""
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    val = load_dataset("synthetic", root).split("val")
    first_class = [v for v in val if v.class_name == val[0].class_name]
    for video in first_class[:2]:
        video.path.write_bytes(b"not a video")
    out = tmp_path / "out.pt"
    summary = finetune_episodic(config(root, "ita", params=(("hidden", "8"),), episodes_per_epoch=2), out,
                                progress=False)
    assert len(summary.history) == 2 and all(math.isnan(e.val_accuracy or 0.0) for e in summary.history)
    assert out.is_file() and summary.head_out is not None
    assert summary.best_epoch == 2 and math.isnan(summary.best_val)
    ckpt = load_checkpoint(Path(summary.head_out))
    assert ckpt.epoch == 2 and math.isnan(ckpt.val_accuracy)
    assert "val -1.00 %" not in describe(summary)
