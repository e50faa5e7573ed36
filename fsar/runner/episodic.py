"""Episodic end-to-end fine-tuning (``fsar finetune --episodic --matcher NAME``): a backbone trained together with
a matcher on decoded frames, as the FSAR papers train (OTAM, TRX, TAP, HCL, M3Net all do).

Each step's episodes come from the train split's videos, drawn exactly as ``fsar train`` draws them for the same
seed (:func:`fsar.runner.stream.plan_epoch`: a seed of (seed, epoch), the balanced batch of heads that use one).
Every appearance of a video in an episode is decoded in its own TSN-augmented view (a random frame per segment, a
random resized crop, a flip unless the dataset's labels say left/right), numbered among 2^30 and seeded by
(seed, video, view), so any worker, any number of workers and a resumed run read the same frames. The frames go
through the backbone (partial BN, as ``fsar finetune``), the per-frame features (and the n x n patch grid for
spatial heads; temporally centred with ``center``) through the matcher, and a cross-entropy (or the head's own
loss) trains both. Episodes of a step are forwarded one at a time and their gradients accumulated, so batch
statistics never depend on how a step is shared between processes: under torchrun each rank takes its share of
every step's episodes and the gradients are summed (:mod:`fsar.runner.distributed`), the same steps and weights as
one process. The running statistics of the one BatchNorm partial BN trains are rank 0's (as torch's DDP keeps
them): they follow rank 0's episodes only.

Matchers: every learned head (its paper's optimiser and schedule, :attr:`Head.defaults`) and the parameter-free
matchers with a differentiable form (:mod:`fsar.matchers.differentiable`). After each epoch a fixed, seeded
val-split episode list is scored the way ``fsar eval`` scores a cache (view 0, the registered matcher or the head
in eval mode) and the best epoch is kept. Outputs: the backbone in ``fsar extract --weights`` format, and for a
learned head its checkpoint, which ``fsar eval --checkpoint`` accepts on any cache extracted with that backbone
file (it records the file's sha256). Resume: ``<out>.state`` after each epoch; the same command continues it.
CUDA: bf16 autocast (fp16 with loss scaling where bf16 is missing) and channels-last; ``grad_checkpoint``
recomputes the backbone's stages in the backward pass to save memory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fsar._device import resolve_device
from fsar.datasets.catalog import DatasetListing, load_dataset
from fsar.episodes import EpisodeList
from fsar.extract.backbone import BACKBONES, Backbone, Modality, file_sha256, load_backbone
from fsar.extract.finetune import amp_dtype, skipped_lines, train_mode, write_backbone
from fsar.extract.finetune_data import ClipSpec, LabelledVideo
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
from fsar.matchers.differentiable import TRAINABLE, MatcherHead
from fsar.matchers.head import Head, TrainDefaults, config_from_params, episode_targets
from fsar.matchers.registry import get
from fsar.runner import distributed
from fsar.runner.checkpoint import Checkpoint, ClassText, class_text, head_scorer, save_checkpoint, text_kwargs
from fsar.runner.episodic_data import StepFrames, stack_clips, step_frames, train_pool_of, val_clips, val_episodes
from fsar.runner.features import LoadedFeatures
from fsar.runner.scoring import episode_correct, score_all
from fsar.runner.stream import StepPlan, TrainPool, plan_epoch, take_episodes
from fsar.runner.train import TrainConfig, make_optimiser, set_lr, training_notes


@dataclass(frozen=True)
class EpisodicConfig:
    """Everything ``fsar finetune --episodic`` needs. ``None`` optimiser settings take the matcher's recipe
    (the head's paper, or :data:`fsar.matchers.differentiable.TRAINABLE`'s)."""

    dataset: str
    root: Path
    matcher: str
    backbone: str = "resnet50"
    weights: str = "imagenet"
    modality: Modality = "rgb"
    split_set: str | None = None
    split_dir: Path | None = None
    way: int = 5
    shots: int = 1
    query: int = 5
    episodes_per_epoch: int = 1000
    epochs: int = 10
    val_episodes: int = 300
    lr: float | None = None
    optimizer: str | None = None
    tasks_per_step: int | None = None
    params: tuple[tuple[str, str], ...] = ()
    frames: int = 8
    patches: int = 4  # the patch grid of heads that read patches (unused otherwise)
    center: bool = False
    input_size: int = 224
    short_side: int = 256
    flow_method: FlowMethod = "farneback"
    workers: int = 4
    device: str = "auto"
    precision: str = "auto"
    grad_checkpoint: bool = False
    partial_bn: bool = True
    seed: int = 0
    class_names: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, for checkpoints and the resume check."""
        values = dataclasses.asdict(self) | {"params": dict(self.params)}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    def train_config(self) -> TrainConfig:
        """The episode drawing of ``fsar train`` for the same settings."""
        return TrainConfig(matcher=self.matcher, shots=self.shots, way=self.way, query=self.query,
                           episodes_per_epoch=self.episodes_per_epoch, epochs=self.epochs, seed=self.seed,
                           lr=self.lr, optimizer=self.optimizer, tasks_per_step=self.tasks_per_step)


