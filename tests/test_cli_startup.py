"""The command line starts without the heavy libraries: structure, not speed (benchmarks/startup.py times it).

Each check runs in a fresh interpreter, since this test process has long imported torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "numba", "zarr")

SCRIPT = """
import json, sys
from click.testing import CliRunner
from fsar.cli import main
imported = {{"import fsar.cli": [m for m in {heavy!r} if m in sys.modules]}}
for args in {runs!r}:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
    imported[" ".join(args)] = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps(imported))
"""


def heavy_imports(*runs: list[str]) -> dict[str, list[str]]:
    """In a new interpreter: import fsar.cli, then run each command; the heavy modules loaded after each step."""
    code = SCRIPT.format(heavy=HEAVY, runs=list(runs))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["matchers"], ["datasets"]])
def test_help_and_listings_import_no_heavy_library(args: list[str]) -> None:
    imported = heavy_imports(args)
    assert imported == {"import fsar.cli": [], " ".join(args): []}


def test_no_command_help_imports_a_heavy_library() -> None:
    from fsar.cli import main

    runs = []
    for name, command in sorted(main.commands.items()):
        subcommands = sorted(getattr(command, "commands", {}))
        runs += [[name, "--help"]] + [[name, sub, "--help"] for sub in subcommands]
    assert ["train", "--help"] in runs  # the learned heads' names are read without importing them
    imported = heavy_imports(*runs)
    assert all(not modules for modules in imported.values()), imported
