"""Start-up time of the command line: ``fsar --help``, ``fsar matchers`` and ``fsar datasets``.

Each command runs as a fresh process (the installed ``fsar`` script next to this interpreter, else
``python -m fsar``); a figure is the median wall time of several runs. The baselines, measured in the
same run, are an interpreter that does nothing (``python -c pass``) and one that only imports torch
(``python -c "import torch"``), which these commands must not do. Goal: each under 1.5 s on a 2-core
machine. Run: ``python -m benchmarks --only startup`` (or ``python -m benchmarks.startup``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import Table, ratio, verdict

GOAL_S = 1.5
COMMANDS = (("fsar --help", ("--help",)), ("fsar matchers", ("matchers",)), ("fsar datasets", ("datasets",)))
BASELINES = (("python -c pass", "pass"), ('python -c "import torch"', "import torch"))


def fsar_command() -> list[str]:
    """How a user starts fsar here: the console script of this environment, else ``python -m fsar``."""
    script = Path(sys.executable).with_name("fsar")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fsar"]


def median_seconds(argv: list[str], runs: int) -> float:
    """Median wall time of ``runs`` runs of ``argv`` as a new process (output discarded); with more than one run,
    one untimed run first fills the file cache."""
    if runs > 1:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tables(quick: bool) -> list[Table]:
    runs = 1 if quick else 9
    base = {label: median_seconds([sys.executable, "-c", code], runs) for label, code in BASELINES}
    empty, torch_s = (base[label] for label, _ in BASELINES)
    table = Table(f"CLI start-up (median wall time of {runs} fresh process{'es' if runs > 1 else ''})",
                  ["command", "median s", "above `python -c pass`", "vs `import torch`", f"goal < {GOAL_S} s"])
    for label, _ in BASELINES:
        table.add(label, f"{base[label]:.3f}", f"{base[label] - empty:+.3f}", ratio(base[label], torch_s), "-")
    for label, args in COMMANDS:
        seconds = median_seconds([*fsar_command(), *args], runs)
        table.add(label, f"{seconds:.3f}", f"{seconds - empty:+.3f}", ratio(seconds, torch_s),
                  verdict(seconds < GOAL_S))
    table.notes.append(f"`{' '.join(Path(a).name for a in fsar_command())}`; torch, numba and zarr are imported "
                       "only by the commands that compute (tests/test_cli_startup.py checks that these three "
                       "import none of them).")
    return [table]


if __name__ == "__main__":
    for t in tables(quick="--quick" in sys.argv):
        print(t.markdown())
