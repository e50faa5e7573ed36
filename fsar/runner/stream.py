"""The training data of learned heads: which videos each step uses, and their features.

A step's videos and views are drawn from seeded generators before any feature is read (:func:`plan_epoch`), so
they are known in advance and are the same whether the features are held in memory or streamed. A small train
split is read into memory once (:class:`MemoryFeatures`); a large one (SSv2-full at 4x4 patches of 2,048-d
features is ~35 GB of float16) is read from the cache a window of steps at a time (:class:`StreamedFeatures`).
Either way a background thread (:func:`prefetched`) prepares the next steps while the optimiser runs, and at
most two windows of steps are held at once, so memory is bounded by the window, not by the split.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from fsar.cache import schema
from fsar.cache.chunks import ChunkReader, finite_rows, read_rows
from fsar.cache.store import CacheError, FeatureCache
from fsar.episodes import sample_episodes as draw_episodes
from fsar.episodes.pool import split_pool
from fsar.runner.features import center_in_time

if TYPE_CHECKING:
    from fsar.runner.train import TrainConfig

# Train splits up to this size (float16, every trained view and modality) are read into memory once. Reading
# the split sequentially costs less than streaming it, which reads each video (every view; in caches made
# before sharding, its whole chunk of chunk_videos videos) each time it is used; and 1 GiB leaves the 4 GB
# memory goal room for the heads and optimisers.
IN_MEMORY_BYTES = 1 << 30
# A window of prefetched steps holds at most about this many bytes of inputs, counted as float32 (a float16
# cache's half that; at least one step, at most MAX_WINDOW): enough steps that reading overlaps several
# optimiser steps, few enough to bound memory.
WINDOW_BYTES = 256 << 20
MAX_WINDOW = 16

Videos = dict[str, torch.Tensor]  # modality -> [..., T, (P,) D] in the cache's dtype


@dataclass(frozen=True)
class TrainPool:
    """The usable train-split videos: ids, class names, cache rows, and the cache views trained on."""

    ids: list[str]
    classes: list[str]
    rows: NDArray[np.int64]
    views: Sequence[int]
    index: dict[str, int]
    members: dict[str, NDArray[np.int64]]  # class name -> its pool positions, in sorted class order

    @property
    def n_views(self) -> int:
        return len(self.views)

    @classmethod
    def of(cls, ids: list[str], classes: list[str], rows: NDArray[np.int64], views: Sequence[int]) -> TrainPool:
        """The pool of ``ids`` (with their classes and rows), its index by id and each class's members."""
        class_of = np.asarray(classes)
        members = {c: np.flatnonzero(class_of == c) for c in sorted(set(classes))}
        return cls(ids, classes, rows, views, {v: i for i, v in enumerate(ids)}, members)


def train_pool(cache: FeatureCache, modality: str) -> TrainPool:
    """The train split's usable videos; views 1.. (the augmented ones) when the cache has them, else view 0."""
    ids, classes, _ = split_pool(cache, "train", modality)
    views = tuple(range(1, cache.spec.views)) if cache.spec.views > 1 else (0,)
    return TrainPool.of(ids, classes, cache.rows_for(ids), views)


class Draw(NamedTuple):
    """Videos (pool positions, any shape) and the view of each (an index into :attr:`TrainPool.views`)."""

    rows: NDArray[np.int64]
    views: NDArray[np.int64]


class StepPlan(NamedTuple):
    query: Draw  # [per_step, way * query]
    support: Draw  # [per_step, way * shot]
    names: NDArray[np.str_]  # [per_step, way] class names in label order
    batch: tuple[Draw, torch.Tensor, list[str]] | None  # a balanced batch: videos, labels, class of each label


class Step(NamedTuple):
    query: Videos
    support: Videos
    names: NDArray[np.str_]
    batch: tuple[Videos, torch.Tensor, list[str]] | None


