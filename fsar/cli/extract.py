"""CLI of the extraction stage: ``fsar extract`` and ``fsar finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fsar.cli.options import (
    WORKERS,
    LazyChoice,
    dataset_options,
    device_option,
    episodic_matchers,
    flow_methods,
    modality_choice_option,
    name_values,
    param_option,
    quiet_option,
    shard,
    subset,
    user_errors,
    workspace_option,
)
from fsar.extract.backbone_names import DEFAULT_BACKBONE, PRECISIONS, names_text
from fsar.workspace import cache_path, dataset_root, episodic_path, finetuned_path, weights_label, workspace_dir


@click.command("extract")
@dataset_options
@click.option("--splits", default="train,val,test", show_default=True, help="Which splits to extract.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help=f"{names_text()} (ImageNet weights ship with fsar).")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet, a .pth file (torchvision or `fsar finetune` checkpoint), or none (random init).")
@click.option("--modality", default="rgb", show_default=True, help="rgb, flow or rgb,flow.")
@click.option("--frames", type=click.IntRange(1), default=8, show_default=True, help="TSN segments T.")
@click.option("--views", type=click.IntRange(1), default=1, show_default=True,
              help="1 test view + (views-1) augmented training views.")
@click.option("--patches", type=click.IntRange(0, 7), default=0, show_default=True,
              help="Also store the n x n pooled feature map (for hcl, m3net, zoom).")
@click.option("--short-side", type=click.IntRange(16), default=256, show_default=True)
@click.option("--input-size", type=click.IntRange(16), default=224, show_default=True, help="Centre crop side.")
@click.option("--flow-method", type=LazyChoice(flow_methods), default="farneback", show_default=True)
@click.option("--flow-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Read pre-extracted flow_x/flow_y jpgs from here instead of computing flow.")
@device_option()
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: fp16 on CUDA, bf16 on CPUs that have it, else fp32.")
@click.option("--workers", type=WORKERS, default="auto", show_default=True,
              help="Decoding processes (0: decode in this process). auto: 2 on a CPU, whose cores the backbone "
                   "uses; on CUDA this process's CPU cores (shared among torchrun's local ranks) less one, at most 16.")
@click.option("--batch-frames", type=click.IntRange(1), default=64, show_default=True)
@click.option("--chunk-videos", type=click.IntRange(1), default=16, show_default=True,
              help="Videos per committed chunk (the unit of resume and of sharding).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the augmented views.")
@click.option("--shard", "shard_text", default=None,
              help="i/n: extract only this process's slice (torchrun sets it itself).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Cache path [<workspace>/caches/<dataset>-<backbone>-<weights>.zarr].")
@quiet_option()
@workspace_option
@user_errors
def extract_cmd(dataset: str, root: Path | None, split_set: str | None, split_dir: Path | None, splits: str,
                backbone: str, weights: str, modality: str, frames: int, views: int, patches: int,
                short_side: int, input_size: int, flow_method: str, flow_root: Path | None, device: str,
                precision: str, workers: int | str, batch_frames: int, chunk_videos: int, seed: int,
                shard_text: str | None, out: Path | None, quiet: bool, workspace: Path | None) -> None:
    """Decode videos, run the backbone and write per-frame features to a Zarr cache.

    Resumable: run the same command again after an interruption. Unreadable videos are recorded and
    listed, never fatal. Several machines or GPUs: `--shard i/n`, or `torchrun --nproc-per-node G -m fsar
    extract ...` (each rank writes its own chunk-aligned slice of one store).
    """
    from fsar.cache.schema import MODALITIES
    from fsar.datasets.catalog import SPLITS
    from fsar.extract.run import ExtractConfig, describe, run_extraction, torchrun_shard

    if weights == "none":
        click.echo("warning: --weights none extracts features of a randomly initialised network; "
                   "matchers score at chance on them", err=True)
    config = ExtractConfig(
        dataset=dataset, root=dataset_root(root, dataset), backbone=backbone, weights=weights,
        modalities=subset(modality, MODALITIES, "--modality"), frames=frames, views=views, patches=patches,
        short_side=short_side, input_size=input_size, flow_method=flow_method,  # type: ignore[arg-type]
        flow_root=flow_root, split_set=split_set, split_dir=split_dir,
        splits=subset(splits, SPLITS, "--splits"), device=device, precision=precision,
        workers=workers if isinstance(workers, int) else "auto", batch_frames=batch_frames, seed=seed,
        chunk_videos=chunk_videos,
        shard=shard(shard_text) or torchrun_shard() or (0, 1),
    )
    out = out or cache_path(workspace_dir(workspace), dataset, backbone, weights_label(weights))
    click.echo(describe(run_extraction(config, out, progress=not quiet)))


@click.command("finetune")
@dataset_options
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help=f"{names_text()}.")
@click.option("--weights", default="imagenet", show_default=True,
              help="Starting weights: imagenet, a .pth file, or none (random init).")
@modality_choice_option(default="rgb", show_default=True,
                        help="flow: train on optical-flow images from the cross-modality initialised network.")
@click.option("--flow-method", type=LazyChoice(flow_methods), default="farneback", show_default=True)
@click.option("--episodic", is_flag=True,
              help="Train the backbone together with --matcher on few-shot episodes (as the FSAR papers train), "
                   "instead of as a frame classifier.")
@click.option("--matcher", "matcher_name", type=LazyChoice(episodic_matchers), default=None,
              help="With --episodic: a learned head, or a parameter-free matcher with a differentiable form.")
@click.option("--way", type=click.IntRange(2), default=5, show_default=True, help="With --episodic.")
@click.option("--shots", type=click.IntRange(1), default=1, show_default=True, help="With --episodic.")
@click.option("--query", type=click.IntRange(1), default=5, show_default=True,
              help="With --episodic: queries per class in training episodes.")
@click.option("--episodes-per-epoch", type=click.IntRange(1), default=1000, show_default=True,
              help="With --episodic.")
@click.option("--val-episodes", type=click.IntRange(1), default=300, show_default=True,
              help="With --episodic: a fixed, seeded val-split list scored after every epoch.")
@click.option("--tasks-per-step", type=click.IntRange(1), default=None,
              help="With --episodic: episodes per optimiser step [the matcher's recipe].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default=None,
              help="With --episodic [the matcher's recipe; see `fsar train --list-params`].")
@param_option("With --episodic: a head hyperparameter, repeatable (see `fsar train --matcher NAME --list-params`).")
@click.option("--patches", type=click.IntRange(1), default=4, show_default=True,
              help="With --episodic, for heads that read patches: the n x n grid (extract the cache with the same).")
@click.option("--center", is_flag=True, help="With --episodic: centre RGB features in time (evaluate with --center).")
@click.option("--class-names", "class_names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="With --episodic, for heads that embed class names: a map of anonymised names.")
@click.option("--grad-checkpoint", is_flag=True,
              help="With --episodic: recompute the backbone's activations in the backward pass (less memory, one "
                   "more forward pass).")
@click.option("--head-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --episodic and a learned head: its checkpoint [<out stem>-head.pt].")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Learning rate [1e-3: SGD with a cosine schedule, the new head 10x; with --episodic the "
                   "matcher's recipe].")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Frames per step, rounded down to whole videos of --frames-per-video frames.")
@click.option("--frames-per-video", type=click.IntRange(1), default=8, show_default=True,
              help="TSN segments per video; one random frame of each is a training sample.")
@click.option("--input-size", type=click.IntRange(16), default=224, show_default=True, help="Crop side.")
@click.option("--short-side", type=click.IntRange(16), default=256, show_default=True,
              help="Short side before the centre crop of validation (and flow computation).")
@click.option("--workers", type=click.IntRange(0), default=4, show_default=True, help="Decoding processes.")
@device_option()
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 autocast on CUDA (fp16 + loss scaling without bf16), fp32 on CPU.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val/--no-val", default=True, show_default=True,
              help="Hold out a seeded 10% of the train videos, score frame accuracy, keep the best epoch "
                   "(--episodic always validates on val-split episodes).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint [<workspace>/checkpoints/<dataset>-<backbone>[-flow]-finetuned.pt; with --episodic "
                   "...-episodic-<matcher>.pt].")
@quiet_option()
@workspace_option
@user_errors
def finetune_cmd(dataset: str, root: Path | None, split_set: str | None, split_dir: Path | None, backbone: str,
                 weights: str, modality: str, flow_method: str, episodic: bool, matcher_name: str | None, way: int,
                 shots: int, query: int, episodes_per_epoch: int, val_episodes: int, tasks_per_step: int | None,
                 optimizer: str | None, params: tuple[str, ...], patches: int, center: bool, class_names: Path | None,
                 grad_checkpoint: bool, head_out: Path | None, epochs: int, lr: float | None, batch_size: int,
                 frames_per_video: int, input_size: int, short_side: int, workers: int, device: str,
                 precision: str, seed: int, val: bool, out: Path | None, quiet: bool,
                 workspace: Path | None) -> None:
    """Fine-tune a backbone on the train split's classes: as a frame classifier, or with --episodic together
    with a matcher on few-shot episodes.

    Frame classifier: frames of train videos, labelled with their video's class, train the network with a new
    linear head over the train classes (the "fine-tuned ResNet-50" of the FSAR papers).

    Episodic (--episodic --matcher NAME): the backbone and the matcher train end to end on seeded episodes of
    decoded, TSN-augmented frames with the matcher's paper recipe; val-split episodes after every epoch keep the
    best one. A learned head's checkpoint is written too; it evaluates on any cache extracted with the backbone.

    Either checkpoint works with `fsar extract --weights <checkpoint>`. Resumable: run the same command again
    after an interruption.
    """
    root = dataset_root(root, dataset)
    if episodic:
        if matcher_name is None:
            raise click.UsageError("--episodic needs --matcher NAME (e.g. otam, proto, tap, hcl)")
        _episodic(dataset=dataset, root=root, matcher=matcher_name, backbone=backbone, weights=weights,
                  modality=modality, split_set=split_set, split_dir=split_dir, way=way, shots=shots, query=query,
                  episodes_per_epoch=episodes_per_epoch, epochs=epochs, val_episodes=val_episodes, lr=lr,
                  optimizer=optimizer, tasks_per_step=tasks_per_step, params=tuple(name_values(params).items()),
                  frames=frames_per_video, patches=patches, center=center, input_size=input_size,
                  short_side=short_side, flow_method=flow_method, workers=workers, device=device,
                  precision=precision, grad_checkpoint=grad_checkpoint, seed=seed, class_names=class_names,
                  out=out, head_out=head_out, quiet=quiet, workspace=workspace)
        return
    given = [flag for flag, value in (("--matcher", matcher_name), ("--grad-checkpoint", grad_checkpoint),
                                      ("--head-out", head_out), ("--class-names", class_names), ("--center", center),
                                      ("-p", params), ("--tasks-per-step", tasks_per_step),
                                      ("--optimizer", optimizer)) if value]
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --episodic (the frame classifier has no matcher)")
    from fsar.extract.finetune import FinetuneConfig, describe, finetune

    config = FinetuneConfig(
        dataset=dataset, root=root, backbone=backbone, weights=weights,
        modality=modality, split_set=split_set, split_dir=split_dir, epochs=epochs,  # type: ignore[arg-type]
        lr=lr or 1e-3, batch_size=batch_size, frames_per_video=frames_per_video, input_size=input_size,
        short_side=short_side, flow_method=flow_method, workers=workers, device=device,  # type: ignore[arg-type]
        precision=precision, seed=seed, val=val,
    )
    out = out or finetuned_path(workspace_dir(workspace), dataset, backbone, modality)
    click.echo(describe(finetune(config, out, progress=not quiet)))


def _episodic(*, out: Path | None, head_out: Path | None, quiet: bool, workspace: Path | None, **settings: Any
              ) -> None:
    from fsar._device import resolve_device
    from fsar.runner.distributed import process_group
    from fsar.runner.episodic import EpisodicConfig, describe, finetune_episodic

    config = EpisodicConfig(**settings)
    out = out or episodic_path(workspace_dir(workspace), config.dataset, config.backbone, config.matcher)
    with process_group(resolve_device(config.device)) as world:  # under torchrun: each rank a share of each step
        summary = finetune_episodic(config, out, head_out, progress=not quiet, echo=click.echo)
    if world.main:
        click.echo(describe(summary))
