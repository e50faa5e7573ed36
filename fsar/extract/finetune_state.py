"""The resume file of ``fsar finetune``: ``<out>.state``, written after every epoch.

It holds the weights, optimiser and scaler states, the epochs' statistics, the best epoch so far and the
run's config, so that the same command continues an interrupted run exactly, and a command with other
settings (:data:`RESUME_FREE` aside) is refused instead of mixing two runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsar._io import atomic_write
from fsar.errors import FsarError

STATE_VERSION = 1
#: Config fields that may change between an interrupted run and its resumption.
RESUME_FREE = frozenset({"workers", "device"})


class FinetuneError(FsarError):
    """A fine-tuning run that cannot start or resume; the message says what to do."""


@dataclass
class EpochStats:
    """One epoch: mean training loss and frame accuracy, validation frame accuracy (None without val)."""

    epoch: int
    loss: float
    accuracy: float
    val_accuracy: float | None
    frames: int
    seconds: float
    lr: float


@dataclass
class RunState:
    """The mutable state of a run: what ``<out>.state`` holds besides the model and optimiser."""

    epoch: int = 0
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_accuracy: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def state_path(out: str | Path) -> Path:
    """The resume file of a run writing ``out``."""
    return Path(f"{out}.state")


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_state(path: Path, config: dict[str, Any], run: RunState, model: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Write ``path`` atomically: a run killed while writing leaves the previous epoch's state."""
    state = {"version": STATE_VERSION, "config": config, "epoch": run.epoch,
             "model": cpu_state(model), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "history": [asdict(e) for e in run.history],
             "best_epoch": run.best_epoch, "best_accuracy": run.best_accuracy, "best_state": run.best_state,
             "skipped": run.skipped}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path, config: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler) -> RunState:
    """Restore an interrupted run of the same configuration; an empty run when there is none."""
    if not path.is_file():
        return RunState()
    state = torch.load(path, map_location="cpu", weights_only=True)
    theirs = state.get("config", {})
    differ = sorted(k for k in config if k not in RESUME_FREE and theirs.get(k) != config[k])
    if state.get("version") != STATE_VERSION or differ:
        raise FinetuneError(f"{path} is an interrupted run with other settings ({', '.join(differ) or 'version'}); "
                            "run the same command to resume it, or delete the file to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return RunState(epoch=int(state["epoch"]), history=[EpochStats(**e) for e in state["history"]],
                    best_epoch=int(state["best_epoch"]), best_accuracy=float(state["best_accuracy"]),
                    best_state=state["best_state"], skipped=dict(state["skipped"]))
