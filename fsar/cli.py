"""The ``fsar`` command line. Each command parses its options, calls one library function, prints.

Heavy libraries (torch, numba, zarr) are imported inside the commands so that ``fsar --help``
answers at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fsar import __version__

F = TypeVar("F", bound=Callable[..., Any])


def _user_error_types() -> tuple[type[BaseException], ...]:
    from fsar.cache.store import CacheError
    from fsar.datasets.catalog import DatasetError
    from fsar.episodes import EpisodeError
    from fsar.report.compare import ComparisonError
    from fsar.report.results import RecordError
    from fsar.runner.checkpoint import CheckpointError
    from fsar.workspace import WorkspaceError

    return (CacheError, DatasetError, EpisodeError, WorkspaceError, RecordError, ComparisonError,
            CheckpointError)


def user_errors(func: F) -> F:
    """Turn the library's user-facing errors into a one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _user_error_types() as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


workspace_option = click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="FSAR_WORKSPACE",
    help="Default home of caches, episodes, checkpoints, results and tables [env FSAR_WORKSPACE; ./fsar-work].",
)


def name_values(values: tuple[str, ...]) -> dict[str, str]:
    """``--param NAME=VALUE`` options as a dict (typed later, by the head's config)."""
    out = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected name=value, got {text!r}", param_hint="--param")
        out[name.strip()] = value.strip()
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="fsar")
def main() -> None:
    """fsar: few-shot action recognition on cached video features.

    \b
    Pipeline:  synth/extract -> episodes -> train -> eval -> table/plot
    Quick start:  fsar demo    (the whole pipeline on the built-in synthetic dataset)
    """


@main.command("matchers")
def matchers_cmd() -> None:
    """List every registered matcher: kind, paper, and what its cache needs."""
    from fsar.matchers.registry import load_all

    registry = load_all()
    click.echo(f"{'name':<10} {'kind':<15} {'needs':<14} paper")
    for name in sorted(registry):
        info = registry[name]
        needs = ",".join(n for n, flag in (("flow", info.needs_flow), ("patches", info.needs_patches)) if flag)
        click.echo(f"{name:<10} {info.kind:<15} {needs or '-':<14} {info.paper}")


@main.command("datasets")
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


@main.command("synth")
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


@main.command("demo")
@click.option("--videos-per-class", type=click.IntRange(7), default=12, show_default=True,
              help="Synthetic videos per class (5-shot episodes need shot + 1 per class).")
@click.option("--episodes", type=click.IntRange(1), default=2_000, show_default=True,
              help="Test episodes per setting (10000 = the OTAM protocol; slower on 2 cores).")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Decoding processes.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
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


@main.group("cache")
def cache_group() -> None:
    """Inspect, verify and convert feature caches."""


@cache_group.command("info")
@click.argument("cache", type=click.Path(path_type=Path))
@user_errors
def cache_info(cache: Path) -> None:
    """What made a cache, its shape, split sizes and extraction progress."""
    from fsar.cache.tools import describe_cache

    click.echo(describe_cache(cache))


@cache_group.command("verify")
@click.argument("cache", type=click.Path(path_type=Path))
@user_errors
def cache_verify(cache: Path) -> None:
    """Check completeness, finiteness and per-video status; exit 1 when incomplete or corrupt."""
    from fsar.cache.tools import verify_cache

    report = verify_cache(cache)
    for m in report.modalities:
        counts = ", ".join(f"{k} {v}" for k, v in m.status_counts.items())
        click.echo(f"{m.modality}: {m.done}/{m.total} done ({counts}); {m.non_finite_videos} non-finite")
        for vid, message in sorted(m.failures.items()):
            click.echo(f"  unreadable {vid}: {message}")
    if not report.ok:
        raise click.ClickException(f"cache {cache} is incomplete or holds non-finite features")
    click.echo(f"cache {cache} ok (schema v{report.schema_version})")


@cache_group.command("export-h5")
@click.argument("cache", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--modality", type=click.Choice(["rgb", "flow"]), default="rgb", show_default=True)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None, help="Only this split.")
@user_errors
def cache_export(cache: Path, out: Path, modality: str, split: str | None) -> None:
    """Write features as HDF5 (all_feats [N,T,D], all_labels [N], ids, splits, class_names)."""
    from fsar.cache.tools import export_h5

    n = export_h5(cache, out, modality=modality, split=split)
    click.echo(f"wrote {n} videos to {out}")


@cache_group.command("import-h5")
@click.argument("h5file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--dataset", default="", help="Dataset name to record (default: the file's).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Split of every row, for dumps without a 'splits' dataset.")
@click.option("--modality", type=click.Choice(["rgb", "flow"]), default="rgb", show_default=True)
@user_errors
def cache_import(h5file: Path, out: Path, dataset: str, split: str | None, modality: str) -> None:
    """Make a cache from a published HDF5 feature dump so that it can be evaluated here."""
    from fsar.cache.tools import import_h5

    cache = import_h5(h5file, out, dataset=dataset, split=split, modality=modality)
    click.echo(f"imported {cache.n_videos} videos into {out}")


def _register_commands() -> None:
    """Import the modules whose commands attach themselves to :func:`main`."""
    import fsar.cli_eval  # noqa: F401
    import fsar.cli_extract  # noqa: F401
    import fsar.cli_train  # noqa: F401


_register_commands()

if __name__ == "__main__":
    main()
