"""CLI command: the real class names of SSv2-full, whose split lists name classes by index (train0 .. test23)."""

from __future__ import annotations

from pathlib import Path

import click

from fsar.cli.options import user_errors


@click.command("class-names")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Map file to write (lines 'NAME,REAL NAME'), for `fsar train/eval --class-names`.")
@click.option("--labels", "labels_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The official SSv2 labels folder (train.json, validation.json; or the dataset root above "
              "labels/): match on its video labels too.")
@user_errors
def class_names_cmd(out: Path, labels_dir: Path | None) -> None:
    """Write the map of SSv2-full's anonymised class names to their label text.

    Each class takes the name its videos carry in the shipped SSv2-small (CMN) lists, and in the official
    labels with --labels; the map is written only if every class gets one name of its own.
    """
    from fsar.datasets.class_names import ClassNamesError, ssv2_full_class_names, write_class_names

    try:
        names = ssv2_full_class_names(labels_dir)
    except ClassNamesError as err:
        hint = "" if labels_dir is not None else (
            "; the SSv2-small lists share videos with only some classes: pass --labels with the official "
            "SSv2 train.json and validation.json")
        raise ClassNamesError(f"SSv2-full: {err}{hint}") from None
    source = "the SSv2-small (CMN) split lists" + ("" if labels_dir is None else f" and the labels in {labels_dir}")
    write_class_names(names, out, header=[f"SSv2-full (OTAM) class names, from the videos they share with {source}"])
    click.echo(f"wrote the real names of {len(names)} SSv2-full classes to {out}")
