"""The ``fsar`` command line. Each command parses its options, calls one library function, prints.

The group :func:`main` is defined here and every command is attached to it below; the commands live in
modules by pipeline stage (:mod:`~fsar.cli.misc`, :mod:`~fsar.cli.cache`, :mod:`~fsar.cli.extract`,
:mod:`~fsar.cli.evaluate`, :mod:`~fsar.cli.train`), which never import this package back. Their shared
options and parsers are in :mod:`fsar.cli.options`.

Heavy libraries (torch, numba, zarr) are imported inside the commands, and choices that need them are
read lazily, so that ``fsar --help``, ``fsar matchers`` and ``fsar datasets`` answer at once.
"""

from __future__ import annotations

import click

from fsar import __version__
from fsar.cli.cache import cache_group
from fsar.cli.class_names import class_names_cmd
from fsar.cli.evaluate import compare_cmd, episodes_cmd, eval_cmd, plot_cmd, table_cmd
from fsar.cli.extract import extract_cmd, finetune_cmd
from fsar.cli.misc import datasets_cmd, demo_cmd, matchers_cmd, synth_cmd
from fsar.cli.train import train_cmd

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="fsar")
def main() -> None:
    """fsar: few-shot action recognition on cached video features.

    \b
    Pipeline:  synth/extract -> episodes -> train -> eval -> table/plot
    Quick start:  fsar demo    (the whole pipeline on the built-in synthetic dataset)
    """


for _command in (matchers_cmd, datasets_cmd, synth_cmd, demo_cmd, cache_group, episodes_cmd, eval_cmd,
                 compare_cmd, table_cmd, plot_cmd, extract_cmd, finetune_cmd, train_cmd, class_names_cmd):
    main.add_command(_command)

if __name__ == "__main__":
    main()
