"""Run every benchmark and print Markdown tables; also written to ``benchmarks/last-run.md`` (overwritten).

Usage: ``python -m benchmarks [--quick] [--only NAME] [--out PATH]`` with NAME one of the keys of ``BENCHMARKS``.
Every figure is compared with a baseline measured in the same run (backbone alone, the reference repositories' way), so
the ratios hold on a noisy shared machine even when the absolute numbers do not.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import eval as eval_bench
from benchmarks import extract, handover, head_eval, kernels, startup, train_memory
from benchmarks import train as train_bench
from benchmarks._common import Table, machine_line

BENCHMARKS: dict[str, Callable[[bool], list[Table]]] = {
    "kernels": kernels.tables,
    "eval": eval_bench.tables,
    "extract": extract.tables,
    "handover": handover.tables,
    "train": train_bench.tables,
    "head_eval": head_eval.tables,
    "train_memory": train_memory.tables,
    "startup": startup.tables,
}
# Not results.md: that file keeps the latest figures of every machine kind, curated by hand from such runs.
RESULTS = Path(__file__).resolve().parent / "last-run.md"


def run(names: list[str], quick: bool) -> str:
    """Markdown of the chosen benchmarks, printing each table as soon as it is measured."""
    parts = [f"# fsar benchmarks{' (quick)' if quick else ''}", "",
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine_line()}", ""]
    print("\n".join(parts), flush=True)
    for name in names:
        start = time.perf_counter()
        for table in BENCHMARKS[name](quick):
            parts.append(table.markdown())
            print(table.markdown(), flush=True)
        line = f"_{name}: {time.perf_counter() - start:.0f} s_\n"
        parts.append(line)
        print(line, flush=True)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run one benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(BENCHMARKS)
    text = run(names, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
