"""Fine-tuning: loss goes down, the checkpoint loads in extraction, determinism, resume, unreadable videos, CLI."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fsar.cli import main
from fsar.datasets.catalog import load_dataset
from fsar.datasets.synthetic import synthesize
from fsar.extract.backbone import load_backbone
from fsar.extract.finetune import (
    EpochStats,
    FinetuneConfig,
    FinetuneError,
    FinetuneSummary,
    finetune,
    state_path,
)
from fsar.extract.finetune_data import ClipSpec, LabelledVideo, read_clip
from fsar.extract.transforms import CropConfig

SIZE = 32
FRAMES = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, classes=6, videos_per_class=3, size=SIZE, seed=7, progress=False)
    return root


def config(root: Path, **kw: object) -> FinetuneConfig:
    base = FinetuneConfig(dataset="synthetic", root=root, backbone="efficientnet_lite0", epochs=2, lr=3e-3,
                          batch_size=4 * FRAMES, frames_per_video=FRAMES, input_size=SIZE, short_side=SIZE,
                          workers=0, device="cpu", seed=3, val=False)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneSummary, Path]:
    out = tmp_path_factory.mktemp("ref") / "ref.pt"
    return finetune(config(dataset), out, progress=False), out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def centre_frames(root: Path) -> tuple[np.ndarray, torch.Tensor]:
    """The centre view of every train video and its train-class label, as the loss oracle's data."""
    listing = load_dataset("synthetic", root)
    index = {c: i for i, c in enumerate(listing.classes["train"])}
    spec = ClipSpec(frames=FRAMES, crop=CropConfig(SIZE, SIZE, flip=False))
    clips = [read_clip(LabelledVideo(v.id, v.path, index[v.class_name]), 0, spec) for v in listing.split("train")]
    frames = np.concatenate([c.frames for c in clips if c.frames is not None])
    return frames, torch.tensor([c.label for c in clips for _ in range(FRAMES)])


def train_loss(ckpt: Path | None, root: Path, n_classes: int) -> float:
    """Cross-entropy of a classifier on the train frames: ``ckpt`` with its head, or the starting point."""
    from fsar.extract.finetune import _replace_head

    backbone = load_backbone("efficientnet_lite0", "imagenet", "cpu")
    _replace_head(backbone, n_classes, seed=3)
    if ckpt is not None:
        backbone.model.load_state_dict(weights(ckpt))
    frames, labels = centre_frames(root)
    with torch.inference_mode():
        return float(F.cross_entropy(backbone.model(backbone.to_input(frames)), labels))


def test_training_lowers_the_loss_and_writes_an_extraction_checkpoint(
    reference: tuple[FinetuneSummary, Path], dataset: Path
) -> None:
    summary, out = reference
    classes = load_dataset("synthetic", dataset).classes["train"]
    assert summary.classes == classes and summary.train_videos == 3 * len(classes) and summary.val_videos == 0
    assert [e.epoch for e in summary.history] == [1, 2] and all(e.frames == summary.train_videos * FRAMES
                                                                for e in summary.history)
    assert train_loss(out, dataset, len(classes)) < train_loss(None, dataset, len(classes)) - 0.05
    assert not state_path(out).exists()
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["train_classes"] == list(classes) and ckpt["finetune_config"]["epochs"] == 2
    assert ckpt["preprocessing"] == summary.preprocessing.to_dict() and summary.preprocessing.input_size == SIZE
    tuned = load_backbone("efficientnet_lite0", weights=out)
    assert tuned.preprocessing == summary.preprocessing
    imagenet = load_backbone("efficientnet_lite0", "imagenet")
    frames = centre_frames(dataset)[0][:4]
    a, _ = tuned.extract(frames, precision="fp32")
    b, _ = imagenet.extract(frames, precision="fp32")
    assert np.abs(a - b).max() > 1e-3


def test_same_seed_same_weights_even_when_interrupted_and_resumed(
    reference: tuple[FinetuneSummary, Path], dataset: Path, tmp_path: Path
) -> None:
    """A second run of the reference's config, stopped after epoch 1 and resumed with another worker
    count, ends with the reference's losses and bit-identical weights (CPU)."""
    out = tmp_path / "resumed.pt"

    def stop(stats: EpochStats) -> None:
        raise KeyboardInterrupt(f"stopped after epoch {stats.epoch}")

    with pytest.raises(KeyboardInterrupt, match="epoch 1"):
        finetune(config(dataset), out, progress=False, on_epoch=stop)
    assert state_path(out).is_file() and not out.exists()
    with pytest.raises(FinetuneError, match="lr"):
        finetune(config(dataset, lr=1e-2), out, progress=False)
    summary = finetune(config(dataset, workers=1), out, progress=False)  # the worker count may change
    assert summary.resumed_from == 1 and [e.loss for e in summary.history] == [e.loss for e in reference[0].history]
    assert_same_weights(reference[1], out)
    assert not state_path(out).exists()


def test_cli_validates_skips_unreadable_videos_and_writes_the_default_checkpoint(dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    broken = load_dataset("synthetic", root).split("train")[0]
    broken.path.write_bytes(b"not a video")
    result = CliRunner().invoke(main, [
        "finetune", "--dataset", "synthetic", "--root", str(root), "--backbone", "efficientnet_lite0",
        "--epochs", "1", "--batch-size", str(4 * FRAMES), "--frames-per-video", str(FRAMES),
        "--input-size", str(SIZE), "--short-side", str(SIZE), "--workers", "0", "--device", "cpu", "--quiet",
        "--workspace", str(tmp_path / "ws"),
    ])
    assert result.exit_code == 0, result.output
    assert "1 held out for validation" in result.output and "val acc" in result.output
    assert "1 unreadable videos skipped" in result.output and broken.id in result.output
    ckpt = tmp_path / "ws" / "checkpoints" / "synthetic-efficientnet_lite0-finetuned.pt"
    assert load_backbone("efficientnet_lite0", weights=ckpt).preprocessing.input_size == SIZE


def test_cli_needs_a_train_split(dataset: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    splits.mkdir()
    shutil.copy(dataset / "splits" / "testlist.txt", splits / "testlist.txt")
    result = CliRunner().invoke(main, ["finetune", "--dataset", "synthetic", "--root", str(dataset),
                                       "--split-dir", str(splits), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert "needs a train split" in result.output and "--split-dir" in result.output


def test_flow_modality_trains_the_cross_modality_network(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "flow.pt"
    summary = finetune(config(dataset, modality="flow", epochs=1), out, progress=False)
    assert summary.preprocessing.channels == 2 and not summary.skipped
    tuned = load_backbone("efficientnet_lite0", weights=out, modality="flow")
    assert tuned.preprocessing == summary.preprocessing
    with pytest.raises(ValueError, match="modality"):
        load_backbone("efficientnet_lite0", weights=out, modality="rgb")
