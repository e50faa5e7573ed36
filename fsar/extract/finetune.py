"""Fine-tune a backbone as a frame classifier on the train classes (``fsar finetune``).

The "fine-tuned ResNet-50" of the FSAR literature (OTAM, TRX, HyRSM start from it): frames of the *train*
split's videos, labelled with their video's class, train the whole network with a fresh linear head over
the train classes. Val and test classes are never seen, so the features stay fair for few-shot evaluation.

Recipe: a random frame per TSN segment, a random resized crop (+ flip, except :data:`fsar.extract.run.NO_FLIP`
datasets); SGD (momentum 0.9, weight decay), a cosine learning rate over all steps, the new head at
``head_lr_mult`` times it; cross-entropy; TSN's partial BN (Wang et al. 2016, sec. 3.2: every BatchNorm but
the first keeps its statistics, which suits small, correlated frame batches). CUDA: bf16 autocast (fp16 +
GradScaler without bf16), pinned memory. CPU: fp32, deterministic for a seed (random streams derive from
``(seed, epoch)`` or ``(seed, video, view)``, so the worker count does not matter).

Validation (optional): a seeded ``val_fraction`` of the train videos is held out, scored by frame accuracy
on the centre view after each epoch, and the best epoch kept. Resume: each epoch writes ``<out>.state``
(:mod:`fsar.extract.finetune_state`); the same command continues from it, and it is deleted once the
checkpoint is written. Output: the :func:`fsar.extract.backbone.save_checkpoint` format (``fsar extract
--weights <out>``) plus ``train_classes``, ``finetune_config`` and ``finetune_history``. Flow trains on flow
images from the cross-modality initialised network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fsar._device import resolve_device
from fsar._io import atomic_write
from fsar.datasets.catalog import load_dataset
from fsar.extract.backbone import BACKBONES, Backbone, Modality, Preprocessing, load_backbone, save_checkpoint
from fsar.extract.finetune_data import Batch, ClipSpec, LabelledVideo, make_loader
from fsar.extract.finetune_state import (
    EpochStats,
    FinetuneError,
    RunState,
    cpu_state,
    load_state,
    save_state,
    state_path,
)
from fsar.extract.flow import FlowMethod
from fsar.extract.run import NO_FLIP
from fsar.extract.transforms import CropConfig


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything ``fsar finetune`` needs. ``batch_size`` counts frames per step, rounded down to whole
    videos of ``frames_per_video`` frames (at least one video)."""

    dataset: str
    root: Path
    backbone: str = "resnet50"
    weights: str = "imagenet"
    modality: Modality = "rgb"
    split_set: str | None = None
    split_dir: Path | None = None
    epochs: int = 10
    lr: float = 1e-3
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 32
    frames_per_video: int = 8
    input_size: int = 224
    short_side: int = 256
    flow_method: FlowMethod = "farneback"
    workers: int = 4
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    val: bool = True
    val_fraction: float = 0.1
    partial_bn: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (paths as strings), for checkpoints and the resume check."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class FinetuneSummary:
    """What :func:`finetune` did. ``skipped``: unreadable video id -> reason (never fatal)."""

    out: str
    classes: tuple[str, ...]
    train_videos: int
    val_videos: int
    preprocessing: Preprocessing
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    resumed_from: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        """Training throughput over the epochs run by this call (validation excluded)."""
        run = [e for e in self.history if e.epoch > self.resumed_from]
        seconds = sum(e.seconds for e in run)
        return sum(e.frames for e in run) / seconds if seconds else 0.0


def _videos(config: FinetuneConfig) -> tuple[tuple[str, ...], list[LabelledVideo], list[LabelledVideo]]:
    """Train class names, and the train videos split into (train, held-out validation)."""
    listing = load_dataset(config.dataset, config.root, split_set=config.split_set, split_dir=config.split_dir)
    train = listing.split("train")
    classes = listing.classes.get("train", ())
    if not train or len(classes) < 2:
        raise FinetuneError(
            f"dataset {config.dataset!r} has {len(train)} train videos of {len(classes)} classes under "
            f"{config.root}; fine-tuning needs a train split with at least 2 classes (check --root, "
            "--split-set, or give {train,val,test}.txt lists with --split-dir)")
    index = {c: i for i, c in enumerate(classes)}
    videos = [LabelledVideo(v.id, v.path, index[v.class_name]) for v in train]
    if not config.val or len(videos) < 2:
        return classes, videos, []
    n_val = max(1, round(config.val_fraction * len(videos)))
    held = set(np.random.default_rng([config.seed, 1]).permutation(len(videos))[:n_val].tolist())
    return (classes, [v for i, v in enumerate(videos) if i not in held],
            [v for i, v in enumerate(videos) if i in held])


def _replace_head(backbone: Backbone, n_classes: int, seed: int) -> nn.Linear:
    """A fresh, seeded linear classifier over ``n_classes`` in place of the ImageNet one."""
    name = BACKBONES[backbone.name].classifier_prefix.rstrip(".")
    old = backbone.model.get_submodule(name)
    if not isinstance(old, nn.Linear):
        raise FinetuneError(f"backbone {backbone.name}: {name} is not a linear classifier")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(old.in_features, n_classes)
    parent, _, attr = name.rpartition(".")
    setattr(backbone.model.get_submodule(parent) if parent else backbone.model, attr, head.to(backbone.device))
    return head


