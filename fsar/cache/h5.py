"""HDF5 interchange: ``fsar cache export-h5|import-h5``.

The layout is the one published FSAR feature dumps use: features ``[N, T, D]`` and labels ``[N]``, plus
video ids ``[N]``, class names ``[C]`` and splits ``[N]`` so that nothing is lost in a round trip. Dumps
name these datasets in several ways (:data:`DATASET_NAMES`); export writes the first name of each.

Import keeps the dump's numbers: float32 features stay float32 (float16 ones float16, float64 ones become
float32), unless float16 is asked for, and then a value float16 cannot hold is an error, never an inf.
A dataset of the file that import does not know is an error too, never silently ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from fsar.cache import schema
from fsar.cache.chunks import finite_rows
from fsar.cache.create import create_cache
from fsar.cache.schema import CacheSpec, Status
from fsar.cache.store import CacheError, FeatureCache, open_cache

# role -> the dataset names dumps use for it; export writes the first.
DATASET_NAMES: dict[str, tuple[str, ...]] = {
    "features": ("all_feats", "features", "feats"),
    "labels": ("all_labels", "labels"),
    "ids": ("ids", "video_ids", "video_names", "names"),
    "class_names": ("class_names", "classes"),
    "splits": ("splits", "split"),
}
DTYPES = ("keep", "float16")  # what import_h5 stores: the dump's dtype, or float16 asked for


@dataclass(frozen=True)
class Imported:
    """A cache made from a dump; ``notes``: what the import changed that its user should know."""

    cache: FeatureCache
    source_dtype: str
    notes: tuple[str, ...] = ()


def export_h5(path: str | Path, out: str | Path, modality: str = "rgb", split: str | None = None,
              view: int = 0) -> int:
    """Write the extracted videos (optionally of one split) to HDF5; returns the number written."""
    cache = open_cache(path)
    ok = cache.usable(modality)
    if split is not None:
        mask = np.zeros(cache.n_videos, dtype=bool)
        mask[cache.rows_of_split(split)] = True
        ok &= mask
    rows = np.flatnonzero(ok)
    text = h5py.string_dtype()
    with h5py.File(out, "w") as f:
        f.create_dataset("all_feats", data=cache.frames(modality, rows, view=view), compression="gzip")
        f.create_dataset("all_labels", data=cache.labels[rows])
        f.create_dataset("ids", data=np.asarray(cache.ids[rows], dtype=object), dtype=text)
        f.create_dataset("splits", data=np.asarray(cache.splits[rows], dtype=object), dtype=text)
        f.create_dataset("class_names", data=np.asarray(cache.class_names, dtype=object), dtype=text)
        f.attrs["dataset"] = cache.spec.dataset
        f.attrs["backbone"] = cache.spec.backbone
        f.attrs["modality"] = modality
    return len(rows)


def import_h5(h5_path: str | Path, out: str | Path, *, dataset: str = "", split: str | None = None,
              modality: str = "rgb", chunk_videos: int = schema.DEFAULT_CHUNK_VIDEOS,
              dtype: str = "keep") -> Imported:
    """Make a cache from an HDF5 feature dump (features and labels at least; names in :data:`DATASET_NAMES`).

    Without ids the rows are named ``video_<row>``; without splits, ``split`` must say which split every
    row belongs to; without class names classes are named ``class_<label>``. ``dtype``: "keep" stores the
    dump's float16 or float32 (float64 as float32), "float16" stores float16 and refuses values beyond its
    range. The cache records its preprocessing as unknown: the dump does not say how its frames were made.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    h5_path = Path(h5_path)
    with h5py.File(h5_path, "r") as f:
        found = _datasets_by_role(f, h5_path)
        feats = np.asarray(found["features"][()])
        labels = _labels(found["labels"], h5_path)
        n = len(feats)
        ids = _strings(found["ids"], n) if "ids" in found else [f"video_{i:06d}" for i in range(n)]
        splits = _splits(found.get("splits"), split, n, h5_path)
        names = (_strings(found["class_names"]) if "class_names" in found
                 else [f"class_{c}" for c in range(int(labels.max(initial=-1)) + 1)])
        dataset = dataset or str(f.attrs.get("dataset", h5_path.stem))
        feature_name = found["features"].name.lstrip("/")
    _check_table(h5_path, feature_name, feats, labels, ids, names)
    stored, notes = _feature_dtype(h5_path, feature_name, feats, dtype)
    sha = hashlib.sha256(h5_path.read_bytes()).hexdigest()
    spec = CacheSpec(dataset=dataset, backbone="imported", weights=h5_path.name, weights_sha256=sha,
                     feature_dim=feats.shape[2], frames=feats.shape[1], modalities=(modality,),
                     input_size=0, short_side=0, mean=(), std=(), sampling="imported",
                     chunk_videos=chunk_videos, feature_dtype=stored)
    cache = create_cache(out, spec, ids, labels.tolist(), splits, names)
    for start, stop in cache.chunk_ranges():
        m = stop - start
        cache.write_chunk(modality, start, feats[start:stop, None], np.full(m, Status.OK, np.int8), [""] * m,
                          np.full(m, feats.shape[1], np.int32))
    return Imported(cache, str(feats.dtype), notes)


