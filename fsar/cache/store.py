"""Open, create, write and read feature caches (layout in :mod:`fsar.cache.schema`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.core.sync import sync

from fsar import __version__
from fsar.cache import schema
from fsar.cache.chunks import finite_rows, read_all, read_rows
from fsar.cache.schema import CacheSpec, Status
from fsar.errors import FsarError

# Features as read: float16 (extracted caches) or float32 (imported from a float32 dump).
Features = NDArray[np.floating[Any]]


class CacheError(FsarError):
    """A cache that cannot be used as asked; the message says what to do."""


def _get(group: zarr.Group, path: str) -> Any:
    return group[path]


def _strings(values: Any) -> NDArray[np.str_]:
    """A fixed-width str array from a Zarr variable-length string array."""
    return np.asarray(list(values.tolist()), dtype=str)


def _stored_keys(zarray: Any) -> set[str]:
    """The chunk keys an array has in its store (one listing, whatever the store: local, fsspec)."""

    async def collect() -> set[str]:
        return {key async for key in zarray.store.list_prefix(f"{zarray.path}/")}

    return sync(collect())


def _shown(ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def writing(spec: CacheSpec) -> Any:
    """Zarr settings while writing: with integrity, a chunk holding only fill values is written too."""
    return zarr.config.set({"array.write_empty_chunks": spec.integrity >= 1})


class FeatureCache:
    """A feature cache opened for reading (and, with ``mode="a"``, for writing chunks).

    The video table (ids, labels, splits, class names) is read once; feature arrays are read
    on demand. Rows are positions in ``videos/id``.
    """

    def __init__(self, path: str | Path, group: zarr.Group, spec: CacheSpec, writable: bool) -> None:
        self.path = str(path)
        self.group = group
        self.spec = spec
        self.writable = writable
        self.ids: NDArray[np.str_] = _strings(read_all(_get(group, schema.VIDEO_ID)))
        self.labels: NDArray[np.int32] = np.asarray(read_all(_get(group, schema.VIDEO_LABEL)), dtype=np.int32)
        self.split_codes: NDArray[np.int8] = np.asarray(read_all(_get(group, schema.VIDEO_SPLIT)), dtype=np.int8)
        self.class_names: tuple[str, ...] = tuple(str(c) for c in read_all(_get(group, schema.CLASS_NAME)))
        self._row_of = {vid: i for i, vid in enumerate(self.ids.tolist())}
        if spec.integrity >= 1:
            for path in (schema.VIDEO_ID, schema.VIDEO_LABEL, schema.VIDEO_SPLIT, schema.CLASS_NAME):
                lost = self.missing_chunks(path, range(_get(group, path).nchunks))
                if lost:
                    raise CacheError(f"cache {self.path} is damaged: chunk(s) {lost} of {path} are missing, so "
                                     f"its video table cannot be trusted; re-extract into a new --out path")

    # -- the video table -------------------------------------------------------------------
    @property
    def n_videos(self) -> int:
        return len(self.ids)

    @property
    def splits(self) -> NDArray[np.str_]:
        return np.asarray(schema.SPLITS, dtype=str)[self.split_codes]

    def rows_of_split(self, split: str) -> NDArray[np.int64]:
        if split not in schema.SPLITS:
            raise CacheError(f"unknown split {split!r}; expected one of {schema.SPLITS}")
        return np.flatnonzero(self.split_codes == schema.SPLITS.index(split)).astype(np.int64)

    def class_of(self, rows: NDArray[np.int64]) -> NDArray[np.str_]:
        return np.asarray(self.class_names, dtype=str)[self.labels[rows]]

    def rows_for(self, ids: Sequence[str] | NDArray[np.str_]) -> NDArray[np.int64]:
        """Row of each id; a :class:`CacheError` naming the ids this cache does not hold."""
        flat = np.asarray(ids, dtype=str).ravel().tolist()
        missing = [v for v in flat if v not in self._row_of]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise CacheError(
                f"{len(set(missing))} video id(s) are not in cache {self.path} (e.g. {shown}); the episode "
                f"list was made for another dataset or split set: make a new one with `fsar episodes --cache "
                f"{self.path}`"
            )
        return np.asarray([self._row_of[v] for v in flat], dtype=np.int64).reshape(np.shape(ids))

    # -- modalities ------------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in schema.MODALITIES if schema.frames_path(m) in self.group)

    def has_patches(self, modality: str) -> bool:
        return schema.patches_path(modality) in self.group

    def require(self, modality: str, patches: bool = False) -> None:
        """Raise a :class:`CacheError` saying what to run if a modality (or its patches) is absent."""
        if modality not in self.modalities:
            raise CacheError(
                f"cache {self.path} has no {modality!r} features (it has {', '.join(self.modalities)}); "
                f"extract them with `fsar extract ... --modality {modality} --out {self.path}`"
            )
        if patches and not self.has_patches(modality):
            raise CacheError(
                f"cache {self.path} has no {modality} patch features; re-extract with `--patches 2` "
                f"(or 4) into a new cache to use spatial matchers"
            )

    def _array(self, path: str) -> Any:
        return _get(self.group, path)

    def done(self, modality: str) -> NDArray[np.bool_]:
        return np.asarray(read_all(self._array(schema.done_path(modality))), dtype=bool)

    def status(self, modality: str) -> NDArray[np.int8]:
        return np.asarray(read_all(self._array(schema.status_path(modality))), dtype=np.int8)

    def errors(self, modality: str) -> dict[str, str]:
        """Error message of each failed video, keyed by id."""
        status = self.status(modality)
        failed = np.flatnonzero(status == Status.UNREADABLE)
        if not len(failed):
            return {}
        messages = read_rows(self._array(schema.error_path(modality)), failed)
        return {str(self.ids[i]): str(m) for i, m in zip(failed, messages, strict=True)}

    def n_frames(self) -> NDArray[np.int32]:
        return np.asarray(read_all(self._array(schema.VIDEO_N_FRAMES)), dtype=np.int32)

    # -- features --------------------------------------------------------------------------
    def frames(self, modality: str, rows: NDArray[np.int64] | None = None, view: int = 0) -> Features:
        """Pooled frame features [len(rows), T, D] (all rows when ``rows`` is None), of the spec's feature_dtype."""
        self.require(modality)
        return self._read(modality, schema.frames_path(modality), rows, view)

    def patches(self, modality: str, rows: NDArray[np.int64] | None = None, view: int = 0) -> Features:
        """Patch features [len(rows), T, P, D], of the spec's feature_dtype."""
        self.require(modality, patches=True)
        return self._read(modality, schema.patches_path(modality), rows, view)

    def usable(self, modality: str) -> NDArray[np.bool_]:
        """Rows whose features were computed: committed (done) and not recorded as unreadable."""
        return self.done(modality) & (self.status(modality) != Status.UNREADABLE)

    def missing_chunks(self, path: str, chunks: Sequence[int] | range) -> list[int]:
        """Which of ``chunks`` (along the videos) of the array at ``path`` have no file in the store."""
        zarray = self._array(path)
        stored = _stored_keys(zarray)
        return [int(c) for c in chunks if schema.chunk_key(zarray, int(c)) not in stored]

    def _read(self, modality: str, path: str, rows: NDArray[np.int64] | None, view: int) -> Features:
        """Features of ``rows`` at ``path``: only rows whose features were computed, from chunks that are there
        and whose checksums hold; anything else is a :class:`CacheError` naming the videos, never fill values."""
        if not 0 <= view < self.spec.views:
            raise CacheError(f"view {view} out of range: cache {self.path} has {self.spec.views} view(s)")
        array = self._array(path)
        rows = np.arange(self.n_videos) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, *array.shape[2:]), dtype=self.spec.feature_dtype)
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        self._check_usable(modality, unique)
        chunks = np.unique(unique // self.spec.chunk_videos)
        if self.spec.integrity >= 1:
            lost = self.missing_chunks(path, chunks.tolist())
            if lost:
                raise CacheError(self._damage(path, lost, "missing"))
        try:
            block = read_rows(array, unique, view)
        except (ValueError, RuntimeError) as err:  # a failed checksum, or bytes the codec cannot decode
            raise CacheError(self._damage(path, chunks.tolist(), f"damaged ({err})")) from err
        finite = finite_rows(block)
        if not finite.all():
            bad = [str(self.ids[r]) for r in unique[~finite]]
            raise CacheError(
                f"{len(bad)} video(s) hold NaN or inf features in {path} of cache {self.path} ({_shown(bad)}), "
                f"e.g. an overflow of the backbone in fp16: extract again with --precision fp32 into a new --out "
                f"(`fsar cache verify` lists every such video)")
        out = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
        out[order] = block[inverse]
        return out

    def _check_usable(self, modality: str, rows: NDArray[np.int64]) -> None:
        bad = rows[~self.usable(modality)[rows]]
        if not len(bad):
            return
        done = self.done(modality)  # read once, not per video
        not_done = [str(self.ids[r]) for r in bad if not done[r]]
        if not_done:
            raise CacheError(
                f"{len(not_done)} video(s) asked for have no {modality} features in cache {self.path} yet "
                f"({_shown(not_done)}): its extraction is incomplete. Finish it by running the same `fsar extract` "
                f"command again (`fsar cache info` shows progress), or draw a new episode list from the videos "
                f"that are done with `fsar episodes`")
        unreadable = [str(self.ids[r]) for r in bad]
        raise CacheError(
            f"{len(unreadable)} video(s) asked for could not be read at extraction ({_shown(unreadable)}; "
            f"`fsar cache verify {self.path}` lists why): draw a new episode list with `fsar episodes`, which "
            f"leaves them out")

    def _damage(self, path: str, chunks: Sequence[int], what: str) -> str:
        c = self.spec.chunk_videos
        first = [str(self.ids[k * c]) for k in chunks]
        return (f"cache {self.path}: chunk(s) {list(chunks)} of {path} (videos from {_shown(first, 3)}) are {what}. "
                f"Run `fsar cache verify --repair {self.path}` to mark their videos not done, then the same "
                f"`fsar extract` command to compute them again")

    # -- writing ---------------------------------------------------------------------------
    def chunk_ranges(self) -> list[tuple[int, int]]:
        c = self.spec.chunk_videos
        return [(s, min(s + c, self.n_videos)) for s in range(0, self.n_videos, c)]

    def write_chunk(
        self,
        modality: str,
        start: int,
        frames: NDArray[np.floating[Any]],
        status: NDArray[np.int8],
        errors: Sequence[str],
        n_frames: NDArray[np.int32],
        patches: NDArray[np.floating[Any]] | None = None,
        done: NDArray[np.bool_] | None = None,
    ) -> None:
        """Commit one whole chunk of videos: features first, then ``done`` as the commit marker.

        frames: [n, V, T, D]; patches: [n, V, T, P, D]; n = the chunk's length; both are stored as the spec's
        ``feature_dtype`` (a value float16 cannot hold becomes inf, which reading refuses). ``start`` must be a
        chunk boundary, so that concurrent writers of other chunks never share a file. ``done``: which
        videos the commit completes (default all; a video missing from the dataset root is not done).
        """
        if not self.writable:
            raise CacheError(f"cache {self.path} was opened read-only")
        c = self.spec.chunk_videos
        stop = min(start + c, self.n_videos)
        if start % c or len(frames) != stop - start:
            raise ValueError(f"write_chunk needs a whole chunk: rows {start}:{stop}, got {len(frames)} rows")
        if self.has_patches(modality) and patches is None:
            raise ValueError(f"cache {self.path} stores patches: write_chunk needs them")
        dtype = self.spec.feature_dtype
        with writing(self.spec):
            self._array(schema.frames_path(modality))[start:stop] = np.asarray(frames, dtype=dtype)
            if self.has_patches(modality):
                self._array(schema.patches_path(modality))[start:stop] = np.asarray(patches, dtype=dtype)
            self._array(schema.status_path(modality))[start:stop] = np.asarray(status, dtype=np.int8)
            self._array(schema.error_path(modality))[start:stop] = np.asarray(list(errors), dtype=str)
            self._array(schema.VIDEO_N_FRAMES)[start:stop] = np.asarray(n_frames, dtype=np.int32)
            self._array(schema.done_path(modality))[start:stop] = (
                np.ones(stop - start, dtype=bool) if done is None else np.asarray(done, dtype=bool))

    def mark_not_done(self, modality: str, rows: Sequence[int]) -> None:
        """Clear ``done`` of ``rows`` (damaged features): the next extraction run computes their chunks again."""
        if not self.writable:
            raise CacheError(f"cache {self.path} was opened read-only")
        done = self._array(schema.done_path(modality))
        with writing(self.spec):
            for row in sorted(set(int(r) for r in rows)):
                done[row] = False

    def content_hash(self) -> str:
        """sha256 of what identifies the features: the spec, the video table and, per modality, which rows hold
        computed features (a partial cache is not the complete one). Not the values themselves."""
        h = hashlib.sha256(self.spec.identity_json().encode())
        h.update("\n".join(self.ids.tolist()).encode())
        h.update(self.labels.tobytes())
        h.update(self.split_codes.tobytes())
        h.update("\n".join(self.class_names).encode())
        for modality in self.modalities:
            h.update(modality.encode())
            h.update(np.packbits(self.usable(modality)).tobytes())
        return h.hexdigest()


def is_url(path: str | Path) -> bool:
    """Whether ``path`` names an fsspec store (s3://, gs://, memory://, ...) rather than a local path."""
    return "://" in str(path)


def store_exists(path: str | Path) -> bool:
    """Whether a Zarr group exists at a local path or an fsspec URL."""
    if not is_url(path):
        return Path(path).exists()
    try:
        zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return True


def _open_group(path: str | Path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode=mode)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise CacheError(
            f"no feature cache at {path}; create one with `fsar extract --dataset NAME --out {path}`"
        ) from err


def _read_spec(group: zarr.Group, path: str | Path) -> CacheSpec:
    raw = group.attrs.get(schema.ATTRS_KEY)
    if not isinstance(raw, dict):
        raise CacheError(f"{path} is a Zarr store but not an fsar feature cache (no '{schema.ATTRS_KEY}' attrs); if "
                         f"it is a cache whose creation an older fsar was interrupted in, delete it and run again")
    version = raw.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise CacheError(
            f"cache {path} has schema version {version}, this fsar (version {__version__}) reads version "
            f"{schema.SCHEMA_VERSION}: re-extract it with this fsar, or use the fsar release that wrote it"
        )
    return CacheSpec.from_json(raw)


def open_cache(path: str | Path, mode: str = "r") -> FeatureCache:
    """Open an existing cache; ``mode="a"`` allows :meth:`FeatureCache.write_chunk`."""
    if mode not in ("r", "a"):
        raise ValueError("mode must be 'r' or 'a'")
    if not store_exists(path):
        raise CacheError(f"no feature cache at {path}; create one with `fsar extract --dataset NAME --out {path}`")
    group = _open_group(path, "r" if mode == "r" else "r+")
    return FeatureCache(path, group, _read_spec(group, path), writable=mode == "a")


def shard_ranges(cache: FeatureCache, index: int, count: int) -> list[tuple[int, int]]:
    """The chunk-aligned row ranges owned by shard ``index`` of ``count`` (contiguous blocks of chunks)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    chunks = cache.chunk_ranges()
    bounds = np.linspace(0, len(chunks), count + 1).round().astype(int)
    return chunks[bounds[index] : bounds[index + 1]]
