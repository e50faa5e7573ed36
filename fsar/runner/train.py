"""The one trainer of learned heads: episodes drawn from the train split of a feature cache.

Each epoch draws ``episodes_per_epoch`` training episodes from the train split with a seed derived
from (seed, epoch), every video in one of its augmented views (views 1.., when the cache has them),
takes one optimiser step per ``tasks_per_step`` episodes (batched in one forward pass), then scores a
fixed val-split episode list. The best epoch by val accuracy is kept at ``out``; the latest state (with
optimiser and RNG state) at ``<out>.last``, from which ``resume`` continues exactly where it stopped,
so a resumed run gives the same weights as an uninterrupted one. No backbone runs: a CPU trains the
heads on the synthetic data in minutes.

Under torchrun each rank trains on its share of every step's episodes and the gradients are summed over the
ranks (:mod:`fsar.runner.distributed`): the same seeded schedule and, up to float summation order, the same
weights as one process. Rank 0 validates and writes the checkpoints while the others wait.

A head that reads class names (:attr:`Head.uses_class_text`) gets the embeddings of each episode's classes
(and of the balanced batch's), taken from one table of the cache's class names embedded before training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fsar import _heap as heap
from fsar._device import resolve_device
from fsar.cache.store import FeatureCache, open_cache
from fsar.episodes import EpisodeError, EpisodeList, load_episodes, save_episodes
from fsar.episodes import sample_episodes as draw_episodes
from fsar.episodes.pool import split_pool
from fsar.matchers.head import (
    Head,
    Origin,
    TrainDefaults,
    config_from_params,
    config_origins,
    episode_targets,
    show_value,
    train_origins,
)
from fsar.matchers.registry import get
from fsar.runner import distributed
from fsar.runner.checkpoint import (
    Checkpoint,
    CheckpointError,
    ClassText,
    class_text,
    head_scorer,
    load_checkpoint,
    save_checkpoint,
    text_kwargs,
)
from fsar.runner.features import LoadedFeatures, load_features, parse_modality
from fsar.runner.scoring import episode_correct, score_all
from fsar.runner.stream import (
    Step,
    open_features,
    plan_epoch,
    prefetched,
    take_episodes,
    train_pool,
    video_shape,
    window_steps,
)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """What ``fsar train`` fits. ``None`` optimiser settings take the head's defaults."""

    matcher: str
    shots: int = 1
    way: int = 5
    query: int = 5  # queries per class in training episodes
    episodes_per_epoch: int = 1000
    epochs: int = 10
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    tasks_per_step: int | None = None
    lr_decay_every: int | None = None
    lr_decay: float | None = None
    modality: str | None = None  # default: rgb, or rgb+flow for heads that need flow
    center: bool = False
    params: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA

    def modalities(self) -> tuple[str, ...]:
        if self.modality is not None:
            return parse_modality(self.modality)
        return ("rgb", "flow") if get(self.matcher).needs_flow else ("rgb",)

    def optimiser_settings(self, defaults: TrainDefaults) -> TrainDefaults:
        return dataclasses.replace(
            defaults,
            lr=self.lr if self.lr is not None else defaults.lr,
            optimizer=self.optimizer or defaults.optimizer,  # type: ignore[arg-type]
            weight_decay=self.weight_decay if self.weight_decay is not None else defaults.weight_decay,
            tasks_per_step=self.tasks_per_step or defaults.tasks_per_step,
            lr_decay_every=self.lr_decay_every if self.lr_decay_every is not None else defaults.lr_decay_every,
            lr_decay=self.lr_decay if self.lr_decay is not None else defaults.lr_decay,
        )