@dataclass
class EpisodicSummary:
    """What :func:`finetune_episodic` did. ``skipped``: unreadable video id -> reason (never fatal)."""

    out: str
    head_out: str | None
    matcher: str
    settings: TrainDefaults
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.nan
    resumed_from: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def trainable_head(config: EpisodicConfig, dim: int) -> tuple[Head, TrainDefaults]:
    """The matcher to train through, and its optimiser recipe with the config's overrides."""
    info = get(config.matcher)
    dims: dict[str, int] = {config.modality: dim}
    if info.kind == "learned":
        if info.needs_flow:
            raise FinetuneError(f"{config.matcher} reads rgb and flow together; episodic fine-tuning trains one "
                                "backbone and one stream: choose a single-stream head")
        try:
            head_config = config_from_params(info.obj.Config, dict(config.params))
            head: Head = info.obj(dims, config.frames, head_config)
        except ValueError as err:
            raise FinetuneError(f"{config.matcher}: {err}") from None
        defaults: TrainDefaults = info.obj.defaults
    elif info.trainable:
        if config.params:
            raise FinetuneError(f"{config.matcher} has no parameters to set with -p")
        head, defaults = MatcherHead(config.matcher, dims, config.frames), TRAINABLE[config.matcher].defaults
    else:
        raise FinetuneError(f"{config.matcher} has no differentiable form to train a backbone through; choose a "
                            f"learned head or one of {', '.join(sorted(TRAINABLE))}")
    settings = config.train_config().optimiser_settings(defaults)
    return head, settings


def trained_params(model: nn.Module, backbone: str) -> list[nn.Parameter]:
    """Every parameter of ``_Model`` but the backbone's ImageNet classifier, which no feature passes through."""
    skip = "backbone." + BACKBONES[backbone].classifier_prefix
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(skip)]


class _Model(nn.Module):
    """The backbone and the head, trained, saved and resumed as one module."""

    def __init__(self, backbone: nn.Module, head: Head) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head


