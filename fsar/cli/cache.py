"""CLI commands on feature caches: ``fsar cache info|verify|export-h5|import-h5``."""

from __future__ import annotations

from pathlib import Path

import click

from fsar.cli.options import modality_choice_option, split_option, user_errors


@click.group("cache")
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
@click.option("--repair", is_flag=True, help="Mark damaged videos not done, so that the same `fsar extract` "
              "command computes them again.")
@user_errors
def cache_verify(cache: Path, repair: bool) -> None:
    """Read every chunk of every done video: completeness, checksums, lost chunks, finiteness and per-video
    status; exit 1 when the cache is incomplete, damaged or holds non-finite features."""
    from fsar.cache.tools import verify_cache

    report = verify_cache(cache, repair=repair)
    for m in report.modalities:
        counts = ", ".join(f"{k} {v}" for k, v in m.status_counts.items())
        click.echo(f"{m.modality}: {m.done}/{m.total} done ({counts}); {m.non_finite_videos} non-finite; "
                   f"{len(m.damaged)} damaged")
        for vid, message in sorted(m.failures.items()):
            click.echo(f"  unreadable {vid}: {message}")
        for vid, message in sorted(m.damaged.items()):
            click.echo(f"  damaged {vid}: {message}")
    if any(m.damaged for m in report.modalities):
        then = ("marked not done: run the same `fsar extract` command to compute them again" if repair else
                f"run `fsar cache verify --repair {cache}`, then the same `fsar extract` command")
        raise click.ClickException(f"cache {cache} has damaged chunks; {then}")
    if not report.ok:
        raise click.ClickException(f"cache {cache} is incomplete or holds non-finite features")
    if not report.integrity:
        click.echo(f"note: cache {cache} was written before chunk checksums: a lost or damaged chunk cannot be "
                   f"told from real features; extract again into a new --out to get them", err=True)
    click.echo(f"cache {cache} ok (schema v{report.schema_version})")


@cache_group.command("missing")
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the list here (one 'split class id' line per video) instead of printing it.")
@user_errors
def cache_missing(cache: Path, out: Path | None) -> None:
    """List the videos of the split lists that were not under the dataset root when the cache was extracted."""
    from fsar.cache.tools import missing_videos

    lines = [" ".join(entry) for entry in missing_videos(cache)]
    if out is None:
        for line in lines:
            click.echo(line)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{line}\n" for line in lines))
        click.echo(f"wrote {len(lines)} missing videos to {out}")


@cache_group.command("export-h5")
@click.argument("cache", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@modality_choice_option(default="rgb", show_default=True)
@split_option(default=None, help="Only this split.")
@user_errors
def cache_export(cache: Path, out: Path, modality: str, split: str | None) -> None:
    """Write features as HDF5 (all_feats [N,T,D], all_labels [N], ids, splits, class_names)."""
    from fsar.cache.h5 import export_h5

    n = export_h5(cache, out, modality=modality, split=split)
    click.echo(f"wrote {n} videos to {out}")


@cache_group.command("import-h5")
@click.argument("h5file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--dataset", default="", help="Dataset name to record (default: the file's).")
@split_option(default=None, help="Split of every row, for dumps without a splits (or split) dataset.")
@modality_choice_option(default="rgb", show_default=True)
@click.option("--dtype", type=click.Choice(["keep", "float16"]), default="keep", show_default=True,
              help="keep: store the dump's float16 or float32 features as they are (float64 as float32). float16: "
              "halve the cache's size; a value beyond float16's range (|x| > 65504) is an error, never an inf.")
@user_errors
def cache_import(h5file: Path, out: Path, dataset: str, split: str | None, modality: str, dtype: str) -> None:
    """Make a cache from a published HDF5 feature dump so that it can be evaluated here.

    Datasets accepted: features all_feats|features|feats [N,T,D]; labels all_labels|labels [N]; video ids
    ids|video_ids|video_names|names; class names class_names|classes; splits splits|split. Any other
    dataset is an error. The cache records its preprocessing as unknown.
    """
    from fsar.cache.h5 import import_h5

    imported = import_h5(h5file, out, dataset=dataset, split=split, modality=modality, dtype=dtype)
    for note in imported.notes:
        click.echo(note)
    cache = imported.cache
    click.echo(f"imported {cache.n_videos} videos into {out} ({cache.spec.feature_dtype} features; the dump's are "
               f"{imported.source_dtype})")