def _draw(rows: NDArray[np.int64], rng: np.random.Generator, n_views: int) -> Draw:
    return Draw(rows, rng.integers(0, n_views, size=rows.shape))


def plan_epoch(pool: TrainPool, config: TrainConfig, epoch: int, per_step: int,
               balanced: tuple[int, int] | None) -> Iterator[StepPlan]:
    """Each step's episodes, drawn with a seed of (seed, epoch), one random view per video, and the balanced
    batch (``(classes, per_class)``) of heads that train on one, from a generator of its own."""
    seed = int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0])
    episodes = draw_episodes(pool.ids, pool.classes, way=config.way, shot=config.shots, query=config.query,
                             n=config.episodes_per_epoch, seed=seed, split="train")
    at = np.array([pool.index[i] for i in episodes.ids.tolist()], dtype=np.int64)
    rng = np.random.default_rng([config.seed, epoch, 1])
    batch_rng = np.random.default_rng([config.seed, epoch, 2])
    for start in range(0, episodes.n_episodes - per_step + 1, per_step):
        chunk = episodes.slice(start, start + per_step)
        query = _draw(at[chunk.query_idx.reshape(per_step, -1)], rng, pool.n_views)
        support = _draw(at[chunk.support_idx.reshape(per_step, -1)], rng, pool.n_views)
        batch = balanced_draw(pool, batch_rng, *balanced) if balanced is not None else None
        yield StepPlan(query, support, chunk.class_names, batch)


def take_episodes(plans: Iterable[StepPlan], part: slice) -> Iterator[StepPlan]:
    """Episodes ``part`` of every step: one rank's share under torchrun. The balanced batch is not split: every
    rank reads it whole (its loss is not a mean over episodes)."""
    for p in plans:
        yield StepPlan(Draw(p.query.rows[part], p.query.views[part]), Draw(p.support.rows[part], p.support.views[part]),
                       p.names[part], p.batch)


def balanced_draw(pool: TrainPool, rng: np.random.Generator, classes: int, per_class: int
                  ) -> tuple[Draw, torch.Tensor, list[str]]:
    """``classes`` x ``per_class`` videos (distinct where the class has enough), one random view each.

    Returns (the videos [B], labels [B] in 0..C-1, the name of each label's class [C]).
    """
    names = list(pool.members)
    picked = rng.choice(len(names), size=min(classes, len(names)), replace=False)
    rows, labels = [], []
    for k, c in enumerate(picked):
        members = pool.members[names[c]]
        rows.append(rng.choice(members, size=per_class, replace=len(members) < per_class))
        labels += [k] * per_class
    return _draw(np.concatenate(rows), rng, pool.n_views), torch.tensor(labels), [names[c] for c in picked]


class TrainFeatures(Protocol):
    def gather(self, draws: Sequence[Draw]) -> list[Videos]:
        """The features of each draw, [*draw.rows.shape, T, (P,) D] per modality, in the cache's dtype."""
        ...


def video_shape(cache: FeatureCache, patches: bool) -> tuple[int, ...]:
    """[T, D] or [T, P, D]: one view of one video."""
    return schema.feature_shapes(cache.spec, 1)["patches" if patches else "frames"].shape[2:]


def split_bytes(cache: FeatureCache, pool: TrainPool, modalities: Sequence[str], patches: bool) -> int:
    """Bytes of the train split's trained views as stored: what :class:`MemoryFeatures` holds."""
    itemsize = np.dtype(cache.spec.feature_dtype).itemsize
    return len(pool.ids) * pool.n_views * math.prod(video_shape(cache, patches)) * itemsize * len(modalities)