@dataclass
class _Run:
    """The objects an epoch needs."""

    config: EpisodicConfig
    listing: DatasetListing
    backbone: Backbone
    head: Head
    model: _Model
    settings: TrainDefaults
    optimiser: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype
    spec: ClipSpec
    pool: TrainPool
    videos: dict[str, LabelledVideo]
    text: ClassText | None
    world: distributed.World

    @property
    def patches(self) -> int | None:
        return self.config.patches if get(self.config.matcher).needs_patches else None

    def params(self) -> list[nn.Parameter]:
        return trained_params(self.model, self.backbone.name)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.backbone.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def features(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames [N, T, S, S, C] uint8 on the CPU (the backbone copies them over pinned memory) -> {modality:
        [N, T, (P,) D] float32} on the device, as extraction computes them."""
        n, t = frames.shape[:2]
        with self.autocast():
            pooled, grid = self.backbone.forward(self.backbone.to_input(frames.flatten(0, 1)), self.patches)
        x = (grid if grid is not None else pooled).view(n, t, *(grid if grid is not None else pooled).shape[1:])
        if self.config.center and self.config.modality == "rgb":  # as `fsar eval --center` does
            x = x - x.mean(dim=1, keepdim=True)
        return {self.config.modality: x}


# --- training -------------------------------------------------------------------------------------------


def _train_epoch(run: _Run, epoch: int, state: RunState, progress: bool) -> EpochStats:
    """One epoch of optimiser steps, each over ``tasks_per_step`` episodes (this rank's share of them)."""
    config, device, settings = run.config, run.backbone.device, run.settings
    per_step = min(settings.tasks_per_step, config.episodes_per_epoch)
    plans = list(take_episodes(plan_epoch(run.pool, config.train_config(), epoch, per_step, run.head.balanced_batch),
                               run.world.part(per_step)))
    frames = step_frames(plans, run.spec, run.pool, run.videos, config.workers)
    targets = episode_targets(config.way, config.query, 1, device)
    labels = torch.arange(config.way, device=device).repeat_interleave(config.shots)[None]
    seed = int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0])
    train_mode(run.model.backbone, config.partial_bn)
    run.head.train()
    started, total, counted, n_frames = time.perf_counter(), 0.0, 0, 0
    bar = tqdm(total=len(plans), desc=f"episodic epoch {epoch}/{config.epochs}", unit="step", disable=not progress)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)  # dropout: a function of (seed, epoch), so a resumed run is exact
        for i, (plan, step) in enumerate(zip(plans, frames, strict=True)):
            set_lr(run.optimiser, settings, (epoch - 1) * config.episodes_per_epoch + i * per_step)
            state.skipped.update(step.failures)
            run.optimiser.zero_grad(set_to_none=True)
            loss, n = _step_loss(run, plan, step, labels, targets, per_step)
            step_loss = distributed.sum_value(torch.tensor(loss, device=device), run.world)
            if not math.isfinite(step_loss):
                raise FinetuneError(f"loss became {step_loss} at epoch {epoch}, step {i + 1}: lower --lr")
            distributed.sum_gradients(run.params(), run.world)
            if settings.clip_norm:
                run.scaler.unscale_(run.optimiser)
                torch.nn.utils.clip_grad_norm_(run.params(), settings.clip_norm)
            run.scaler.step(run.optimiser)
            run.scaler.update()
            total, counted, n_frames = total + step_loss, counted + 1, n_frames + n
            bar.update(1)
            bar.set_postfix(loss=f"{total / counted:.4f}")
    bar.close()
    lr = run.optimiser.param_groups[0]["lr"]
    return EpochStats(epoch=epoch, loss=total / max(counted, 1), accuracy=math.nan, val_accuracy=None,
                      frames=n_frames, seconds=time.perf_counter() - started, lr=lr)


def _step_loss(run: _Run, plan: StepPlan, step: StepFrames, labels: torch.Tensor, targets: torch.Tensor,
               per_step: int) -> tuple[float, int]:
    """Backward of this rank's episodes of one step (each weighted 1/per_step) and of its share of the balanced
    batch; returns (its part of the step's loss, frames it read). An episode with an unreadable video is left
    out (its video is reported)."""
    device, loss_sum, frames_read = run.backbone.device, 0.0, 0
    for e in range(step.query.shape[0]):
        clips = [*step.query[e], *step.support[e]]
        if any(c is None for c in clips):
            continue
        feats = run.features(stack_clips(clips))
        nq = step.query.shape[1]
        query = {m: x[None, :nq] for m, x in feats.items()}
        support = {m: x[None, nq:] for m, x in feats.items()}
        with run.autocast():
            loss, _ = run.head.loss(query, support, labels, run.config.way, targets,
                                    **text_kwargs(run.text, plan.names[e:e + 1], device))
        loss = loss / per_step
        run.scaler.scale(loss).backward()
        loss_sum, frames_read = loss_sum + float(loss.detach()), frames_read + len(clips) * run.config.frames
    if step.batch is not None and plan.batch is not None and all(c is not None for c in step.batch):
        _, batch_labels, picked = plan.batch
        feats = run.features(stack_clips(step.batch))
        with run.autocast():
            loss, _ = run.head.batch_loss(feats, batch_labels.to(device), **text_kwargs(run.text, picked, device))
        loss = loss / run.world.size  # every rank computes it on the same batch
        run.scaler.scale(loss).backward()
        loss_sum, frames_read = loss_sum + float(loss.detach()), frames_read + len(step.batch) * run.config.frames
    return loss_sum, frames_read


