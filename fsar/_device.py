"""The one place a ``--device`` option becomes a torch device."""

from __future__ import annotations

import os

import torch

from fsar.errors import FsarError


class DeviceError(FsarError, ValueError):
    """A device that this machine does not have."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: this process's GPU when CUDA is present (``cuda:$LOCAL_RANK`` under torchrun), else the CPU;
    otherwise the named device (``cpu``, ``cuda``, ``cuda:1`` ...), refused when CUDA is absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:1 ...)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine")
    return device