class MemoryFeatures:
    """The train split's features of every trained view, read once: modality -> [N, V, T, (P,) D] as stored."""

    def __init__(self, cache: FeatureCache, pool: TrainPool, modalities: Sequence[str], patches: bool,
                 center: bool) -> None:
        self.features = {m: _read_split(cache, pool, m, patches, center and m == "rgb") for m in modalities}

    def gather(self, draws: Sequence[Draw]) -> list[Videos]:
        # The same view of a video for every modality: RGB and flow of one clip stay paired.
        return [{m: _tensor(f[d.rows, d.views]) for m, f in self.features.items()} for d in draws]


def _tensor(features: NDArray[Any]) -> torch.Tensor:
    """Features as stored, as a tensor: the training loop converts them to float32 (torch converts float16 several
    times faster than numpy), and the prefetch thread never runs a torch operator, whose thread pool would
    compete with the training step's for the same cores."""
    return torch.from_numpy(np.ascontiguousarray(features))


def _read_split(cache: FeatureCache, pool: TrainPool, modality: str, patches: bool, center: bool) -> NDArray[Any]:
    """[N, V, ...] read in blocks of rows, so that the read never holds a second copy of the whole split."""
    cache.require(modality, patches=patches)
    read = cache.patches if patches else cache.frames
    out = np.empty((len(pool.rows), pool.n_views, *video_shape(cache, patches)), dtype=cache.spec.feature_dtype)
    block = max(cache.spec.chunk_videos, -(-len(pool.rows) // 8))
    for k, view in enumerate(pool.views):
        for lo in range(0, len(pool.rows), block):
            part = read(modality, pool.rows[lo:lo + block], view=view)
            out[lo:lo + block, k] = center_in_time(part) if center else part
    return out


class StreamedFeatures:
    """Features read from the cache for each window of steps: one read per modality of the window's videos."""

    def __init__(self, cache: FeatureCache, pool: TrainPool, modalities: Sequence[str], patches: bool,
                 center: bool) -> None:
        self.cache, self.pool, self.center = cache, pool, center
        self.paths = {m: schema.patches_path(m) if patches else schema.frames_path(m) for m in modalities}
        for m in modalities:
            _check_readable(cache, pool, m, patches)
        self.arrays: dict[str, Any] = {m: cache.group[path] for m, path in self.paths.items()}
        # Kept for the whole run (one thread reads at a time): each shard's index is read once, not per window.
        self.readers = {m: ChunkReader.of(a) for m, a in self.arrays.items()}

    def gather(self, draws: Sequence[Draw]) -> list[Videos]:
        rows = np.concatenate([d.rows.ravel() for d in draws])
        views = np.concatenate([d.views.ravel() for d in draws])
        unique_rows, row_at = np.unique(rows, return_inverse=True)
        unique_views, view_at = np.unique(views, return_inverse=True)
        cache_rows = self.pool.rows[unique_rows]
        cache_views = np.asarray(self.pool.views, dtype=np.int64)[unique_views]
        blocks = {m: self._read(m, cache_rows, cache_views) for m in self.arrays}
        out, at = [], 0
        for d in draws:
            r = row_at[at:at + d.rows.size].reshape(d.rows.shape)
            v = view_at[at:at + d.rows.size].reshape(d.rows.shape)
            out.append({m: _tensor(b[r, v]) for m, b in blocks.items()})
            at += d.rows.size
        return out

    def _read(self, modality: str, rows: NDArray[np.int64], views: NDArray[np.int64]) -> NDArray[Any]:
        """[len(rows), len(views), ...] as stored; each video (or unsharded chunk) decoded once for the window."""
        try:
            reader = self.readers[modality]
            block = read_rows(self.arrays[modality], rows, views) if reader is None else reader.rows(rows, views)
        except (ValueError, RuntimeError) as err:  # a failed checksum, or bytes the codec cannot decode
            chunks = np.unique(rows // self.cache.spec.chunk_videos).tolist()
            raise CacheError(f"cache {self.cache.path}: a chunk of {self.paths[modality]} among chunks {chunks} is "
                             f"damaged ({err}). Run `fsar cache verify --repair {self.cache.path}`, then the same "
                             f"`fsar extract` command to compute its videos again") from err
        finite = finite_rows(block)
        if not finite.all():  # what the cache's own read refuses: reading it names the videos
            self._cache_read(modality, rows[~finite], int(views[0]))
        if self.center and modality == "rgb":
            block = center_in_time(block.reshape(-1, *block.shape[2:])).reshape(block.shape)
        return block

    def _cache_read(self, modality: str, rows: NDArray[np.int64], view: int) -> None:
        read = self.cache.patches if self.paths[modality].endswith("patches") else self.cache.frames
        read(modality, rows, view=view)
        raise CacheError(f"cache {self.cache.path}: {self.paths[modality]} cannot be read for training")


def _check_readable(cache: FeatureCache, pool: TrainPool, modality: str, patches: bool) -> None:
    """Once, before training: every video computed and every chunk there. The cache's own read names the
    videos and says what to run, so a failing subset is read through it to raise that error."""
    cache.require(modality, patches=patches)
    read = cache.patches if patches else cache.frames
    usable = cache.usable(modality)[pool.rows]
    if not usable.all():
        read(modality, pool.rows[~usable], view=pool.views[0])
    if cache.spec.integrity >= 1:
        path = schema.patches_path(modality) if patches else schema.frames_path(modality)
        chunk_of = pool.rows // cache.spec.chunk_videos
        lost = cache.missing_chunks(path, np.unique(chunk_of).tolist())
        if lost:
            read(modality, pool.rows[np.isin(chunk_of, lost)], view=pool.views[0])
            raise CacheError(f"cache {cache.path}: chunk(s) {lost} of {path} are missing")


def open_features(cache: FeatureCache, pool: TrainPool, modalities: Sequence[str], patches: bool, center: bool,
                  stream: bool | None = None) -> MemoryFeatures | StreamedFeatures:
    """Streamed when ``stream``, or (None) when the split is larger than :data:`IN_MEMORY_BYTES`."""
    if stream is None:
        stream = split_bytes(cache, pool, modalities, patches) > IN_MEMORY_BYTES
    kind = StreamedFeatures if stream else MemoryFeatures
    return kind(cache, pool, modalities, patches, center)


def window_steps(step_videos: int, video_bytes: int) -> int:
    """Steps per prefetch window: about WINDOW_BYTES of inputs counted as float32, 1..MAX_WINDOW steps."""
    return max(1, min(MAX_WINDOW, WINDOW_BYTES // max(1, step_videos * video_bytes)))


def _fetch(features: TrainFeatures, plans: list[StepPlan]) -> list[Step]:
    """The steps of a window, their features read together (a chunk shared by two steps is decoded once)."""
    draws: list[Draw] = []
    for p in plans:
        draws += [p.query, p.support] + ([p.batch[0]] if p.batch is not None else [])
    videos = iter(features.gather(draws))
    steps = []
    for p in plans:
        query, support = next(videos), next(videos)
        batch = (next(videos), p.batch[1], p.batch[2]) if p.batch is not None else None
        steps.append(Step(query, support, p.names, batch))
    return steps


_END = object()


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has stopped (then False): the worker never blocks on a full queue forever."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetched(plans: Iterable[StepPlan], features: TrainFeatures, window: int) -> Iterator[Step]:
    """The steps of ``plans`` with their features, read ``window`` steps at a time by a background thread.

    The queue holds one window while the thread reads the next, so at most two windows are in memory. An error
    while reading is raised here; leaving the loop early stops the thread.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=window)
    stop = threading.Event()

    def work() -> None:
        try:
            steps = iter(plans)
            while group := list(itertools.islice(steps, window)):
                for step in _fetch(features, group):
                    if not _put(q, step, stop):
                        return
        except BaseException as err:  # handed to the training loop, which raises it
            _put(q, err, stop)
            return
        _put(q, _END, stop)

    thread = threading.Thread(target=work, name="fsar-train-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