def make_optimiser(params: list[torch.nn.Parameter], settings: TrainDefaults) -> torch.optim.Optimizer:
    """The optimiser ``settings`` name over ``params``."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    raise CheckpointError(f"unknown optimizer {settings.optimizer!r}: sgd, adam or adamw")


def _validate(head: Head, val: LoadedFeatures, episodes: EpisodeList, device: torch.device,
              text: ClassText | None) -> float:
    scores = score_all(head_scorer(head, device, "val", text), val, episodes, False, "val")["val"]
    return 100.0 * float(episode_correct(scores, episodes).mean())


def _val_episodes(cache: FeatureCache, config: TrainConfig, path: Path | None, n: int) -> EpisodeList:
    """The fixed val list: read from ``path`` when it exists, else drawn (and saved to ``path``)."""
    if path is not None and path.exists():
        return load_episodes(path)
    ids, classes, missing = split_pool(cache, "val")
    way = max(2, min(config.way, len(set(classes))))  # a small val split may hold fewer classes
    try:
        episodes = draw_episodes(ids, classes, way=way, shot=config.shots, query=1, n=n, seed=config.seed,
                                 dataset=cache.spec.dataset, split="val", excluded_missing=missing)
    except EpisodeError as err:
        raise EpisodeError(f"training validates on val-split episodes: {err}") from err
    if path is not None:
        save_episodes(episodes, path)
    return episodes


def describe_params(matcher: str) -> str:
    """The head's hyperparameters and optimiser settings, each with its default and whether that is the
    paper's value (and where the paper gives it) or fsar's choice (and why)."""
    info = get(matcher)
    lines = [f"{matcher}: {info.summary}", f"paper: {info.paper}", "parameters (-p NAME=VALUE):"]
    lines += _origin_lines(config_origins(info.obj.Config))
    lines.append("optimiser and schedule (fsar train flags):")
    lines += _origin_lines(train_origins(info.obj.defaults, matcher))
    return "\n".join(lines)


def _origin_lines(origins: list[Origin]) -> list[str]:
    shown = [(f"{o.name} = {show_value(o.value)}", o) for o in origins]
    width = max((len(text) for text, _ in shown), default=0)
    return [f"  {text:<{width}}  {o.source}: {o.note}" for text, o in shown]


def training_notes(views: int, config: TrainConfig, settings: TrainDefaults) -> list[str]:
    """What a user should know before a run: no augmented views, or a budget that stops before the paper's
    schedule (its total episodes, or a learning-rate decay that would never happen)."""
    notes = []
    if views == 1:
        notes.append("note: the cache has no augmented views (extract with --views 3): training on the test view")
    total = config.epochs * config.episodes_per_epoch
    paper_total = max(settings.budget, settings.lr_decay_every if settings.lr_decay != 1 else 0)
    if total < paper_total:
        decay = (f", lr x{settings.lr_decay:g} every {settings.lr_decay_every:,} episodes"
                 if settings.lr_decay_every else "")
        missed = " (its decay is never reached)" if settings.lr_decay_every and total <= settings.lr_decay_every else ""
        epochs = math.ceil(paper_total / config.episodes_per_epoch)
        notes.append(f"note: {config.matcher}'s paper schedule runs {paper_total:,} training episodes{decay}; this "
                     f"run trains {total:,}{missed}. --epochs {epochs} follows the paper's schedule")
    return notes


def last_path(out: str | Path) -> Path:
    """Where the latest (resumable) state of a run writing ``out`` lives."""
    return Path(str(out) + ".last")


def train(config: TrainConfig, cache_path: str | Path, out: str | Path, *, val_episodes: int = 300,
          val_path: Path | None = None, resume: bool = False, progress: bool = True,
          echo: Echo = print, class_names: str | Path | None = None, stream: bool | None = None) -> Checkpoint:
    """Train ``config.matcher`` on the train split of the cache; returns the best checkpoint (also at ``out``).

    ``class_names``: a map of anonymised class names to real ones (``--class-names``), read only by heads that
    embed class names; its sha256 is kept in the checkpoint's ``train["class_names_sha256"]``.
    ``stream``: read the train split's features from the cache step by step (True) or hold them in memory
    (False); None streams a split larger than :data:`fsar.runner.stream.IN_MEMORY_BYTES`. Both give the same
    weights. In a process group (torchrun) every rank calls this and returns the same checkpoint; only rank 0
    prints, validates and writes.
    """
    world = distributed.current()
    if not world.main:
        echo, progress = _quiet, False
    info = get(config.matcher)
    if info.kind != "learned":
        raise CheckpointError(f"{config.matcher!r} is parameter-free: evaluate it directly with fsar eval")
    modalities = config.modalities()
    if info.needs_flow and "flow" not in modalities:
        raise CheckpointError(f"{config.matcher} needs flow features: use --modality rgb+flow")
    cache = open_cache(cache_path)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    try:
        head_config = config_from_params(info.obj.Config, config.params)
    except ValueError as err:
        raise CheckpointError(f"{config.matcher}: {err}") from None
    dims = {m: cache.spec.feature_dim for m in modalities}
    head: Head = info.obj(dims, cache.spec.frames, head_config).to(device)
    text = class_text(config.matcher, head, cache.class_names, class_names)  # None unless the head reads names
    settings = config.optimiser_settings(info.obj.defaults)
    optimiser = make_optimiser([p for p in head.parameters() if p.requires_grad], settings)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp)
    best = _new_checkpoint(config, cache, head, head_config, modalities, info.needs_patches, settings)
    if text is not None and text.mapping_sha256 is not None:  # which names the weights were trained on
        best.train["class_names_sha256"] = text.mapping_sha256
    best.train["world_size"] = world.size
    per_step = _per_step(config, settings)
    if per_step < world.size:
        raise CheckpointError(f"{world.size} processes share each step's {per_step} episodes: raise "
                              f"--tasks-per-step to at least {world.size}")
    start_epoch = 0
    if resume and last_path(out).exists():
        start_epoch, best = _restore(last_path(out), best, head, optimiser, scaler)
        echo(f"resuming {config.matcher} after epoch {start_epoch} (best val {best.val_accuracy:.2f} %)")
    distributed.broadcast_module(head, world)
    pool = train_pool(cache, modalities[0])
    data = open_features(cache, pool, modalities, info.needs_patches, config.center, stream)
    window = window_steps(_step_videos(head, config, settings),
                          4 * len(modalities) * math.prod(video_shape(cache, info.needs_patches)))
    for note in training_notes(cache.spec.views, config, settings):
        echo(note)
    validate = _validator(cache, config, val_path, val_episodes, modalities, info.needs_patches, text, device, world)
    accuracy = best.val_accuracy
    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        desc = f"epoch {epoch}/{config.epochs}" + ("" if math.isnan(accuracy) else f" (last val {accuracy:.1f} %)")
        plans = plan_epoch(pool, config, epoch, per_step, head.balanced_batch)
        steps = prefetched(take_episodes(plans, world.part(per_step)), data, window)
        loss = _run_epoch(head, steps, text, config, epoch, settings, optimiser, scaler, device, progress and desc,
                          world)
        accuracy = distributed.broadcast_float(validate(head), world, device)
        entry = {"epoch": float(epoch), "loss": loss, "val_accuracy": accuracy,
                 "seconds": time.perf_counter() - started}
        improved = not accuracy <= best.val_accuracy  # NaN (no epoch yet) counts as improved
        if improved:
            best = dataclasses.replace(best, state_dict=_cpu_state(head), epoch=epoch, val_accuracy=accuracy)
        best = dataclasses.replace(best, history=[*best.history, entry])
        if world.main:
            save_checkpoint(best, out)  # the best weights with the history so far
            save_checkpoint(_last_state(best, head, epoch, optimiser, scaler), last_path(out))
        distributed.barrier(world)  # no rank starts the next epoch (or returns) before the files are written
        echo(f"epoch {epoch}/{config.epochs}  loss {loss:.4f}  val {accuracy:.2f} %"
             + ("  (best, saved)" if improved else "") + f"  {entry['seconds']:.0f} s")
    return best


def _quiet(_: str) -> None:
    pass


def _validator(cache: FeatureCache, config: TrainConfig, path: Path | None, n: int, modalities: tuple[str, ...],
               patches: bool, text: ClassText | None, device: torch.device, world: distributed.World
               ) -> Callable[[Head], float]:
    """The val accuracy of a head on the fixed val list: rank 0 scores it (NaN elsewhere, replaced by rank 0's)."""
    if not world.main:
        return lambda _: math.nan
    episodes = _val_episodes(cache, config, path, n)
    val = load_features(cache, episodes, modalities, patches, config.center)
    return lambda head: _validate(head, val, episodes, device, text)


def _per_step(config: TrainConfig, settings: TrainDefaults) -> int:
    return min(settings.tasks_per_step, config.episodes_per_epoch)


def _step_videos(head: Head, config: TrainConfig, settings: TrainDefaults) -> int:
    """Videos one optimiser step reads: its episodes' and its balanced batch's."""
    batch = math.prod(head.balanced_batch) if head.balanced_batch is not None else 0
    return _per_step(config, settings) * config.way * (config.shots + config.query) + batch


def _run_epoch(head: Head, batches: Iterator[Step], text: ClassText | None, config: TrainConfig, epoch: int,
               settings: TrainDefaults, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               device: torch.device, progress: str | bool, world: distributed.World) -> float:
    """One epoch of optimiser steps; the mean loss. ``progress``: the progress bar's label, or False.

    ``batches`` hold this rank's share of each step's episodes; the loss of a step (and the gradient) is the
    sum over the ranks of :func:`_shared_loss`, i.e. one process's loss over all the step's episodes.
    On a CPU each step's freed temporaries stay in the heap for the next step (:func:`fsar._heap.retained`).
    """
    per_step = _per_step(config, settings)
    steps = config.episodes_per_epoch // per_step
    mine = len(range(per_step)[world.part(per_step)])
    targets = episode_targets(config.way, config.query, mine, device)
    labels = torch.arange(config.way, device=device).repeat_interleave(config.shots).expand(mine, -1)
    params = [p for p in head.parameters() if p.requires_grad]
    head.train()
    total, parts_sum = 0.0, dict[str, float]()
    bar = tqdm(batches, total=steps, desc=str(progress), unit="step", disable=not progress, leave=False)
    with heap.retained() if device.type == "cpu" else contextlib.nullcontext():
        for i, (query, support, names, batch) in enumerate(bar, 1):
            set_lr(optimiser, settings, (epoch - 1) * config.episodes_per_epoch + (i - 1) * per_step)
            query = {m: x.to(device, torch.float32, non_blocking=True) for m, x in query.items()}
            support = {m: x.to(device, torch.float32, non_blocking=True) for m, x in support.items()}
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
                loss, parts = head.loss(query, support, labels, config.way, targets, **text_kwargs(text, names, device))
                extra = None
                if batch is not None:
                    videos, video_labels, picked = batch
                    extra, extra_parts = head.batch_loss({m: x.to(device, torch.float32) for m, x in videos.items()},
                                                         video_labels.to(device), **text_kwargs(text, picked, device))
                    parts = parts | extra_parts
                loss = _shared_loss(loss, extra, mine / per_step, world)
            step_loss = distributed.sum_value(loss, world)  # the same on every rank, so all of them stop together
            if not math.isfinite(step_loss):
                raise CheckpointError(f"loss became {step_loss} at epoch {epoch}, step {i}: lower --lr")
            scaler.scale(loss).backward()
            distributed.sum_gradients(params, world)  # before unscaling and clipping, which then see the whole step
            if settings.clip_norm:
                scaler.unscale_(optimiser)
                torch.nn.utils.clip_grad_norm_(head.parameters(), settings.clip_norm)
            scaler.step(optimiser)
            scaler.update()
            total += step_loss
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            bar.set_postfix(loss=f"{total / i:.4f}", **{k: f"{v / i:.3f}" for k, v in parts_sum.items() if k != "loss"})
    bar.close()
    return total / max(1, steps)


def _shared_loss(episodes: torch.Tensor, batch: torch.Tensor | None, share: float, world: distributed.World
                 ) -> torch.Tensor:
    """This rank's part of a step's loss: its episodes' mean loss weighted by its share of the step's episodes,
    plus 1/W of the balanced batch's loss (every rank computes it on the same batch). One process: the loss."""
    if world.size == 1:
        return episodes if batch is None else episodes + batch
    return episodes * share + (0.0 if batch is None else batch / world.size)


def set_lr(optimiser: torch.optim.Optimizer, settings: TrainDefaults, episodes_done: int) -> None:
    """Step decay as a function of the episodes seen so far (nothing to save for resume)."""
    decays = episodes_done // settings.lr_decay_every if settings.lr_decay_every > 0 else 0
    for group in optimiser.param_groups:
        group["lr"] = settings.lr * settings.lr_decay ** decays


def _cpu_state(head: Head) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}


