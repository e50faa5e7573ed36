"""CLI command of the training stage: fit a learned head on cached features."""

from __future__ import annotations

from pathlib import Path

import click

from fsar.cli.options import (
    LazyChoice,
    device_option,
    learned_heads,
    name_values,
    param_option,
    quiet_option,
    resolve_cache,
    user_errors,
    workspace_option,
)
from fsar.workspace import checkpoint_path, val_episodes_path, workspace_dir


@click.command("train")
@click.option("--matcher", "matcher_name", required=True, type=LazyChoice(learned_heads),
              help="A learned head (see `fsar matchers`).")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="[the workspace's cache]")
@click.option("--dataset", default=None, help="Pick the workspace's cache of this dataset.")
@click.option("--shots", type=click.IntRange(1), default=1, show_default=True, help="Shots of training episodes.")
@click.option("--way", type=click.IntRange(2), default=5, show_default=True)
@click.option("--query", type=click.IntRange(1), default=5, show_default=True, help="Queries per class.")
@click.option("--episodes-per-epoch", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--lr", type=float, default=None, help="Learning rate [the paper's].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default=None, help="[the paper's]")
@click.option("--weight-decay", type=float, default=None, help="[the paper's]")
@click.option("--tasks-per-step", type=click.IntRange(1), default=None,
              help="Episodes per optimiser step, batched in one forward pass [the paper's].")
@click.option("--lr-decay-every", type=click.IntRange(0), default=None,
              help="Multiply the learning rate by --lr-decay after every this many episodes [the paper's; 0: never].")
@click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=None, help="[the paper's, or 0.1]")
@click.option("--modality", default=None, help="rgb, flow or rgb+flow [rgb; rgb+flow for heads that need flow].")
@click.option("--center", is_flag=True, help="Subtract each video's temporal mean RGB feature (kept for eval).")
@param_option("A head hyperparameter, repeatable (e.g. -p loss=ce -p gamma=64); see --list-params.")
@click.option("--class-names", "class_names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Real names of anonymised classes (SSv2-full's train3), lines 'NAME,REAL NAME', "
              "for heads that embed class names (hcl); see `fsar class-names`.")
@click.option("--val-episodes", type=click.IntRange(1), default=300, show_default=True,
              help="Size of the fixed val-split list scored after every epoch.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option()
@click.option("--no-amp", is_flag=True, help="Full precision on CUDA (mixed precision is the default there).")
@click.option("--resume/--restart", default=True, show_default=True,
              help="Continue from <out>.last when it exists.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Best checkpoint [<workspace>/checkpoints/<dataset>-<backbone>-<matcher>-<shots>shot.pt].")
@click.option("--list-params", is_flag=True, help="Show the head's hyperparameters and defaults, each marked as the "
              "paper's value (and where) or fsar's choice (and why), then exit.")
@quiet_option()
@workspace_option
@user_errors
def train_cmd(matcher_name: str, cache: Path | None, dataset: str | None, shots: int, way: int, query: int,
              episodes_per_epoch: int, epochs: int, lr: float | None, optimizer: str | None,
              weight_decay: float | None, tasks_per_step: int | None, lr_decay_every: int | None,
              lr_decay: float | None, modality: str | None, center: bool,
              params: tuple[str, ...], class_names: Path | None, val_episodes: int, seed: int, device: str,
              no_amp: bool, resume: bool, out: Path | None, list_params: bool, quiet: bool,
              workspace: Path | None) -> None:
    """Train a learned head on the train split of a feature cache; keep the best epoch by val accuracy.

    Training episodes are drawn from the train split (a new seeded draw every epoch, videos in their
    augmented views when the cache has them); a fixed val-split list picks the best epoch. Resumable:
    run the same command again after an interruption. Several GPUs or machines: `torchrun ... -m fsar train
    ...` shares each step's episodes among the processes (same schedule, same weights). Evaluate with
    `fsar eval --matcher NAME --checkpoint OUT`.
    """
    from fsar._device import resolve_device
    from fsar.cache.store import open_cache
    from fsar.report.plot import plot_history
    from fsar.runner.distributed import process_group
    from fsar.runner.train import TrainConfig, describe_params, train

    if list_params:
        click.echo(describe_params(matcher_name))
        return
    ws = workspace_dir(workspace)
    cache_path = resolve_cache(workspace, cache, dataset)
    config = TrainConfig(matcher=matcher_name, shots=shots, way=way, query=query,
                         episodes_per_epoch=episodes_per_epoch, epochs=epochs, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, tasks_per_step=tasks_per_step, lr_decay_every=lr_decay_every,
                         lr_decay=lr_decay, modality=modality, center=center,
                         params=name_values(params), seed=seed, device=device, amp=not no_amp)
    spec = open_cache(cache_path).spec
    out = out or checkpoint_path(ws, spec.dataset, spec.backbone, matcher_name, shots)
    val_path = val_episodes_path(ws, spec.dataset, way, shots, val_episodes, seed, spec.split_set)
    with process_group(resolve_device(device)) as world:  # under torchrun: each rank takes a share of each step
        ckpt = train(config, cache_path, out, val_episodes=val_episodes, val_path=val_path, resume=resume,
                     progress=not quiet, echo=click.echo, class_names=class_names)
    if not world.main:
        return
    curve = plot_history(ckpt.history, out.with_suffix(".png"), title=f"{matcher_name}, {way}-way {shots}-shot")
    click.echo(f"best: epoch {ckpt.epoch}, val {ckpt.val_accuracy:.2f} %  -> {out}  (curve: {curve})")
    click.echo(f"evaluate: fsar eval --matcher {matcher_name} --checkpoint {out} --shots {shots} --cache {cache_path}")