# --- validation -----------------------------------------------------------------------------------------


def _val_features(run: _Run, episodes: EpisodeList, skipped: dict[str, str]) -> tuple[LoadedFeatures, set[str]]:
    """Features of the list's videos in view 0 (eval mode); unreadable ones are reported and returned."""
    rows: dict[str, torch.Tensor] = {}
    run.model.eval()
    with torch.inference_mode():
        for vid, frames, error in val_clips(run.listing, episodes, run.spec, run.config.workers):
            if frames is None:
                skipped[vid] = error
                continue
            rows[vid] = run.features(frames[None])[run.config.modality][0].float().cpu()
    ids = episodes.ids.tolist()
    if not rows:
        raise FinetuneError(f"none of the {len(ids)} val videos could be read: {sorted(skipped.items())[:3]}")
    good = next(iter(rows.values()))  # a stand-in for unreadable videos, whose episodes are left out
    stacked = torch.stack([rows.get(vid, good) for vid in ids]).numpy()
    return LoadedFeatures({run.config.modality: stacked}), set(ids) - set(rows)


def _validate(run: _Run, episodes: EpisodeList, skipped: dict[str, str]) -> float:
    """Accuracy (%) on the val list as ``fsar eval`` scores a cache: the head in eval mode, or the registered
    matcher; episodes holding an unreadable video are left out."""
    threads = torch.get_num_threads()  # numba's thread pool, started by the first scoring, resets it
    try:
        return _score_val(run, episodes, skipped)
    finally:
        torch.set_num_threads(threads)


def _score_val(run: _Run, episodes: EpisodeList, skipped: dict[str, str]) -> float:
    loaded, failed = _val_features(run, episodes, skipped)
    info, modality = get(run.config.matcher), run.config.modality
    if info.kind == "learned":
        scores = score_all(head_scorer(run.head, run.backbone.device, "val", run.text), loaded, episodes, False,
                           "val")["val"]
    else:
        def matcher(q: dict[str, Any], s: dict[str, Any], labels: Any, way: int) -> dict[str, Any]:
            return {"val": info.obj(q[modality], s[modality], labels, way)}
        scores = score_all(matcher, loaded, episodes, False, "val", frame_cosines_only=info.frame_cosines_only)["val"]
    correct = episode_correct(scores, episodes)
    keep = ~np.isin(episodes.support_ids, list(failed)).reshape(episodes.n_episodes, -1).any(1)
    keep &= ~np.isin(episodes.query_ids, list(failed)).reshape(episodes.n_episodes, -1).any(1)
    return 100.0 * float(correct[keep].mean()) if keep.any() else math.nan


# --- the run --------------------------------------------------------------------------------------------


def _listing(config: EpisodicConfig) -> DatasetListing:
    listing = load_dataset(config.dataset, config.root, split_set=config.split_set, split_dir=config.split_dir)
    train = {v.class_name for v in listing.split("train")}
    val = {v.class_name for v in listing.split("val")}
    if len(train) < config.way or len(val) < 2:
        raise FinetuneError(f"dataset {config.dataset!r} under {config.root} has {len(train)} train and {len(val)} "
                            f"val classes; episodic fine-tuning needs {config.way} train classes (--way) and 2 val "
                            "classes to validate on (check --root, --split-set, --split-dir)")
    return listing


