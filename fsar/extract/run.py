"""The extraction run: dataset videos -> backbone features -> a Zarr cache, resumable and sharded.

DataLoader workers decode and preprocess videos (a few per task) while the backbone runs on the previous
ones, and hand their frames over through shared memory (:mod:`fsar.extract.ring`); frames of several
videos are batched into one backbone call. A chunk of ``chunk_videos`` videos is
committed at once (features, then ``done``) by a writer thread while the backbone works on the next
chunk, so a killed run loses at most the chunks in flight and the same command resumes where it
stopped; an interrupted run (Ctrl-C, an error) still commits the chunks it has computed. Unreadable
videos are recorded with their reason.

Scale-out: ``--shard i/n`` or ``torchrun`` (RANK/WORLD_SIZE) give each process a chunk-aligned slice
of the store; shard 0 creates the store and the others wait for it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from fsar import __version__
from fsar import _heap as heap
from fsar._device import resolve_device
from fsar._platform import usable_cores
from fsar.cache.create import create_cache
from fsar.cache.lock import write_lock
from fsar.cache.schema import CacheSpec, Status
from fsar.cache.store import CacheError, FeatureCache, open_cache, shard_ranges, store_exists
from fsar.datasets.catalog import DatasetListing, VideoEntry, load_dataset
from fsar.errors import FsarError
from fsar.extract.backbone import Backbone, load_backbone, precision_name
from fsar.extract.flow import FlowMethod
from fsar.extract.ring import FrameRing, Layout, slot_bytes
from fsar.extract.ring import available as ring_available
from fsar.extract.rows import TableRow, missing_item, pending_chunks, table_rows
from fsar.extract.source import SourceConfig, VideoItem, load_video
from fsar.extract.transforms import CropConfig

# Datasets whose labels say left/right: augmented views must not flip them.
NO_FLIP = frozenset({"ssv2", "synthetic"})


class ExtractError(FsarError):
    """An extraction that cannot start (weights, backbone, options); the message says what to do."""


@dataclass(frozen=True)
class ExtractConfig:
    """Everything ``fsar extract`` needs; the defaults are the literature's (ResNet-50, T=8, 224)."""

    dataset: str
    root: Path
    backbone: str = "resnet50"
    weights: str = "imagenet"
    modalities: tuple[str, ...] = ("rgb",)
    frames: int = 8
    views: int = 1
    patches: int = 0
    short_side: int = 256
    input_size: int = 224
    flow_method: FlowMethod = "farneback"
    flow_root: Path | None = None
    split_set: str | None = None
    split_dir: Path | None = None
    splits: tuple[str, ...] = ("train", "val", "test")
    device: str = "auto"
    precision: str = "auto"
    workers: int | Literal["auto"] = "auto"  # decoding processes; see resolve_workers
    batch_frames: int = 64
    seed: int = 0
    shard: tuple[int, int] = (0, 1)
    chunk_videos: int = 16


@dataclass
class ExtractSummary:
    out: str
    extracted: int = 0
    skipped_done: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    padded: int = 0
    seconds: float = 0.0
    missing: int = 0
    #: seconds from the start of the run at which each chunk was committed (the run's throughput over time)
    committed_s: list[float] = field(default_factory=list)


#: Decoding processes of ``workers="auto"`` on a CPU: two overlap decoding with the backbone, and as the
#: backbone's threads use every core, more decoders only take cores from it.
CPU_WORKERS = 2
#: Videos a decoding worker decodes per DataLoader task: receiving a task costs the main process about 0.5 ms
#: of CPU whatever its size, so tasks of 4 videos halve what receiving a video costs it.
TASK_VIDEOS = 4
#: The most decoding processes ``auto`` starts per GPU: at about 15 ms per 224 px video, 16 decoders feed ~8,500
#: frames/s, more than one GPU runs ResNet-50 at.
MAX_GPU_WORKERS = 16


def resolve_workers(workers: int | Literal["auto"], device: torch.device) -> int:
    """The decoding processes to start. ``auto``: on CUDA, the CPU cores this process may use, shared among the
    processes of this machine (torchrun's LOCAL_WORLD_SIZE), less one for the process itself, between 1 and
    :data:`MAX_GPU_WORKERS`; on a CPU :data:`CPU_WORKERS`."""
    if workers != "auto":
        return workers
    if device.type != "cuda":
        return CPU_WORKERS
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_GPU_WORKERS, usable_cores() // local - 1))


