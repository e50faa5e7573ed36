"""Default homes for every artefact, so that the short commands of the design card work as written.

A workspace (``--workspace``, ``$FSAR_WORKSPACE``, default ``./fsar-work``) holds ``caches/``,
``episodes/``, ``checkpoints/``, ``results/`` and ``tables/``. Explicit paths always win.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fsar.errors import FsarError

DEFAULT_WORKSPACE = "fsar-work"


class WorkspaceError(FsarError):
    """An artefact the workspace cannot find; the message says what to run."""


def workspace_dir(option: str | Path | None = None) -> Path:
    return Path(option or os.environ.get("FSAR_WORKSPACE") or DEFAULT_WORKSPACE)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "none"


def cache_path(workspace: Path, dataset: str, backbone: str, weights: str) -> Path:
    """``<workspace>/caches/<dataset>-<backbone>-<weights>.zarr``; ``weights`` is a short label."""
    return workspace / "caches" / f"{_slug(dataset)}-{_slug(backbone)}-{_slug(weights)}.zarr"


def weights_label(weights: str | None) -> str:
    """A short name for a weights choice: 'imagenet', 'none' or the file's stem."""
    if weights is None or weights in ("imagenet", "default"):
        return "imagenet"
    if weights == "none":
        return "none"
    return Path(weights).stem


def episodes_path(workspace: Path, dataset: str, split: str, way: int, shot: int, query: int, protocol: str) -> Path:
    name = f"{_slug(dataset)}-{split}-{way}way-{shot}shot-{query}q-{_slug(protocol)}.npz"
    return workspace / "episodes" / name


def find_cache(workspace: Path, dataset: str | None = None) -> Path:
    """The workspace's cache for ``dataset``, or its only cache when no dataset is named."""
    caches = sorted((workspace / "caches").glob("*.zarr"))
    if dataset is not None:
        caches = [c for c in caches if c.name.startswith(f"{_slug(dataset)}-")]
    if len(caches) == 1:
        return caches[0]
    what = f"for dataset {dataset!r} " if dataset else ""
    if not caches:
        raise WorkspaceError(
            f"no feature cache {what}in {workspace / 'caches'}; run `fsar extract --dataset NAME` first, "
            f"or pass --cache PATH"
        )
    names = ", ".join(c.name for c in caches)
    raise WorkspaceError(f"several caches {what}in {workspace / 'caches'} ({names}); choose one with --cache PATH")


def dataset_root(option: str | Path | None, dataset: str) -> Path:
    """``--root``, else ``$FSAR_DATA/<dataset>``; a clear error showing both when neither exists."""
    if option is not None:
        root = Path(option)
        if not root.exists():
            raise WorkspaceError(f"--root {root} does not exist")
        return root
    data = os.environ.get("FSAR_DATA")
    if data and (Path(data) / dataset).exists():
        return Path(data) / dataset
    looked = f"$FSAR_DATA/{dataset} ({Path(data) / dataset})" if data else "$FSAR_DATA/<dataset> ($FSAR_DATA unset)"
    raise WorkspaceError(f"no dataset root for {dataset!r}: pass --root DIR, or put the videos in {looked}")
