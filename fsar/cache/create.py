"""Creating a feature cache, or joining an existing one of the same setup (layout in :mod:`fsar.cache.schema`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from fsar import __version__
from fsar.cache import schema
from fsar.cache.schema import CacheSpec
from fsar.cache.store import CacheError, FeatureCache, is_url, open_cache, store_exists, writing


def create_cache(
    path: str | Path,
    spec: CacheSpec,
    ids: Sequence[str],
    labels: Sequence[int],
    splits: Sequence[str],
    class_names: Sequence[str],
) -> FeatureCache:
    """Create a cache, or open a compatible existing one and add the spec's missing modalities.

    An existing store made with another backbone, weights, preprocessing, schema version or video
    table is refused: features of two setups must never mix in one store.
    """
    ids_arr = np.asarray(list(ids), dtype=str)
    if len(set(ids_arr.tolist())) != len(ids_arr):
        raise CacheError("video ids must be unique within a cache")
    unknown = set(splits) - set(schema.SPLITS)
    if unknown:
        raise CacheError(f"unknown split name(s) {sorted(unknown)}; expected {schema.SPLITS}")
    split_codes = np.asarray([schema.SPLITS.index(s) for s in splits], dtype=np.int8)
    table = (ids_arr, np.asarray(labels, dtype=np.int32), split_codes, np.asarray(list(class_names), dtype=str))
    if store_exists(path):  # append to an existing store only if it is the same setup
        return _extend(open_cache(path, mode="a"), spec, table)
    spec = replace(spec, integrity=schema.INTEGRITY)
    if is_url(path):
        _populate(zarr.open_group(str(path), mode="w-"), spec, table)
        return open_cache(path, mode="a")
    # Made under a temporary name and renamed into place: a run killed while creating the store leaves no
    # half-made store at ``path``, so the same command starts again cleanly.
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_creations(target)
    tmp = target.with_name(f".{target.name}.creating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _populate(zarr.open_group(str(tmp), mode="w-"), spec, table)
    try:
        os.rename(tmp, target)
    except OSError:  # another process created it meanwhile: join it if it is the same setup
        shutil.rmtree(tmp, ignore_errors=True)
        if not store_exists(target):
            raise
        return _extend(open_cache(target, mode="a"), spec, table)
    return open_cache(path, mode="a")


Table = tuple[NDArray[np.str_], NDArray[np.int32], NDArray[np.int8], NDArray[np.str_]]


def _extend(existing: FeatureCache, spec: CacheSpec, table: Table) -> FeatureCache:
    """``existing`` after checking it is the same setup and adding the spec's modalities it lacks."""
    _check_compatible(existing, spec, *table[:3])
    merged = replace(existing.spec, modalities=_merged(existing, spec))
    if "flow" in spec.modalities and "flow" not in existing.modalities:
        merged = replace(merged, flow_method=spec.flow_method)  # the flow the cache now holds
    for modality in spec.modalities:
        if modality not in existing.modalities:
            _create_modality(existing.group, existing.spec, modality, existing.n_videos)
    _write_spec(existing.group, merged)
    return open_cache(existing.path, mode="a")


def _remove_abandoned_creations(target: Path) -> None:
    """Delete what creations of ``target`` killed before their rename left (their process is gone)."""
    for leftover in target.parent.glob(f".{target.name}.creating-*"):
        try:
            os.kill(int(leftover.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(leftover, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _populate(group: zarr.Group, spec: CacheSpec, table: Table) -> None:
    """Create every array of a new store and write its video table, then the attributes (last)."""
    ids_arr, labels, split_codes, names = table
    c = spec.chunk_videos
    n = len(ids_arr)
    with writing(spec):
        _new_array(group, schema.VIDEO_ID, (n,), str, (c,))[:] = ids_arr
        _new_array(group, schema.VIDEO_LABEL, (n,), "int32", (c,))[:] = np.asarray(labels)
        _new_array(group, schema.VIDEO_SPLIT, (n,), "int8", (c,))[:] = split_codes
        _new_array(group, schema.VIDEO_N_FRAMES, (n,), "int32", (c,), fill_value=0)
        _new_array(group, schema.CLASS_NAME, (len(names),), str, (max(len(names), 1),))[:] = names
    for modality in spec.modalities:
        _create_modality(group, spec, modality, n)
    _write_spec(group, spec)


def _new_array(group: zarr.Group, path: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], *,
               checksummed: bool = True, **kwargs: Any) -> Any:
    """An array of the cache's layout; ``checksummed``: its chunks carry a CRC-32C (:func:`schema.compressors`)."""
    if checksummed:
        kwargs["compressors"] = schema.compressors()
    return group.create_array(path, shape=shape, dtype=dtype, chunks=chunks, **kwargs)


def _merged(existing: FeatureCache, spec: CacheSpec) -> tuple[str, ...]:
    present = set(existing.spec.modalities) | set(spec.modalities)
    return tuple(m for m in schema.MODALITIES if m in present)


def _write_spec(group: zarr.Group, spec: CacheSpec) -> None:
    data = spec.to_json()
    data["fsar_version"] = __version__
    data["created"] = spec.created or datetime.now(UTC).isoformat(timespec="seconds")
    group.attrs[schema.ATTRS_KEY] = json.loads(json.dumps(data))


def _create_modality(group: zarr.Group, spec: CacheSpec, modality: str, n: int) -> None:
    """The arrays of one modality; checksummed when the store is (a cache keeps the integrity it was made with)."""
    c, checked = spec.chunk_videos, spec.integrity >= 1
    for kind, layout in schema.feature_shapes(spec, n).items():
        path = schema.frames_path(modality) if kind == "frames" else schema.patches_path(modality)
        _new_array(group, path, layout.shape, layout.dtype, layout.inner, shards=layout.chunks, checksummed=checked,
                   fill_value=0)
    _new_array(group, schema.done_path(modality), (n,), "bool", (c,), checksummed=checked, fill_value=False)
    _new_array(group, schema.status_path(modality), (n,), "int8", (c,), checksummed=checked, fill_value=0)
    _new_array(group, schema.error_path(modality), (n,), str, (c,), checksummed=checked, fill_value="")


def _check_compatible(
    existing: FeatureCache,
    spec: CacheSpec,
    ids: NDArray[np.str_],
    labels: NDArray[np.int32],
    split_codes: NDArray[np.int8],
) -> None:
    old, new = existing.spec.identity(), spec.identity()
    if "flow" not in existing.modalities:  # adding flow: the flow method is the new modality's own setting
        old.pop("flow_method"), new.pop("flow_method")
    # feature_dtype is in an identity only when it is not the default (schema.CacheSpec.identity)
    old.setdefault("feature_dtype", schema.FEATURE_DTYPE), new.setdefault("feature_dtype", schema.FEATURE_DTYPE)
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differing:
        detail = "; ".join(f"{k}: cache has {old.get(k)!r}, this run {new.get(k)!r}" for k in differing)
        raise CacheError(
            f"cache {existing.path} was made with other settings ({detail}); features of different setups "
            f"cannot share a store: write to a new --out path"
        )
    same_table = (
        np.array_equal(existing.ids, ids)
        and np.array_equal(existing.labels, labels)
        and np.array_equal(existing.split_codes, split_codes)
    )
    if not same_table:
        raise CacheError(
            f"cache {existing.path} lists other videos ({existing.n_videos} rows) than this run ({len(ids)}); "
            f"it was made from another dataset root or split set: write to a new --out path"
        )
