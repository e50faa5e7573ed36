"""Several processes (``torchrun``) training one head or scoring one episode list.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in every process; :func:`process_group` joins them (NCCL on CUDA,
gloo on the CPU) and :func:`current` tells the runners which share is theirs. Without torchrun the world is one
process and every helper here does nothing, so the trainer, the losses and the scorers run (and are tested)
without a process group.

Training: every rank plans the same seeded steps; rank r takes the contiguous episodes :meth:`World.part` of
each step, weighs its episode loss by its share of the step, adds 1/W of the (whole, shared) balanced batch's
loss, and the gradients are summed over the ranks (:func:`sum_gradients`). For a loss that averages per-episode
terms the summed gradient is the gradient of one process's step over all the step's episodes, up to the order
of float additions. Scoring: rank r scores episodes :meth:`World.part` of the list and every rank receives all
the scores in list order (:func:`gather_rows`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """The process that validates, writes checkpoints and records, and prints."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items; shares differ in size by at most one, in rank order."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)


def current() -> World:
    """The world of the initialised process group, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join torchrun's processes for the duration (nothing to join without torchrun, or when already joined).

    The rendezvous (MASTER_ADDR/MASTER_PORT, RANK, WORLD_SIZE) is read from the environment torchrun sets.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    dist.init_process_group(backend(device))
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block (e.g. writes a shared file), then the others run it (and find the file written)."""
    if not world.main:
        barrier(world)
    yield
    if world.main:
        barrier(world)


def _device_of(tensors: Iterable[torch.Tensor]) -> torch.device:
    return next(iter(tensors)).device


def broadcast_module(module: torch.nn.Module, world: World) -> None:
    """Rank 0's parameters and buffers in every rank (the same seed makes them equal already; this makes sure)."""
    if world.size == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def sum_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """Replace every gradient by its sum over the ranks, in one collective.

    A parameter without a gradient on every rank keeps none (an optimiser skips it, as one process would); one
    with a gradient on some ranks only counts zeros for the others.
    """
    if world.size == 1:
        return
    params = list(params)
    if not params:
        return
    device = _device_of(params)
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat([present] + [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().ravel()
                                  for p in params])
    dist.all_reduce(flat)
    at = len(params)
    for p, seen in zip(params, flat[:len(params)].tolist(), strict=True):
        part = flat[at:at + p.numel()].view_as(p)
        at += p.numel()
        if seen == 0:
            continue
        if p.grad is None:
            p.grad = part.to(p.dtype).clone()
        else:
            p.grad.copy_(part)


def sum_value(value: torch.Tensor, world: World) -> float:
    """A scalar summed over the ranks (the same float on every rank)."""
    if world.size == 1:
        return float(value.detach())
    total = value.detach().float().reshape(1).clone()
    dist.all_reduce(total)
    return float(total)


def broadcast_float(value: float, world: World, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor)


def gather_rows(parts: Mapping[str, NDArray[np.float32]], world: World) -> dict[str, NDArray[np.float32]]:
    """Each rank's arrays (this rank's rows of each) joined in rank order, on every rank."""
    if world.size == 1:
        return dict(parts)
    every: list[dict[str, NDArray[np.float32]] | None] = [None] * world.size
    dist.all_gather_object(every, dict(parts))
    names = every[0] or {}
    return {name: np.concatenate([p[name] for p in every if p is not None]) for name in names}
