"""CLI commands around the pipeline: the matcher and dataset listings, the synthetic dataset, the demo."""

from __future__ import annotations

from pathlib import Path

import click

from fsar.cli.options import quiet_option, user_errors, workspace_option


@click.command("matchers")
def matchers_cmd() -> None:
    """List every registered matcher: kind, paper, and what its cache needs."""
    from fsar.matchers.registry import declared

    registry = declared()  # read from the source: no matcher module (nor torch, nor numba) is imported
    click.echo(f"{'name':<10} {'kind':<15} {'needs':<14} paper")
    for name in sorted(registry):
        info = registry[name]
        needs = ",".join(n for n, flag in (("flow", info.needs_flow), ("patches", info.needs_patches)) if flag)
        click.echo(f"{name:<10} {info.kind:<15} {needs or '-':<14} {info.paper}")


@click.command("datasets")
def datasets_cmd() -> None:
    """List the dataset catalog with the split sizes of each split set."""
    from fsar.datasets.catalog import list_datasets

    for info in list_datasets():
        click.echo(f"{info.name}: {info.description}")
        click.echo(f"    layout: {info.layout}")
        for split_set in info.split_sets:
            sizes = "  ".join(
                f"{split} {size.classes} classes/{size.videos} videos" for split, size in split_set.sizes.items()
            )
            default = " (default)" if split_set.name == info.default_split_set else ""
            click.echo(f"    split set {split_set.name}{default} [{split_set.source}]: {sizes}")


@click.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset directory.")
@click.option("--classes", type=click.IntRange(3, 100), default=100, show_default=True)
@click.option("--videos-per-class", type=click.IntRange(1), default=20, show_default=True)
@click.option("--size", type=click.IntRange(32, 1024), default=128, show_default=True, help="Frame side (px).")
@click.option("--fps", type=click.IntRange(1, 120), default=12, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG contact sheet of a few classes.")
@user_errors
def synth_cmd(out: Path, classes: int, videos_per_class: int, size: int, fps: int, seed: int,
              preview: Path | None) -> None:
    """Write the built-in synthetic action dataset (classes are motions, like Something-Something).

    100 classes = 10 motion primitives + 90 ordered pairs "A then B", split 64/12/24 like the
    standard benchmarks; h264 mp4 files in OUT/videos/<class>/, split lists in OUT/splits/.
    """
    from fsar.datasets.synthetic import synthesize

    try:
        summary = synthesize(out, classes=classes, videos_per_class=videos_per_class, size=size, fps=fps,
                             seed=seed, preview=preview)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {summary.n_videos} videos of {summary.n_classes} classes to {summary.out_dir} "
               f"in {summary.seconds:.1f} s")
    if preview is not None:
        click.echo(f"contact sheet: {preview}")


@click.command("demo")
@click.option("--videos-per-class", type=click.IntRange(7), default=12, show_default=True,
              help="Synthetic videos per class (5-shot episodes need shot + 1 per class).")
@click.option("--episodes", type=click.IntRange(1), default=2_000, show_default=True,
              help="Test episodes per setting (10000 = the OTAM protocol; slower on 2 cores).")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Decoding processes.")
@quiet_option("No progress bars.")
@workspace_option
@user_errors
def demo_cmd(videos_per_class: int, episodes: int, workers: int, quiet: bool, workspace: Path | None) -> None:
    """Run the whole pipeline on the built-in synthetic dataset (offline, CPU, a few minutes).

    synth -> extract (EfficientNet-Lite0, RGB + flow + 2x2 patches) -> fixed episodes -> eval of every
    parameter-free matcher at 5-way 1-shot and 5-shot -> table, plot and paired comparisons.
    Run it again to reuse everything already made.
    """
    from fsar.demo import DemoConfig, run_demo
    from fsar.workspace import workspace_dir

    config = DemoConfig(videos_per_class=videos_per_class, episodes=episodes, workers=workers)
    run_demo(workspace_dir(workspace), config, echo=click.echo, progress=not quiet)
