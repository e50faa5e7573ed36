"""Timing helpers and the Markdown table every benchmark returns."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

R = TypeVar("R")


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, in seconds (the least disturbed by other processes)."""
    best = np.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return float(best)


def timed(fn: Callable[[], R]) -> tuple[float, R]:
    """(seconds, result) of one call of ``fn``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` as ``12.3x`` (or ``-`` when undefined)."""
    if not np.isfinite(value) or not np.isfinite(baseline) or baseline <= 0:
        return "-"
    r = value / baseline
    return f"{r:,.0f}x" if r >= 100 else f"{r:,.1f}x" if r >= 10 else f"{r:.2f}x"


def percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


@dataclass
class Table:
    """One Markdown table with a title and notes printed under it."""

    title: str
    headers: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.headers)} columns")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def machine_line() -> str:
    """CPU, core count, torch threads and load average: the context every figure needs."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"load average {load:.2f} at start")
