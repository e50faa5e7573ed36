"""Heap settings for CPU work: freed blocks stay in the heap (for the process or a scope), trim hands them back."""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fsar import _heap as heap
from fsar.datasets.synthetic import synthesize
from fsar.extract import run
from fsar.extract.run import ExtractConfig, run_extraction

# Prints how much resident memory freeing one touched 256 MB block gave back, then how much trim() did.
PROBE = """
import sys
import numpy as np
from fsar import _heap as heap
from fsar.extract.backbone import load_backbone

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

if sys.argv[1] == "cpu-backbone":
    load_backbone("resnet18", "none", "cpu")
block = np.ones(256 << 20, np.uint8)
before = rss()
del block
after_free = rss()
heap.trim()
print(before - after_free, after_free - rss())
"""

glibc = pytest.mark.skipif(not Path("/proc/self/statm").exists() or platform.libc_ver()[0] != "glibc",
                           reason="glibc on Linux")


def released(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    return int(out[-2]), int(out[-1])


@glibc
def test_a_cpu_backbone_keeps_freed_blocks_until_trimmed() -> None:
    # By default glibc unmaps a freed 256 MB block at once, so the next batch page-faults it in again.
    by_free, _ = released("plain")
    assert by_free > 200 << 20
    # Once a CPU backbone is loaded the block stays resident, until trim() hands it back.
    by_free, by_trim = released("cpu-backbone")
    assert by_free < 16 << 20
    assert by_trim > 200 << 20


@glibc
def test_retaining_is_reported_as_in_effect() -> None:
    assert heap.retain_freed_blocks() is True


def test_the_heap_is_trimmed_before_decode_workers_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synthesize(tmp_path / "data", classes=3, videos_per_class=1, size=32, seed=0, progress=False)
    order: list[str] = []
    monkeypatch.setattr(heap, "trim", lambda: order.append("trim"))
    loader = run.torch.utils.data.DataLoader

    def spy(*args: object, **kw: object) -> object:
        order.append("loader")
        return loader(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(run.torch.utils.data, "DataLoader", spy)
    config = ExtractConfig(dataset="synthetic", root=tmp_path / "data", backbone="efficientnet_lite0",
                           short_side=32, input_size=32, precision="fp32", workers=1, chunk_videos=4)
    run_extraction(config, tmp_path / "c.zarr", progress=False)
    assert order == ["trim", "loader"]
    order.clear()
    run_extraction(replace(config, workers=0), tmp_path / "d.zarr", progress=False)
    assert order == []  # no workers, no fork: the heap keeps its blocks


# Prints how much resident memory freeing a touched 256 MB block gave back inside heap.retained(), then after it.
SCOPED = """
import sys
import numpy as np
from fsar import _heap as heap

def released() -> int:
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    block = np.ones(256 << 20, np.uint8)
    before = rss()
    del block
    return before - rss()

if sys.argv[1] == "whole-process":
    heap.retain_freed_blocks()
with heap.retained():
    inside = released()
print(inside, released())
"""


@glibc
@pytest.mark.parametrize("mode", ["scoped", "whole-process"])
def test_blocks_retained_for_a_scope_are_handed_back_after_it_unless_the_process_keeps_them(mode: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCOPED, mode], capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    inside, after = int(out[-2]), int(out[-1])
    assert inside < 16 << 20
    if mode == "scoped":
        assert after > 200 << 20
    else:  # a CPU backbone's process keeps its blocks for every batch
        assert after < 16 << 20