def _prepare(config: EpisodicConfig) -> _Run:
    if config.epochs < 1 or config.episodes_per_epoch < 1 or config.frames < 1:
        raise FinetuneError("epochs, episodes per epoch and frames must be at least 1")
    listing = _listing(config)
    device = resolve_device(config.device)
    try:
        backbone = load_backbone(config.backbone, config.weights, device, modality=config.modality)
    except (FileNotFoundError, ValueError) as err:
        raise FinetuneError(str(err)) from err
    backbone.preprocessing = dataclasses.replace(backbone.preprocessing, input_size=config.input_size)
    if config.grad_checkpoint:
        if not config.partial_bn:  # a recomputed stage would update its BatchNorms' running statistics twice
            raise FinetuneError("gradient checkpointing recomputes the backbone's stages, whose BatchNorms must not "
                                "train: it needs partial BN")
        backbone.module.checkpointing = True  # type: ignore[assignment]
    torch.manual_seed(config.seed)
    head, settings = trainable_head(config, backbone.feature_dim)
    head = head.to(device)
    names = sorted({v.class_name for v in listing.videos if v.split in ("train", "val")})
    try:
        text = class_text(config.matcher, head, names, config.class_names)
    except ValueError as err:
        raise FinetuneError(str(err)) from err
    model = _Model(backbone.model, head)
    dtype = amp_dtype(config.precision, device)
    crop = CropConfig(resize_short=config.short_side, crop=config.input_size, flip=config.dataset not in NO_FLIP)
    spec = ClipSpec(frames=config.frames, crop=crop, modality=config.modality, flow_method=config.flow_method,
                    seed=config.seed)
    pool, videos = train_pool_of(listing)
    return _Run(config, listing, backbone, head, model, settings,
                optimiser=make_optimiser(trained_params(model, backbone.name), settings),
                scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), dtype=dtype, spec=spec,
                pool=pool, videos=videos, text=text, world=distributed.current())


def finetune_episodic(config: EpisodicConfig, out: str | Path, head_out: str | Path | None = None, *,
                      progress: bool = True, on_epoch: Callable[[EpochStats], None] | None = None,
                      echo: Callable[[str], None] | None = None) -> EpisodicSummary:
    """Train ``config.backbone`` with ``config.matcher`` on episodes of the train split; write the backbone to
    ``out`` and, for a learned head, the head to ``head_out`` (default ``<out stem>-head.pt``).

    Resumes from ``<out>.state`` when an earlier run of the same config was interrupted. ``echo`` gets the notes a
    user should read before the run (a budget that stops before the paper's schedule). Under torchrun every rank
    calls this; rank 0 validates, writes and prints.
    """
    started, out = time.perf_counter(), Path(out)
    run = _prepare(config)
    learned = get(config.matcher).kind == "learned"
    head_path = Path(head_out) if head_out is not None else out.with_name(f"{out.stem}-head.pt")
    resume = state_path(out)
    state = load_state(resume, config.to_dict(), run.model, run.optimiser, run.scaler)
    distributed.broadcast_module(run.model, run.world)
    summary = EpisodicSummary(out=str(out), head_out=str(head_path) if learned else None, matcher=config.matcher,
                              settings=run.settings, resumed_from=state.epoch)
    if echo is not None and run.world.main:
        for note in training_notes(2, config.train_config(), run.settings):  # 2: every view is augmented here
            echo(note)
    episodes = val_episodes(run.listing, config.dataset, config.way, config.shots, config.val_episodes, config.seed)
    progress = progress and run.world.main
    while state.epoch < config.epochs:
        stats = _train_epoch(run, state.epoch + 1, state, progress)
        distributed.broadcast_module(run.model, run.world)  # the running BN statistics: rank 0's, as DDP keeps them
        accuracy = _validate(run, episodes, state.skipped) if run.world.main else math.nan
        stats.val_accuracy = distributed.broadcast_float(accuracy, run.world, run.backbone.device)
        if math.isfinite(stats.val_accuracy) and stats.val_accuracy > state.best_accuracy:
            state.best_epoch, state.best_accuracy = stats.epoch, stats.val_accuracy
            state.best_state = cpu_state(run.model)
        state.epoch = stats.epoch
        state.history.append(stats)
        if run.world.main:
            resume.parent.mkdir(parents=True, exist_ok=True)
            save_state(resume, config.to_dict(), state, run.model, run.optimiser, run.scaler)
        distributed.barrier(run.world)
        if on_epoch is not None:
            on_epoch(stats)
    if state.best_state is not None:
        run.model.load_state_dict(state.best_state)
    else:  # no val episode could be scored: the last epoch's weights are written, and said to be
        state.best_epoch, state.best_accuracy = state.epoch, math.nan
    run.model.eval()
    if run.world.main:
        _write(run, out, head_path if learned else None, state)
        resume.unlink(missing_ok=True)
    distributed.barrier(run.world)
    summary.history, summary.skipped = state.history, state.skipped
    summary.best_epoch, summary.best_val = state.best_epoch, state.best_accuracy
    summary.seconds = time.perf_counter() - started
    return summary