def _new_checkpoint(config: TrainConfig, cache: FeatureCache, head: Head, head_config: Any,
                    modalities: tuple[str, ...], patches: bool, settings: TrainDefaults) -> Checkpoint:
    optimiser = {k: v for k, v in dataclasses.asdict(settings).items() if k != "origins"}
    train_settings = dataclasses.asdict(config) | {"optimiser": optimiser}
    return Checkpoint(matcher=config.matcher, config=dataclasses.asdict(head_config), dims=dict(head.dims),
                      frames=head.frames, modalities=modalities, patches=patches, center=config.center,
                      cache_sha256=cache.content_hash(), cache_path=str(cache.path), train=train_settings,
                      state_dict={}, val_accuracy=math.nan)


def _last_state(best: Checkpoint, head: Head, epoch: int, optimiser: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler) -> Checkpoint:
    resume = {"epoch": epoch, "weights": _cpu_state(head), "optimiser": optimiser.state_dict(),
              "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(),
              "best_state": best.state_dict, "best_epoch": best.epoch, "best_val": best.val_accuracy}
    return dataclasses.replace(best, resume=resume)


def _restore(path: Path, fresh: Checkpoint, head: Head, optimiser: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> tuple[int, Checkpoint]:
    """Load the ``.last`` state of an interrupted run into ``head``/``optimiser``; (epoch done, best so far)."""
    last = load_checkpoint(path)
    if last.resume is None:
        raise CheckpointError(f"{path} holds no training state to resume from")
    same = ("matcher", "config", "modalities", "cache_sha256", "center", "dims", "frames")
    differs = [k for k in same if getattr(last, k) != getattr(fresh, k)]
    keep = ("epochs", "device", "amp", "world_size")  # any number of processes continues a run
    differs += [k for k, v in fresh.train.items() if k not in keep and last.train.get(k) != v]
    if differs:
        raise CheckpointError(f"cannot resume {path}: it was trained with other settings ({', '.join(differs)}); "
                              f"delete it or write to another --out")
    state = last.resume
    head.load_state_dict(state["weights"])
    optimiser.load_state_dict(state["optimiser"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    best = dataclasses.replace(last, state_dict=state["best_state"], epoch=state["best_epoch"],
                               val_accuracy=state["best_val"], resume=None, train=fresh.train)
    return int(state["epoch"]), best