def torchrun_shard() -> tuple[int, int] | None:
    """(rank, world size) when launched by torchrun, else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def _videos(config: ExtractConfig) -> tuple[DatasetListing, list[TableRow]]:
    listing = load_dataset(config.dataset, config.root, split_set=config.split_set, split_dir=config.split_dir)
    return listing, table_rows(listing, config.splits)


def _spec(config: ExtractConfig, listing: DatasetListing, backbones: dict[str, Backbone]) -> CacheSpec:
    first = next(iter(backbones.values()))
    rgb = backbones.get("rgb", first)
    return CacheSpec(
        dataset=config.dataset, backbone=config.backbone, weights=str(config.weights),
        weights_sha256=first.weights_sha256 or "none", feature_dim=first.feature_dim, frames=config.frames,
        views=config.views, patches=config.patches, modalities=config.modalities, input_size=config.input_size,
        short_side=config.short_side, mean=rgb.preprocessing.mean, std=rgb.preprocessing.std,
        sampling="tsn-segment-centres" + ("+random-views" if config.views > 1 else ""),
        flow_method=("files" if config.flow_root else config.flow_method) if "flow" in config.modalities else "",
        split_set=listing.split_set, chunk_videos=config.chunk_videos, fsar_version=__version__,
        precision=precision_name(config.precision, rgb.device),  # type: ignore[arg-type]
    )


def _open_store(out: str | Path, spec: CacheSpec, rows: list[TableRow], listing: DatasetListing,
                shard: tuple[int, int], wait_s: float = 600.0) -> FeatureCache:
    ids = [r.id for r in rows]
    labels = [listing.class_to_index[r.class_name] for r in rows]
    splits = [r.split for r in rows]
    if shard[0] == 0:
        return create_cache(out, spec, ids, labels, splits, listing.class_names)
    # Other shards wait until the store opens as a cache: its directory appears before shard 0 has
    # written the attributes, so existence alone is no sign that it is ready.
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            open_cache(out)
            return create_cache(out, spec, ids, labels, splits, listing.class_names)
        except CacheError:
            time.sleep(2.0)
    raise CacheError(f"shard {shard[0]}/{shard[1]}: shard 0 did not create {out} within {wait_s:.0f} s")


class _Source(torch.utils.data.Dataset[tuple[VideoItem, Layout | None]]):
    """Item ``i``: the video decoded by a worker, its frames in ``ring`` (see :class:`FrameRing.put`)."""

    def __init__(self, jobs: list[tuple[int, VideoEntry]], config: SourceConfig, ring: FrameRing | None) -> None:
        self.jobs, self.config, self.ring = jobs, config, ring

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[VideoItem, Layout | None]:
        row, entry = self.jobs[i]
        item = load_video(row, entry.id, entry.path, self.config)
        return self.ring.put(i, item) if self.ring is not None else (item, None)


def decoded_videos(jobs: list[tuple[int, VideoEntry]], config: SourceConfig, workers: int, ahead: int, *,
                   ring: bool = True) -> Iterator[VideoItem]:
    """Decoded videos in order; with workers, about ``ahead`` videos are decoded while the backbone runs, and
    their frames come through a :class:`FrameRing` where the platform has one (``ring=False``: pickled through
    the DataLoader's pipes, as a plain DataLoader sends them). A worker decodes :data:`TASK_VIDEOS` videos per
    task."""
    if workers == 0:
        for row, entry in jobs:
            yield load_video(row, entry.id, entry.path, config)
        return
    prefetch = max(2, -(-ahead // (workers * TASK_VIDEOS)))  # tasks in flight per worker
    # Besides the task being handed over, at most prefetch x workers are in flight: with slots for all of them
    # no worker waits for one (see FrameRing).
    slots = (prefetch * workers + 1) * TASK_VIDEOS + 1
    shared = FrameRing(slots, slot_bytes(config)) if ring and ring_available() else None
    heap.trim()  # the workers fork below: share no free blocks with them (see fsar._heap)
    loader = torch.utils.data.DataLoader(_Source(jobs, config, shared), batch_size=TASK_VIDEOS, shuffle=False,
                                         collate_fn=_as_list, num_workers=workers, prefetch_factor=prefetch,
                                         persistent_workers=False,
                                         multiprocessing_context="fork" if shared is not None else None)
    index = 0
    for task in loader:
        for item, layout in task:
            yield shared.take(index, item, layout) if shared is not None else item
            index += 1


def _as_list(task: list[tuple[VideoItem, Layout | None]]) -> list[tuple[VideoItem, Layout | None]]:
    return task


def _features(backbone: Backbone, items: list[VideoItem], modality: str, spec: CacheSpec, config: ExtractConfig
              ) -> Callable[[], tuple[np.ndarray, np.ndarray | None]]:
    """Run the backbone on the items' frames; returns the call that collects the features, [n, V, T, D] (and
    [n, V, T, P, D]) with zeros for failed videos. On CUDA the backbone's work is only queued here and that call
    waits for it: made by the writer thread, it lets the GPU run while this process prepares the next chunk."""
    n, v, t, d = len(items), spec.views, spec.frames, spec.feature_dim
    ok = [i for i, item in enumerate(items) if modality in item.inputs]
    queued = None
    if ok:
        batch = np.concatenate([items[i].inputs[modality].reshape(v * t, *items[i].inputs[modality].shape[2:])
                                for i in ok])
        queued = backbone.features(batch, patches=spec.patches or None, batch_size=config.batch_frames,
                                   precision=config.precision)  # type: ignore[arg-type]

    def collect() -> tuple[np.ndarray, np.ndarray | None]:
        frames = np.zeros((n, v, t, d), np.float32)
        patches = np.zeros((n, v, t, spec.patches**2, d), np.float32) if spec.patches else None
        if queued is not None:
            pooled, grid = queued
            frames[ok] = pooled.cpu().numpy().reshape(len(ok), v, t, d)
            if patches is not None and grid is not None:
                patches[ok] = grid.cpu().numpy().reshape(len(ok), v, t, spec.patches**2, d)
        return frames, patches

    return collect


def _chunk_writes(cache: FeatureCache, start: int, items: list[VideoItem], backbones: dict[str, Backbone],
                  modalities: list[str], config: ExtractConfig) -> Callable[[], None]:
    """Run the backbone on one chunk's videos; returns the call that commits the chunk."""
    status = np.array([item.status for item in items], np.int8)
    errors = [item.error for item in items]
    n_frames = np.array([item.n_frames for item in items], np.int32)
    features = {m: _features(backbones[m], items, m, cache.spec, config) for m in modalities}

    def commit() -> None:
        for m, collect in features.items():
            frames, patches = collect()
            cache.write_chunk(m, start, frames, status, errors, n_frames, patches, done=status != Status.MISSING)

    return commit