def _optimizer(model: nn.Module, head: nn.Linear, config: FinetuneConfig) -> torch.optim.SGD:
    head_ids = {id(p) for p in head.parameters()}
    trunk = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": trunk, "lr_mult": 1.0}, {"params": list(head.parameters()), "lr_mult": config.head_lr_mult}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _set_lr(optimizer: torch.optim.Optimizer, config: FinetuneConfig, step: int, total: int) -> float:
    """Cosine schedule from ``lr`` to 0 over ``total`` steps; returns the trunk's learning rate."""
    lr = 0.5 * config.lr * (1.0 + math.cos(math.pi * step / max(total, 1)))
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr


def amp_dtype(precision: str, device: torch.device) -> torch.dtype:
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision != "auto":
        return table[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU autocast training is slower than fp32 on most CPUs, and fp32 is deterministic


@dataclass
class _Trainer:
    """The objects one epoch needs."""

    config: FinetuneConfig
    backbone: Backbone
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler
    dtype: torch.dtype
    spec: ClipSpec
    steps_per_epoch: int
    videos_per_batch: int

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.backbone.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def loader(self, videos: list[LabelledVideo], view: int, shuffle_seed: int | None) -> Any:
        return make_loader(videos, view, self.spec, videos_per_batch=self.videos_per_batch,
                           workers=self.config.workers, shuffle_seed=shuffle_seed,
                           pin_memory=self.backbone.device.type == "cuda")


def _train_epoch(t: _Trainer, videos: list[LabelledVideo], run: RunState, progress: bool) -> EpochStats:
    """One epoch over ``videos`` (augmented view ``epoch + 1``)."""
    epoch, model, device = run.epoch + 1, t.backbone.model, t.backbone.device
    seed = int(np.random.SeedSequence([t.config.seed, epoch]).generate_state(1)[0])
    train_mode(model, t.config.partial_bn)
    loss_sum, correct, frames, lr = 0.0, 0, 0, t.config.lr
    started = time.perf_counter()
    bar = tqdm(total=len(videos), desc=f"finetune epoch {epoch}/{t.config.epochs}", unit="video",
               disable=not progress)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)  # dropout and the shuffle: a function of (seed, epoch), so resume is exact
        for k, batch in enumerate(t.loader(videos, epoch, shuffle_seed=seed)):
            lr = _set_lr(t.optimizer, t.config, run.epoch * t.steps_per_epoch + k, t.config.epochs * t.steps_per_epoch)
            run.skipped.update(batch.failures)
            bar.update(len(batch.failures) + len(batch.labels) // t.config.frames_per_video)
            if len(batch.labels) == 0:
                continue
            loss, hits = _step(t, batch)
            loss_sum, correct, frames = loss_sum + loss * len(batch.labels), correct + hits, frames + len(batch.labels)
            bar.set_postfix(loss=f"{loss_sum / frames:.3f}", acc=f"{correct / frames:.3f}")
    bar.close()
    return EpochStats(epoch=epoch, loss=loss_sum / max(frames, 1), accuracy=correct / max(frames, 1),
                      val_accuracy=None, frames=frames, seconds=time.perf_counter() - started, lr=lr)


def train_mode(model: nn.Module, partial_bn: bool) -> None:
    """Training mode; with ``partial_bn`` every BatchNorm but the first keeps its ImageNet statistics."""
    model.train()
    if partial_bn:
        for bn in [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)][1:]:
            bn.eval()


def _step(t: _Trainer, batch: Batch) -> tuple[float, int]:
    """One optimiser step; returns the batch's mean loss and number of correct frames."""
    device = t.backbone.device
    x = t.backbone.to_input(batch.frames)
    y = batch.labels.to(device, non_blocking=True)
    with t.autocast():
        logits = t.backbone.model(x)
    loss = F.cross_entropy(logits.float(), y)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())


def _validate(t: _Trainer, videos: list[LabelledVideo], run: RunState) -> float:
    """Frame accuracy on the centre view (view 0) of the held-out videos."""
    model, device = t.backbone.model, t.backbone.device
    model.eval()
    correct = total = 0
    with torch.inference_mode(), t.autocast():
        for batch in t.loader(videos, 0, shuffle_seed=None):
            run.skipped.update(batch.failures)
            if len(batch.labels):
                logits = model(t.backbone.to_input(batch.frames))
                correct += int((logits.argmax(1) == batch.labels.to(device)).sum())
                total += len(batch.labels)
    return correct / total if total else 0.0


def write_backbone(out: Path, backbone: Backbone, extra: dict[str, Any]) -> None:
    """``save_checkpoint``'s format plus ``extra`` (how it was trained), written atomically."""
    def write(tmp: Path) -> None:
        save_checkpoint(backbone, tmp)
        ckpt = torch.load(tmp, map_location="cpu", weights_only=True)
        ckpt.update(extra)
        torch.save(ckpt, tmp)

    atomic_write(out, write)


