"""The base helpers: atomic writes, the device resolver, the user-error base class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsar._device import DeviceError, resolve_device
from fsar._io import atomic_write
from fsar.errors import FsarError


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.txt"
    assert atomic_write(path, lambda tmp: tmp.write_text("first")) == path
    assert path.read_text() == "first"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "first"  # the old file stays
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]  # no temporary file is left


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="not a device name"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda:3")  # torchrun's local rank picks the GPU


def test_user_errors_share_one_base() -> None:
    from fsar.cache.store import CacheError
    from fsar.datasets.catalog import DatasetError
    from fsar.episodes import EpisodeError
    from fsar.extract.finetune import FinetuneError
    from fsar.extract.run import ExtractError
    from fsar.report.compare import ComparisonError
    from fsar.report.results import RecordError
    from fsar.runner.checkpoint import CheckpointError
    from fsar.workspace import WorkspaceError

    for error in (CacheError, DatasetError, EpisodeError, FinetuneError, ExtractError, ComparisonError, RecordError,
                  CheckpointError, WorkspaceError, DeviceError):
        assert issubclass(error, FsarError), error