class _Writer:
    """Commits chunks on one background thread, in order; at most ``depth`` chunks wait to be written.

    A chunk counts (summary, progress bar) once it is committed. :meth:`close` waits for every
    submitted chunk and re-raises the first write error.
    """

    def __init__(self, summary: ExtractSummary, bar: tqdm, started: float, depth: int = 2) -> None:
        self.summary, self.bar, self.started, self.depth = summary, bar, started, depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsar-write")
        self._pending: deque[tuple[Future[float], list[VideoItem]]] = deque()

    def submit(self, commit: Callable[[], None], items: list[VideoItem]) -> None:
        while len(self._pending) >= self.depth:
            self._finish_one()

        def timed_commit() -> float:
            commit()
            return time.perf_counter()

        self._pending.append((self._pool.submit(timed_commit), items))

    def _finish_one(self) -> None:
        future, items = self._pending.popleft()
        self.summary.committed_s.append(future.result() - self.started)
        _tally(self.summary, items)
        self.bar.update(len(items))

    def close(self) -> None:
        try:
            while self._pending:
                self._finish_one()
        finally:
            self._pool.shutdown(wait=True)


def run_extraction(config: ExtractConfig, out: str | Path, *, progress: bool = True) -> ExtractSummary:
    """Extract every pending chunk of this shard into ``out``; resumes what an earlier run left."""
    started = time.perf_counter()
    listing, rows = _videos(config)
    device = resolve_device(config.device)
    try:
        backbones = {m: load_backbone(config.backbone, config.weights, device, modality=m)  # type: ignore[arg-type]
                     for m in config.modalities}
    except (FileNotFoundError, ValueError) as err:
        raise ExtractError(str(err)) from err
    try:
        with contextlib.ExitStack() as held:
            # Lock an existing store before touching it; a new one is created whole (renamed into place) first.
            locked = store_exists(out)
            if locked:
                held.enter_context(write_lock(out, config.shard))
            cache = _open_store(out, _spec(config, listing, backbones), rows, listing, config.shard)
            if not locked:
                held.enter_context(write_lock(out, config.shard))
            return _extract(cache, config, rows, backbones, device, progress, started)
    except OSError as err:
        # Zarr writes several keys at once: the writes that failed beside this one would each print a traceback
        # when their futures are collected, burying the one line that says what to do.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise ExtractError(_io_error(err, out)) from err


