"""Default homes for every artefact, so that the short commands of the design card work as written.

A workspace (``--workspace``, ``$FSAR_WORKSPACE``, default ``./fsar-work``) holds ``caches/``,
``episodes/``, ``checkpoints/``, ``results/`` and ``tables/``. Explicit paths always win.

Every artefact's default name is built here and nowhere else: caches, episode lists, checkpoints of
learned heads and fine-tuned backbones, result records and the demo's outputs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
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


def episodes_path(workspace: Path, *, dataset: str, split_set: str, split: str, way: int, shot: int, query: int,
                  protocol: str, seed: int) -> Path:
    """A workspace episode list, named by everything that defines it, so that lists of another seed, split set
    or setting never take each other's place:
    ``<workspace>/episodes/<dataset>[-<split set>]-<split>-<way>way-<shot>shot-<query>q-<protocol>-seed<seed>.npz``."""
    data = _slug(dataset) + (f"-{_slug(split_set)}" if split_set else "")
    name = f"{data}-{split}-{way}way-{shot}shot-{query}q-{_slug(protocol)}-seed{seed}.npz"
    return workspace / "episodes" / name


def val_episodes_path(workspace: Path, dataset: str, way: int, shot: int, n: int, seed: int,
                      split_set: str = "") -> Path:
    """The fixed val-split list ``fsar train`` scores after every epoch (1 query per class)."""
    return episodes_path(workspace, dataset=dataset, split_set=split_set, split="val", way=way, shot=shot, query=1,
                         protocol=f"train-val{n}", seed=seed)


def checkpoints_dir(workspace: Path) -> Path:
    return workspace / "checkpoints"


def checkpoint_path(workspace: Path, dataset: str, backbone: str, matcher: str, shots: int) -> Path:
    """A learned head's best checkpoint: ``<workspace>/checkpoints/<dataset>-<backbone>-<matcher>-<shots>shot.pt``."""
    return checkpoints_dir(workspace) / f"{dataset}-{backbone}-{matcher}-{shots}shot.pt"


def finetuned_path(workspace: Path, dataset: str, backbone: str, modality: str) -> Path:
    """A fine-tuned backbone: ``<workspace>/checkpoints/<dataset>-<backbone>[-flow]-finetuned.pt``."""
    suffix = "-flow" if modality == "flow" else ""
    return checkpoints_dir(workspace) / f"{dataset}-{backbone}{suffix}-finetuned.pt"


def episodic_path(workspace: Path, dataset: str, backbone: str, matcher: str) -> Path:
    """A backbone fine-tuned with a matcher: ``<workspace>/checkpoints/<dataset>-<backbone>-episodic-<matcher>.pt``."""
    return checkpoints_dir(workspace) / f"{dataset}-{backbone}-episodic-{matcher}.pt"


def results_dir(workspace: Path) -> Path:
    """Where ``fsar eval`` writes result records and ``compare``, ``table``, ``plot`` read them."""
    return workspace / "results"


def tables_dir(workspace: Path) -> Path:
    return workspace / "tables"


def _record_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text) or "_"


def result_file_name(created: str, matcher: str, dataset: str, split: str, way: int, shot: int, protocol: str,
                     digest: str) -> str:
    """A result record's file name: ``<created>-<matcher>-<dataset>-<split>-<way>w<shot>s-<protocol>-<digest>.json``.

    ``created`` is the record's ISO time (its digits and 'T' are kept, the time zone dropped), so that
    names sort by time; ``digest`` tells apart records made in the same second.
    """
    stamp = re.sub(r"[^0-9T]", "", created.split("+")[0])
    return (f"{stamp}-{_record_slug(matcher)}-{_record_slug(dataset)}-{_record_slug(split)}-"
            f"{way}w{shot}s-{_record_slug(protocol)}-{digest}.json")


@dataclass(frozen=True)
class DemoLayout:
    """Where ``fsar demo`` puts its dataset, results, trained heads and report in a workspace."""

    workspace: Path

    @property
    def data(self) -> Path:
        return self.workspace / "data" / "synthetic"

    @property
    def results(self) -> Path:
        return results_dir(self.workspace) / "demo"

    @property
    def contact_sheet(self) -> Path:
        return tables_dir(self.workspace) / "synthetic-classes.png"

    @property
    def plot(self) -> Path:
        return tables_dir(self.workspace) / "demo-accuracy.png"

    @property
    def report(self) -> Path:
        return tables_dir(self.workspace) / "demo.md"

    def checkpoint(self, head: str, shot: int) -> Path:
        return checkpoints_dir(self.workspace) / f"demo-{head}-{shot}shot.pt"


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
