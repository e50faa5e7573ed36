"""Two CPU processes of one gloo process group, for the torchrun tests (a file rendezvous, no port)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def spawn(worker: Callable[..., None], tmp_path: Path, *args: object, timeout_s: int = 60) -> None:
    """``worker(*args)`` in 2 processes of one gloo group; a collective stuck past ``timeout_s`` fails."""
    mp.spawn(_join, args=(worker, str(tmp_path / "rendezvous"), args, timeout_s), nprocs=2, join=True)


def _join(rank: int, worker: Callable[..., None], rendezvous: str, args: tuple[object, ...], timeout_s: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        worker(*args)
    finally:
        dist.destroy_process_group()
