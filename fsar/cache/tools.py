"""Cache inspection and interchange: ``fsar cache info|verify|export-h5|import-h5``.

The HDF5 layout is the one published FSAR feature dumps use: ``all_feats [N, T, D]``,
``all_labels [N]``, plus ``ids [N]``, ``class_names [C]`` and ``splits [N]`` so that nothing is lost
in a round trip. Features made elsewhere can thus be evaluated here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fsar.cache import schema
from fsar.cache.schema import CacheSpec, Status
from fsar.cache.store import CacheError, FeatureCache, create_cache, open_cache


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
            for rows, feats in _chunks_of_done_rows(cache, array_path, done, damaged):
                if array_path == schema.frames_path(modality):
                    flat = feats.astype(np.float32).reshape(len(rows), -1)
                    non_finite += int((~np.isfinite(flat).all(axis=1)).sum())
        counts = {s.name.lower(): int((status[done] == s).sum()) for s in Status if s != Status.MISSING}
        reports.append(ModalityReport(modality, cache.n_videos, int(done.sum()), counts, non_finite,
                                      cache.errors(modality), damaged))
        if repair and damaged:
            cache.mark_not_done(modality, cache.rows_for(sorted(damaged)).tolist())
    return VerifyReport(cache.path, cache.spec.schema_version, tuple(reports))


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
            block = np.asarray(zarray[start:stop])
        except (ValueError, RuntimeError) as err:  # a failed checksum, or bytes the codec cannot decode
            damaged.update((str(cache.ids[r]), f"chunk {k} of {array_path} is damaged ({err})") for r in rows)
            continue
        yield rows, block[rows - start]


def describe_cache(path: str | Path) -> str:
    """A human summary of a cache: what made it, its shape and its split sizes."""
    cache = open_cache(path)
    s = cache.spec
    lines = [
        f"cache      {cache.path}",
        f"dataset    {s.dataset}" + (f" ({s.split_set})" if s.split_set else ""),
        f"backbone   {s.backbone}  weights {s.weights} (sha256 {s.weights_sha256[:12]})",
        f"features   T={s.frames} D={s.feature_dim} views={s.views} patches={s.patches}x{s.patches}"
        if s.patches else f"features   T={s.frames} D={s.feature_dim} views={s.views} patches=none",
        f"input      short side {s.short_side}, crop {s.input_size}, mean {s.mean}, std {s.std}",
        f"schema     v{s.schema_version}, written by fsar {s.fsar_version} on {s.created}",
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


def export_h5(path: str | Path, out: str | Path, modality: str = "rgb", split: str | None = None,
              view: int = 0) -> int:
    """Write the extracted videos (optionally of one split) to HDF5; returns the number written."""
    cache = open_cache(path)
    done = cache.done(modality)
    ok = done & (cache.status(modality) != Status.UNREADABLE)
    if split is not None:
        mask = np.zeros(cache.n_videos, dtype=bool)
        mask[cache.rows_of_split(split)] = True
        ok &= mask
    rows = np.flatnonzero(ok)
    with h5py.File(out, "w") as f:
        f.create_dataset("all_feats", data=cache.frames(modality, rows, view=view), compression="gzip")
        f.create_dataset("all_labels", data=cache.labels[rows])
        f.create_dataset("ids", data=np.asarray(cache.ids[rows], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("splits", data=np.asarray(cache.splits[rows], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("class_names", data=np.asarray(cache.class_names, dtype=object),
                         dtype=h5py.string_dtype())
        f.attrs["dataset"] = cache.spec.dataset
        f.attrs["backbone"] = cache.spec.backbone
        f.attrs["modality"] = modality
    return len(rows)


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[:]]


def import_h5(h5_path: str | Path, out: str | Path, *, dataset: str = "", split: str | None = None,
              modality: str = "rgb", chunk_videos: int = schema.DEFAULT_CHUNK_VIDEOS) -> FeatureCache:
    """Make a cache from an HDF5 feature dump (``all_feats``/``all_labels`` at least).

    Without ``ids`` the rows are named ``video_<row>``; without ``splits``, ``split`` must say which
    split every row belongs to; without ``class_names`` classes are named ``class_<label>``.
    """
    with h5py.File(h5_path, "r") as f:
        for key in ("all_feats", "all_labels"):
            if key not in f:
                raise CacheError(f"{h5_path} has no '{key}' dataset; expected all_feats [N,T,D] and all_labels [N]")
        feats = np.asarray(f["all_feats"][:])
        labels = np.asarray(f["all_labels"][:], dtype=np.int64).ravel()
        n = len(feats)
        ids = _strings(f["ids"]) if "ids" in f else [f"video_{i:06d}" for i in range(n)]
        if "splits" in f:
            splits = _strings(f["splits"])
        elif split is not None:
            splits = [split] * n
        else:
            raise CacheError(f"{h5_path} has no 'splits' dataset: say which split its videos are with --split")
        names = _strings(f["class_names"]) if "class_names" in f else [
            f"class_{c}" for c in range(int(labels.max()) + 1)]
        dataset = dataset or str(f.attrs.get("dataset", Path(h5_path).stem))
    if feats.ndim != 3 or len(labels) != n:
        raise CacheError(
            f"{h5_path}: all_feats must be [N, T, D] and all_labels [N]; got {feats.shape}, {labels.shape}")
    if not np.isfinite(feats).all():
        raise CacheError(f"{h5_path}: all_feats holds NaN or inf values")
    sha = hashlib.sha256(Path(h5_path).read_bytes()).hexdigest()
    spec = CacheSpec(dataset=dataset, backbone="imported", weights=Path(h5_path).name, weights_sha256=sha,
                     feature_dim=feats.shape[2], frames=feats.shape[1], modalities=(modality,),
                     sampling="imported", chunk_videos=chunk_videos)
    cache = create_cache(out, spec, ids, labels.tolist(), splits, names)
    for start, stop in cache.chunk_ranges():
        m = stop - start
        cache.write_chunk(modality, start, feats[start:stop, None], np.zeros(m, np.int8), [""] * m,
                          np.full(m, feats.shape[1], np.int32))
    return cache
