"""CLI commands of the evaluation stage: episodes, eval, compare, table, plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from fsar.cli.options import (
    LazyChoice,
    check_matcher_name,
    device_option,
    fusion_weights,
    int_list,
    name_values,
    param_option,
    preset_protocols,
    protocol_names,
    quiet_option,
    resolve_cache,
    results_option,
    split_option,
    table_formats,
    user_errors,
    workspace_option,
)
from fsar.workspace import episodes_path, results_dir, workspace_dir


@click.command("episodes")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Draw from this cache's videos.")
@click.option("--dataset", default=None, help="Use the workspace's cache of this dataset.")
@split_option(default="test", show_default=True)
@click.option("--way", type=click.IntRange(2), default=5, show_default=True)
@click.option("--shot", type=click.IntRange(1), default=1, show_default=True)
@click.option("--query", type=click.IntRange(1), default=None, help="Queries per class [protocol's, else 1].")
@click.option("--n", "n", type=click.IntRange(1), default=None, help="Episodes [protocol's, else 10000].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--protocol", type=LazyChoice(protocol_names), default="otam", show_default=True,
              help="otam: 10,000 episodes x 1 query; ita: 10 runs x 600 x 15 queries; m3net: 6,000 x 5 queries.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Episode-list file [<workspace>/episodes/...].")
@workspace_option
@user_errors
def episodes_cmd(cache: Path | None, dataset: str | None, split: str, way: int, shot: int, query: int | None,
                 n: int | None, seed: int, protocol: str, out: Path | None, workspace: Path | None) -> None:
    """Write a fixed, seeded episode list (refers to videos by id, so it fits every cache of a dataset)."""
    from fsar.cache.store import open_cache
    from fsar.episodes import CUSTOM, save_episodes
    from fsar.episodes.pool import episodes_for, pool_line

    if protocol == CUSTOM:
        query, n = query or 1, n or 10_000
    opened = open_cache(resolve_cache(workspace, cache, dataset))
    episodes = episodes_for(opened, split=split, way=way, shot=shot, seed=seed, protocol=protocol, query=query, n=n)
    if out is None:
        out = episodes_path(workspace_dir(workspace), dataset=opened.spec.dataset, split_set=opened.spec.split_set,
                            split=split, way=way, shot=shot, query=episodes.query, protocol=protocol, seed=seed)
    save_episodes(episodes, out)
    excluded = f", {episodes.excluded_missing} unusable videos excluded" if episodes.excluded_missing else ""
    click.echo(f"wrote {episodes.n_episodes:,} {way}-way {shot}-shot episodes ({episodes.query} queries per class, "
               f"{len(episodes.ids)} videos{excluded}) to {out}")
    click.echo(pool_line(opened, split))


@click.command("eval")
@click.option("--matcher", "matcher_name", required=True, help="A registered matcher (see `fsar matchers`) or 'all'.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="[the workspace's cache]")
@click.option("--dataset", default=None, help="Pick the workspace's cache of this dataset.")
@click.option("--shots", default="1", show_default=True, help="Shots, comma-separated (e.g. 1,5).")
@click.option("--way", type=click.IntRange(2), default=5, show_default=True)
@click.option("--episodes", "episodes_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A fixed episode list [the workspace's list for the protocol, made on first use].")
@click.option("--protocol", type=LazyChoice(preset_protocols), default="otam", show_default=True)
@click.option("--modality", default=None, help="rgb, flow or rgb+flow (z-normalised fusion) [rgb; a checkpoint's "
              "own].")
@click.option("--weights", default=None, help="Fusion of several streams or components: 'paper' (each weighs 1 "
              "after per-episode z-normalisation, the method as published), 'val' (chosen on val episodes), or "
              "weights, e.g. rgb-otam=1,rgb-km=1,flow-otam=0.5,flow-km=0.5 [val; one stream: equal].")
@click.option("--center", is_flag=True, help="Subtract each video's temporal mean RGB feature before matching "
              "(removes static appearance, keeps motion; recorded, labelled '/c' in tables).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of episode lists made on first use.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A learned head trained with `fsar train`.")
@click.option("--class-names", "class_names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="With --checkpoint: real names of anonymised classes (SSv2-full's test18), lines "
              "'NAME,REAL NAME', for heads that embed class names (hcl); see `fsar class-names`.")
@click.option("--allow-other-cache", is_flag=True,
              help="Evaluate a checkpoint on a cache other than the one it was trained on (same layout).")
@device_option("Where learned heads run: auto, cpu, cuda ...")
@param_option("With --checkpoint: a hyperparameter that only changes how the trained head scores "
              "(e.g. m3net predict=im, one branch of the fused prediction); repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results directory [<workspace>/results].")
@click.option("--json", "as_json", is_flag=True, help="Print each result record as JSON.")
@quiet_option("No progress bars.")
@workspace_option
@user_errors
def eval_cmd(matcher_name: str, cache: Path | None, dataset: str | None, shots: str, way: int,
             episodes_file: Path | None, protocol: str, modality: str | None, weights: str | None, center: bool,
             seed: int, checkpoint: Path | None, class_names: Path | None, allow_other_cache: bool, device: str,
             params: tuple[str, ...], out: Path | None, as_json: bool, quiet: bool, workspace: Path | None) -> None:
    """Score matchers on fixed test episodes and write one result record per run."""
    from fsar._device import resolve_device
    from fsar.runner.distributed import process_group
    from fsar.runner.evaluate import EvalPlan, run_plan

    check_matcher_name(matcher_name)  # before any cache or list is read
    if episodes_file is not None:
        check_fits_list(episodes_file, shots, way)
    plan = EvalPlan(matchers=matcher_name, cache=resolve_cache(workspace, cache, dataset),
                    shots=tuple(int_list(shots)), way=way, episodes=episodes_file, protocol=protocol,
                    modality=modality, weights=fusion_weights(weights), center=center, seed=seed,
                    workspace=workspace_dir(workspace), out=out, checkpoint=checkpoint,
                    allow_other_cache=allow_other_cache, device=device, params=name_values(params),
                    class_names=class_names)
    with process_group(resolve_device(device)):  # under torchrun: each rank scores a share of the episodes
        for line in run_plan(plan, progress=not quiet, as_json=as_json, warn=lambda text: click.echo(text, err=True)):
            click.echo(line)


def check_fits_list(episodes_file: Path, shots: str, way: int) -> None:
    """``--shots``/``--way`` given on the command line must be the list's own: a list fixes both."""
    from fsar.episodes import load_episodes

    ctx = click.get_current_context()
    given = {name for name in ("shots", "way") if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    episodes = load_episodes(episodes_file)
    wrong = []
    if "shots" in given and int_list(shots) != [episodes.shot]:
        wrong.append(f"--shots {shots} (the list is {episodes.shot}-shot)")
    if "way" in given and way != episodes.way:
        wrong.append(f"--way {way} (the list is {episodes.way}-way)")
    if wrong:
        raise click.UsageError(f"{' and '.join(wrong)} contradict --episodes {episodes_file}: a list fixes its way "
                               f"and shot; leave those options out, or draw a list for them with `fsar episodes`")


def filter_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--filter KEY=VALUE`` (repeatable): keep only records whose provenance field has that value."""
    return click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
                        help="Only records with this provenance, e.g. seed=1, split_set=full, backbone=resnet50, "
                        "cache=PREFIX or episodes=PREFIX (hash prefixes); repeatable.")(func)


@click.command("compare")
@click.argument("matcher_a")
@click.argument("matcher_b")
@results_option
@click.option("--shot", type=int, default=None, help="Only runs with this shot.")
@click.option("--way", type=int, default=None)
@click.option("--modality", default=None, help="Only runs with this modality (default: any).")
@filter_option
@click.option("--a", "a_filters", multiple=True, metavar="KEY=VALUE",
              help="Only MATCHER_A's records with this provenance (as --filter); repeatable.")
@click.option("--b", "b_filters", multiple=True, metavar="KEY=VALUE",
              help="Only MATCHER_B's records with this provenance; with --a, one matcher on two caches: "
                   "`fsar compare otam otam --a cache=PREFIX --b cache=PREFIX --allow-different`.")
@click.option("--allow-different", is_flag=True,
              help="Compare runs on different caches or settings too (the line says what differs).")
@workspace_option
@user_errors
def compare_cmd(matcher_a: str, matcher_b: str, results: Path | None, shot: int | None, way: int | None,
                modality: str | None, filters: tuple[str, ...], a_filters: tuple[str, ...], b_filters: tuple[str, ...],
                allow_different: bool, workspace: Path | None) -> None:
    """Paired difference of two matchers on identical episodes: bootstrap 95% CI and exact McNemar.

    The two sides may be one matcher on two caches (--a, --b), e.g. ImageNet features against a fine-tuned
    backbone's on the same episode list.
    """
    from fsar.report.pairs import compare_latest

    results = results or results_dir(workspace_dir(workspace))
    for line in compare_latest(results, matcher_a, matcher_b, shot=shot, way=way, modality=modality,
                               filters=filters, allow_different=allow_different, a_filters=a_filters,
                               b_filters=b_filters):
        click.echo(line)


@click.command("table")
@results_option
@click.option("--format", "fmt", type=LazyChoice(table_formats), default="md", show_default=True)
@click.option("--layout", type=click.Choice(["matchers", "ablation"]), default="matchers", show_default=True,
              help="matchers: one row per matcher; ablation: one row per trained variant of a learned head, "
              "with its switches as columns (as the papers print ablations).")
@click.option("--matcher", default=None, help="The head of an ablation table [every head with variants].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write to this file [<workspace>/tables/results.<format>].")
@filter_option
@click.option("--strict", is_flag=True, help="Refuse records whose pool is not the full split list.")
@workspace_option
@user_errors
def table_cmd(results: Path | None, fmt: str, layout: str, matcher: str | None, out: Path | None,
              filters: tuple[str, ...], strict: bool, workspace: Path | None) -> None:
    """Regenerate a results table (matchers x dataset/way/shot, mean ± 95% CI, best in bold)."""
    from fsar.report.pairs import ablation_from_dir, table_from_dir
    from fsar.workspace import tables_dir

    directory = results or results_dir(workspace_dir(workspace))
    if layout == "ablation":
        text = ablation_from_dir(directory, matcher, fmt, filters=filters, strict=strict)
    else:
        text = table_from_dir(directory, fmt, filters=filters, strict=strict)
    click.echo(text)
    if out is None:  # the README's workspace layout: tables/ holds the regenerated tables
        name = "ablation" if layout == "ablation" else "results"
        out = tables_dir(workspace_dir(workspace)) / f"{name}.{'tex' if fmt == 'latex' else fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


@click.command("plot")
@results_option
@click.option("--kind", type=click.Choice(["way", "shot", "bars"]), default="bars", show_default=True,
              help="Accuracy vs way (N-way curves), vs shot, or a bar chart per matcher.")
@click.option("--shot", type=int, default=1, show_default=True, help="Shot of the vs-way plot.")
@click.option("--way", type=int, default=5, show_default=True, help="Way of the vs-shot and bar plots.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file.")
@filter_option
@workspace_option
@user_errors
def plot_cmd(results: Path | None, kind: str, shot: int, way: int, out: Path, filters: tuple[str, ...],
             workspace: Path | None) -> None:
    """Plot accuracy with 95% CIs from result records."""
    from fsar.report.pairs import plot_from_dir

    path = plot_from_dir(results or results_dir(workspace_dir(workspace)), kind, out, shot=shot, way=way,
                         filters=filters)
    click.echo(f"wrote {path}")