def _trainer(config: FinetuneConfig, n_classes: int, n_train: int) -> tuple[_Trainer, nn.Linear]:
    device = resolve_device(config.device)
    try:
        backbone = load_backbone(config.backbone, config.weights, device, modality=config.modality)
    except (FileNotFoundError, ValueError) as err:
        raise FinetuneError(str(err)) from err
    backbone.preprocessing = replace(backbone.preprocessing, input_size=config.input_size)
    head = _replace_head(backbone, n_classes, config.seed)
    dtype = amp_dtype(config.precision, device)
    crop = CropConfig(resize_short=config.short_side, crop=config.input_size, flip=config.dataset not in NO_FLIP)
    spec = ClipSpec(frames=config.frames_per_video, crop=crop, modality=config.modality,
                    flow_method=config.flow_method, seed=config.seed)
    per_batch = max(1, config.batch_size // config.frames_per_video)
    trainer = _Trainer(config=config, backbone=backbone, optimizer=_optimizer(backbone.model, head, config),
                       scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), dtype=dtype,
                       spec=spec, steps_per_epoch=math.ceil(n_train / per_batch), videos_per_batch=per_batch)
    return trainer, head


def finetune(config: FinetuneConfig, out: str | Path, *, progress: bool = True,
             on_epoch: Callable[[EpochStats], None] | None = None) -> FinetuneSummary:
    """Fine-tune ``config.backbone`` on the train classes of ``config.dataset`` and write ``out``.

    Resumes from ``<out>.state`` when an earlier run of the same config was interrupted. ``on_epoch`` is
    called with each finished epoch's statistics after its state is saved.
    """
    started, out = time.perf_counter(), Path(out)
    if config.epochs < 1 or config.frames_per_video < 1 or config.batch_size < 1:
        raise FinetuneError("epochs, frames per video and batch size must be at least 1")
    classes, train, val = _videos(config)
    t, _ = _trainer(config, len(classes), len(train))
    resume = state_path(out)
    run = load_state(resume, config.to_dict(), t.backbone.model, t.optimizer, t.scaler)
    summary = FinetuneSummary(out=str(out), classes=classes, train_videos=len(train), val_videos=len(val),
                              preprocessing=t.backbone.preprocessing, resumed_from=run.epoch)
    while run.epoch < config.epochs:
        stats = _train_epoch(t, train, run, progress)
        if val:
            stats.val_accuracy = _validate(t, val, run)
            if stats.val_accuracy > run.best_accuracy:
                run.best_epoch, run.best_accuracy = stats.epoch, stats.val_accuracy
                run.best_state = cpu_state(t.backbone.model)
        run.epoch = stats.epoch
        run.history.append(stats)
        resume.parent.mkdir(parents=True, exist_ok=True)
        save_state(resume, config.to_dict(), run, t.backbone.model, t.optimizer, t.scaler)
        if on_epoch is not None:
            on_epoch(stats)
    if run.best_state is not None:
        t.backbone.model.load_state_dict(run.best_state)
    t.backbone.model.eval()
    write_backbone(out, t.backbone, {"train_classes": list(classes), "finetune_config": config.to_dict(),
                                     "finetune_history": [asdict(e) for e in run.history]})
    resume.unlink(missing_ok=True)
    summary.history, summary.skipped = run.history, run.skipped
    summary.best_epoch = run.best_epoch if val else run.epoch
    summary.seconds = time.perf_counter() - started
    return summary


def describe(summary: FinetuneSummary) -> str:
    """The closing lines of ``fsar finetune``: per-epoch statistics, the checkpoint, failures."""
    lines = [f"fine-tuned on {summary.train_videos} videos of {len(summary.classes)} train classes"
             f" ({summary.val_videos} held out for validation)"
             + (f", resumed after epoch {summary.resumed_from}" if summary.resumed_from else "")]
    for e in summary.history:
        val = f"  val acc {e.val_accuracy:.3f}" if e.val_accuracy is not None else ""
        lines.append(f"  epoch {e.epoch}: loss {e.loss:.4f}  acc {e.accuracy:.3f}{val}  "
                     f"{e.frames / e.seconds if e.seconds else 0.0:.1f} frames/s")
    lines.append(f"wrote {summary.out} (epoch {summary.best_epoch}) in {summary.seconds:.1f} s; "
                 f"use it with `fsar extract --weights {summary.out}`")
    lines += skipped_lines(summary.skipped)
    return "\n".join(lines)


def skipped_lines(skipped: dict[str, str], shown: int = 20) -> list[str]:
    """The closing lines on unreadable videos (none when every video was read)."""
    if not skipped:
        return []
    return [f"{len(skipped)} unreadable videos skipped:",
            *(f"  {vid}: {msg}" for vid, msg in sorted(skipped.items())[:shown])]


__all__ = ["EpochStats", "FinetuneConfig", "FinetuneError", "FinetuneSummary", "describe", "finetune", "state_path"]