def _write(run: _Run, out: Path, head_path: Path | None, state: RunState) -> None:
    """The backbone (``fsar extract --weights``) and the head checkpoint tied to it by the backbone's sha256."""
    config = run.config
    history = [dataclasses.asdict(e) for e in state.history]
    write_backbone(out, run.backbone, {"episodic_config": config.to_dict(), "finetune_history": history,
                                       "matcher": config.matcher, "best_epoch": state.best_epoch})
    if head_path is None:
        return
    info = get(config.matcher)
    optimiser = {k: v for k, v in dataclasses.asdict(run.settings).items() if k != "origins"}
    train = {"shots": config.shots, "way": config.way, "query": config.query, "optimiser": optimiser,
             "episodic": config.to_dict(), "backbone": str(out), "backbone_sha256": file_sha256(out),
             "patch_grid": config.patches if info.needs_patches else 0}
    if run.text is not None and run.text.mapping_sha256 is not None:
        train["class_names_sha256"] = run.text.mapping_sha256
    ckpt = Checkpoint(matcher=config.matcher, config=dataclasses.asdict(run.head.config), dims=dict(run.head.dims),
                      frames=config.frames, modalities=(config.modality,), patches=info.needs_patches,
                      center=config.center, cache_sha256="", cache_path=str(out), train=train,
                      state_dict={k: v.detach().cpu().clone() for k, v in run.head.state_dict().items()},
                      epoch=state.best_epoch, val_accuracy=state.best_accuracy,
                      history=[{"epoch": float(e.epoch), "loss": e.loss, "val_accuracy": e.val_accuracy or math.nan,
                                "seconds": e.seconds} for e in state.history])
    save_checkpoint(ckpt, head_path)


def describe(summary: EpisodicSummary) -> str:
    """The closing lines of ``fsar finetune --episodic``."""
    s = summary.settings
    lines = [f"episodic fine-tuning through {summary.matcher}: {s.optimizer} lr {s.lr:g}, {s.tasks_per_step} "
             f"episode(s) per step" + (f", resumed after epoch {summary.resumed_from}" if summary.resumed_from else "")]
    for e in summary.history:
        val = f"  val {e.val_accuracy:.2f} %" if e.val_accuracy is not None else ""
        lines.append(f"  epoch {e.epoch}: loss {e.loss:.4f}{val}  {e.frames / e.seconds if e.seconds else 0.0:.1f} "
                     "frames/s")
    val = f"val {summary.best_val:.2f} %" if math.isfinite(summary.best_val) else "no val episode could be scored"
    lines.append(f"wrote {summary.out} (epoch {summary.best_epoch}, {val}) in {summary.seconds:.1f} s; extract with "
                 f"`fsar extract --weights {summary.out}`")
    if summary.head_out:
        lines.append(f"head: {summary.head_out}; evaluate with `fsar eval --matcher {summary.matcher} --checkpoint "
                     f"{summary.head_out} --cache <that cache>`")
    lines += skipped_lines(summary.skipped)
    return "\n".join(lines)


__all__ = ["EpisodicConfig", "EpisodicSummary", "describe", "finetune_episodic", "trainable_head", "trained_params"]
