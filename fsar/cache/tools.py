"""Cache inspection: ``fsar cache info|verify|missing`` (HDF5 interchange is in :mod:`fsar.cache.h5`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsar.cache import schema
from fsar.cache.chunks import finite_rows, read_rows
from fsar.cache.schema import Status
from fsar.cache.store import FeatureCache, open_cache


@dataclass(frozen=True)
class ModalityReport:
    modality: str
    total: int
    done: int
    status_counts: dict[str, int]
    non_finite_videos: int
    failures: dict[str, str] = field(default_factory=dict)
    # Done videos whose stored features cannot be trusted (chunk file missing, checksum or decoding failed):
    # video id -> what is wrong.
    damaged: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyReport:
    path: str
    schema_version: int
    modalities: tuple[ModalityReport, ...]
    integrity: int = 1  # 0: a cache without chunk checksums, whose lost or damaged chunks go unnoticed

    @property
    def ok(self) -> bool:
        return all(m.done == m.total and m.non_finite_videos == 0 and not m.damaged for m in self.modalities)


def verify_cache(path: str | Path, *, repair: bool = False) -> VerifyReport:
    """Completeness, finiteness, status and integrity of every modality, reading every chunk of every done video.

    A chunk whose file is missing (caches with integrity checks write every chunk), whose checksum fails or
    that cannot be decoded makes its done videos *damaged*. ``repair``: mark damaged videos not done, so that
    the same ``fsar extract`` command computes them again. The report describes the cache before repair.
    """
    cache = open_cache(path, mode="a" if repair else "r")
    reports = []
    for modality in cache.modalities:
        done = cache.done(modality)
        status = cache.status(modality)
        damaged: dict[str, str] = {}
        non_finite = 0
        arrays = [schema.frames_path(modality)] + ([schema.patches_path(modality)] if cache.has_patches(modality)
                                                   else [])
        for array_path in arrays:
            for _rows, feats in _chunks_of_done_rows(cache, array_path, done, damaged):
                if array_path == schema.frames_path(modality):
                    non_finite += int((~finite_rows(feats)).sum())
        counts = {s.name.lower(): int((status[done] == s).sum()) for s in Status if s != Status.MISSING}
        reports.append(ModalityReport(modality, cache.n_videos, int(done.sum()), counts, non_finite,
                                      cache.errors(modality), damaged))
        if repair and damaged:
            cache.mark_not_done(modality, cache.rows_for(sorted(damaged)).tolist())
    return VerifyReport(cache.path, cache.spec.schema_version, tuple(reports), cache.spec.integrity)


def _chunks_of_done_rows(cache: FeatureCache, array_path: str, done: np.ndarray, damaged: dict[str, str]
                         ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(done rows, their features of every view) per chunk of ``array_path`` that is there and decodes; the done
    rows of any other chunk go into ``damaged`` with the reason."""
    zarray: Any = cache.group[array_path]
    lost = set(cache.missing_chunks(array_path, range(len(cache.chunk_ranges())))) if cache.spec.integrity else set()
    for k, (start, stop) in enumerate(cache.chunk_ranges()):
        rows = np.flatnonzero(done[start:stop]) + start
        if not len(rows):
            continue
        if k in lost:
            damaged.update((str(cache.ids[r]), f"chunk {k} of {array_path} is missing") for r in rows)
            continue
        try:
            block = read_rows(zarray, np.arange(start, stop))
        except (ValueError, RuntimeError) as err:  # a failed checksum, or bytes the codec cannot decode
            damaged.update((str(cache.ids[r]), f"chunk {k} of {array_path} is damaged ({err})") for r in rows)
            continue
        yield rows, block[rows - start]


def describe_cache(path: str | Path) -> str:
    """A human summary of a cache: what made it, its shape and its split sizes."""
    cache = open_cache(path)
    s = cache.spec
    patches = f"{s.patches}x{s.patches}" if s.patches else "none"
    lines = [
        f"cache      {cache.path}",
        f"dataset    {s.dataset}" + (f" ({s.split_set})" if s.split_set else ""),
        f"backbone   {s.backbone}  weights {s.weights} (sha256 {s.weights_sha256[:12]})",
        f"features   T={s.frames} D={s.feature_dim} views={s.views} patches={patches} {s.feature_dtype}",
        f"input      short side {s.short_side}, crop {s.input_size}, mean {s.mean}, std {s.std}"
        if s.preprocessing_known else f"input      unknown (imported from {s.weights})",
        f"schema     v{s.schema_version}, written by fsar {s.fsar_version} on {s.created}",
        f"precision  {s.precision or 'not recorded'}",
        "integrity  every chunk checksummed and written" if s.integrity >= 1 else
        "integrity  none: written before chunk checksums, so lost or damaged chunks cannot be detected; "
        "extract again into a new --out to get them",
    ]
    for split in schema.SPLITS:
        rows = cache.rows_of_split(split)
        n_classes = len(np.unique(cache.labels[rows])) if len(rows) else 0
        lines.append(f"{split:<10} {len(rows):>7} videos  {n_classes:>4} classes")
    for modality in cache.modalities:
        done, status = cache.done(modality), cache.status(modality)
        failed = int((status[done] == Status.UNREADABLE).sum())
        missing = int((status[~done] == Status.MISSING).sum())
        lines.append(f"{modality:<10} {int(done.sum())}/{cache.n_videos} extracted, {failed} unreadable, {missing} "
                     f"missing; by split list:")
        for split in schema.SPLITS:
            c = coverage(cache, modality, split)
            if c["listed"]:
                lines.append(f"  {split:<8} {c['extracted']:>7} extracted, {c['unreadable']} unreadable, "
                             f"{c['missing']} missing, {c['pending']} not yet extracted, of {c['listed']} listed")
    return "\n".join(lines)


def coverage(cache: FeatureCache, modality: str, split: str) -> dict[str, int]:
    """How the videos of one split list stand: extracted (features computed), unreadable (recorded failures),
    missing (not under the dataset root when last extracted), pending (not extracted yet), listed (all)."""
    rows = cache.rows_of_split(split)
    done, status = cache.done(modality)[rows], cache.status(modality)[rows]
    unreadable = int((done & (status == Status.UNREADABLE)).sum())
    missing = int((~done & (status == Status.MISSING)).sum())
    return {"listed": len(rows), "extracted": int(done.sum()) - unreadable, "unreadable": unreadable,
            "missing": missing, "pending": len(rows) - int(done.sum()) - missing}


def missing_videos(path: str | Path) -> list[tuple[str, str, str]]:
    """(split, class, id) of every video recorded as missing from the dataset root in any modality."""
    cache = open_cache(path)
    missing = np.zeros(cache.n_videos, dtype=bool)
    for modality in cache.modalities:
        missing |= ~cache.done(modality) & (cache.status(modality) == Status.MISSING)
    rows = np.flatnonzero(missing)
    return list(zip(cache.splits[rows].tolist(), cache.class_of(rows).tolist(), cache.ids[rows].tolist(),
                    strict=True))