def _io_error(err: OSError, out: str | Path) -> str:
    """One line for an operating-system error while reading or writing the store: what and what to do."""
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        todo = "choose a writable --out, or fix the folder's permissions"
    elif err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        todo = "free disk space (or raise the file-size limit)"
    else:
        todo = "fix the cause"
    return (f"cannot write cache {out}: {err.strerror or err}{where}; {todo}, then run the same command again "
            f"(chunks committed so far are kept)")


def _extract(cache: FeatureCache, config: ExtractConfig, rows: list[TableRow],
             backbones: dict[str, Backbone], device: torch.device, progress: bool, started: float
             ) -> ExtractSummary:
    """Decode, run the backbone on and commit every pending chunk of this shard of ``cache``."""
    summary = ExtractSummary(out=cache.path, missing=sum(r.video is None for r in rows))
    jobs, pending = pending_chunks(cache, config.modalities, config.shard, rows)
    present = [r for start, stop in shard_ranges(cache, *config.shard) for r in range(start, stop)
               if rows[r].video is not None]
    summary.skipped_done = len(present) - len(jobs)
    source = SourceConfig(frames=config.frames, views=config.views, modalities=config.modalities,
                          crop=CropConfig(resize_short=config.short_side, crop=config.input_size,
                                          flip=config.dataset not in NO_FLIP),
                          flow_method=config.flow_method, flow_root=config.flow_root, seed=config.seed)
    bar = tqdm(total=len(jobs), desc=f"extract {config.backbone}", unit="video", disable=not progress)
    writer = _Writer(summary, bar, started)
    try:
        # Keep a whole chunk (plus one) decoding while the backbone works on the current one.
        workers = resolve_workers(config.workers, device)
        videos = [(r, video) for r in jobs if (video := rows[r].video) is not None]
        decoded = iter(decoded_videos(videos, source, workers, ahead=config.chunk_videos + 1))
        for start, stop, mods, computed in pending:
            items = {item.row: item for item in itertools.islice(decoded, computed)}
            chunk = [items[r] if r in items else missing_item(r, rows[r]) for r in range(start, stop)]
            writer.submit(_chunk_writes(cache, start, chunk, backbones, mods, config), list(items.values()))
    finally:
        writer.close()  # what was computed is committed, also when the loop stopped on an error
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _tally(summary: ExtractSummary, items: list[VideoItem]) -> None:
    for item in items:
        summary.extracted += 1
        if item.status == Status.UNREADABLE:
            summary.failures[item.video_id] = item.error
        elif item.status == Status.PADDED:
            summary.padded += 1


def describe(summary: ExtractSummary) -> str:
    """The closing lines of ``fsar extract``: what was done and what failed."""
    rate = summary.extracted / summary.seconds if summary.seconds else 0.0
    lines = [f"extracted {summary.extracted} videos into {summary.out} in {summary.seconds:.1f} s "
             f"({rate:.1f} videos/s); {summary.skipped_done} already done"]
    if summary.padded:
        lines.append(f"{summary.padded} videos had fewer frames than segments (padded by repetition)")
    if summary.missing:
        lines.append(f"{summary.missing} videos of the split lists were not found under the dataset root: recorded as "
                     f"missing (`fsar cache missing` lists them); the same command adds them once they are there")
    if summary.failures:
        lines.append(f"{len(summary.failures)} unreadable videos (recorded in the cache; see `fsar cache verify`):")
        lines.extend(f"  {vid}: {msg}" for vid, msg in sorted(summary.failures.items())[:20])
    return "\n".join(lines)