def _datasets_by_role(f: h5py.File, h5_path: Path) -> dict[str, h5py.Dataset]:
    """The file's datasets keyed by role; an unknown dataset name, two names for one role, or no features or
    labels is a :class:`CacheError` listing what the file holds and the names accepted."""
    held: dict[str, h5py.Dataset] = {}

    def collect(name: str, obj: Any) -> None:  # visititems stops at the first callback that returns a value
        if isinstance(obj, h5py.Dataset):
            held[name] = obj

    f.visititems(collect)
    role_of = {name: role for role, names in DATASET_NAMES.items() for name in names}
    listing = ", ".join(f"{name} {list(d.shape)} {d.dtype}" for name, d in sorted(held.items())) or "no datasets"
    accepted = "; ".join(f"{role}: {' | '.join(names)}" for role, names in DATASET_NAMES.items())
    unknown = sorted(name for name in held if name not in role_of)
    if unknown:
        raise CacheError(f"{h5_path}: dataset(s) {', '.join(unknown)} are not known to import-h5 (the file holds "
                         f"{listing}; names accepted: {accepted}); rename them in the file (h5py: f.move(old, new))")
    found: dict[str, h5py.Dataset] = {}
    for name, data in sorted(held.items()):
        role = role_of[name]
        if role in found:
            raise CacheError(f"{h5_path}: datasets {found[role].name.lstrip('/')} and {name} both name the {role}; "
                             f"keep one of them")
        found[role] = data
    absent = [role for role in ("features", "labels") if role not in found]
    if absent:
        wanted = "; ".join(f"{role}: {' | '.join(DATASET_NAMES[role])}" for role in absent)
        raise CacheError(f"{h5_path} has no {' and no '.join(absent)} dataset ({wanted}); the file holds {listing}. "
                         f"Expected features [N, T, D] and labels [N]")
    return found


def _strings(data: h5py.Dataset, n: int | None = None) -> list[str]:
    values = data[()]
    values = [values] * (n or 1) if np.ndim(values) == 0 else list(np.ravel(values))
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _labels(data: h5py.Dataset, h5_path: Path) -> NDArray[np.int64]:
    raw = np.asarray(data[()]).ravel()
    name = data.name.lstrip("/")
    if raw.dtype.kind not in "iuf" or (raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw))):
        raise CacheError(f"{h5_path}: {name} must hold integer class indices, got {raw.dtype} values")
    labels = raw.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise CacheError(f"{h5_path}: {name} holds a negative class index ({labels.min()})")
    return labels


def _splits(data: h5py.Dataset | None, split: str | None, n: int, h5_path: Path) -> list[str]:
    if data is not None:
        return _strings(data, n)
    if split is None:
        raise CacheError(f"{h5_path} has no splits dataset ({' | '.join(DATASET_NAMES['splits'])}): say which "
                         f"split its videos are with --split")
    return [split] * n


def _check_table(h5_path: Path, name: str, feats: NDArray[Any], labels: NDArray[np.int64], ids: list[str],
                 names: list[str]) -> None:
    """Shapes and lengths agree: features ``name`` [N, T, D], one label and id per row, a class name per label."""
    if feats.ndim != 3 or len(labels) != len(feats):
        raise CacheError(f"{h5_path}: {name} must be [N, T, D] and the labels [N]; got {list(feats.shape)} and "
                         f"{list(labels.shape)}")
    if len(ids) != len(feats):
        raise CacheError(f"{h5_path}: {len(ids)} video ids for {len(feats)} rows of {name}")
    if len(labels) and labels.max() >= len(names):
        raise CacheError(f"{h5_path}: label {labels.max()} but only {len(names)} class names")


def _feature_dtype(h5_path: Path, name: str, feats: NDArray[Any], asked: str) -> tuple[str, tuple[str, ...]]:
    """The dtype to store the dump's features as, and notes; a :class:`CacheError` for values it cannot hold."""
    if feats.dtype.kind != "f":
        raise CacheError(f"{h5_path}: {name} holds {feats.dtype} values; expected floating point features "
                         f"(float16, float32 or float64)")
    finite = finite_rows(feats)
    if not finite.all():
        bad = int((~finite).sum())
        raise CacheError(f"{h5_path}: {name} holds NaN or inf values (in {bad} video(s)); they cannot be "
                         f"evaluated: fix the dump")
    stored = "float16" if asked == "float16" or feats.dtype == np.float16 else "float32"
    notes = (f"{name} is float64: stored as float32",) if feats.dtype == np.float64 and stored == "float32" else ()
    largest = float(np.abs(feats).max(initial=0.0))
    limit = float(np.finfo(stored).max)
    if largest > limit:
        what = "import with --dtype keep to store float32" if stored == "float16" else "rescale the features"
        raise CacheError(f"{h5_path}: {name} holds values up to {largest:g}, beyond {stored}'s range (±{limit:g}): "
                         f"{what}")
    return stored, notes
