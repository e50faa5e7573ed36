"""Training input of ``fsar finetune --episodic``: the episodes' videos, decoded step by step.

A step's episodes are planned as ``fsar train`` plans them (:func:`fsar.runner.stream.plan_epoch`) over a pool of
the dataset's train videos instead of a cache's rows. Each appearance of a video draws its own augmented view,
numbered among :data:`AUGMENTATIONS` (view 0 is the test view), and is decoded as ``fsar finetune`` decodes
(:func:`fsar.extract.finetune_data.read_clip`: seeded by (seed, video, view) only, so any worker and a resumed run
read the same frames). Loader workers decode whole steps in parallel; an unreadable video comes back as None with
its reason, never as an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fsar.datasets.catalog import DatasetListing
from fsar.episodes import EpisodeList
from fsar.episodes import sample_episodes as draw_episodes
from fsar.extract.finetune_data import ClipSpec, LabelledVideo, make_loader, read_clip
from fsar.runner.stream import Draw, StepPlan, TrainPool

# Augmented views are numbered 1..AUGMENTATIONS; each appearance of a video in a step draws one at random.
AUGMENTATIONS = 1 << 30


def train_pool_of(listing: DatasetListing) -> tuple[TrainPool, dict[str, LabelledVideo]]:
    """The train split as a :class:`TrainPool` (rows: list positions, views: the augmentations) and its videos."""
    train = listing.split("train")
    ids, classes = [v.id for v in train], [v.class_name for v in train]
    pool = TrainPool.of(ids, classes, np.arange(len(ids)), range(1, AUGMENTATIONS + 1))
    return pool, {v.id: LabelledVideo(v.id, v.path, 0) for v in train}


@dataclass
class StepFrames:
    """The decoded videos of one step: query [P, Wq], support [P, Ws], batch [B] ((T, S, S, C) uint8 each, None
    where unreadable) and the reasons of the unreadable ones."""

    query: NDArray[np.object_]
    support: NDArray[np.object_]
    batch: list[Any] | None
    failures: dict[str, str]


class _StepDataset(torch.utils.data.Dataset[StepFrames]):
    """Item k: every video of step k decoded in the view it drew."""

    def __init__(self, plans: list[StepPlan], spec: ClipSpec, pool: TrainPool, videos: dict[str, LabelledVideo]
                 ) -> None:
        self.plans, self.spec, self.pool, self.videos = plans, spec, pool, videos

    def __len__(self) -> int:
        return len(self.plans)

    def _decode(self, draw: Draw, failures: dict[str, str]) -> NDArray[np.object_]:
        out = np.empty(draw.rows.shape, dtype=object)
        for at in np.ndindex(draw.rows.shape):
            video = self.videos[self.pool.ids[int(draw.rows[at])]]
            clip = read_clip(video, self.pool.views[int(draw.views[at])], self.spec)
            out[at] = clip.frames
            if clip.frames is None:
                failures[video.id] = clip.error
        return out

    def __getitem__(self, k: int) -> StepFrames:
        plan, failures = self.plans[k], dict[str, str]()
        batch = list(self._decode(plan.batch[0], failures)) if plan.batch is not None else None
        return StepFrames(self._decode(plan.query, failures), self._decode(plan.support, failures), batch, failures)


def step_frames(plans: list[StepPlan], spec: ClipSpec, pool: TrainPool, videos: dict[str, LabelledVideo],
                workers: int) -> Iterator[StepFrames]:
    """The decoded videos of each planned step, in order (``workers`` processes decode ahead)."""
    loader = torch.utils.data.DataLoader(_StepDataset(plans, spec, pool, videos), batch_size=None,
                                         num_workers=workers, prefetch_factor=2 if workers else None)
    return iter(loader)


def stack_clips(clips: list[Any]) -> torch.Tensor:
    """Decoded videos (T, S, S, C) each -> [N, T, S, S, C] uint8."""
    return torch.from_numpy(np.stack(clips))


def val_episodes(listing: DatasetListing, dataset: str, way: int, shots: int, n: int, seed: int) -> EpisodeList:
    """The fixed val list: ``n`` episodes of the val split with 1 query per class, seeded by ``seed`` (a val split
    with fewer classes than ``way`` gives episodes of all of them)."""
    val = listing.split("val")
    classes = [v.class_name for v in val]
    way = max(2, min(way, len(set(classes))))
    return draw_episodes([v.id for v in val], classes, way=way, shot=shots, query=1, n=n, seed=seed,
                         dataset=dataset, split="val")


def val_clips(listing: DatasetListing, episodes: EpisodeList, spec: ClipSpec, workers: int
              ) -> Iterator[tuple[str, torch.Tensor | None, str]]:
    """(video id, frames [T, S, S, C] uint8 or None, why not) of every video of the list, in its order, view 0."""
    by_id = {v.id: LabelledVideo(v.id, v.path, 0) for v in listing.split("val")}
    videos = [by_id[vid] for vid in episodes.ids.tolist()]
    loader = make_loader(videos, 0, spec, videos_per_batch=1, workers=workers, shuffle_seed=None, pin_memory=False)
    for video, batch in zip(videos, loader, strict=True):
        if batch.failures:
            yield video.id, None, batch.failures[0][1]
        else:
            yield video.id, batch.frames.view(spec.frames, *batch.frames.shape[1:]), ""


__all__ = ["AUGMENTATIONS", "StepFrames", "stack_clips", "step_frames", "train_pool_of", "val_clips", "val_episodes"]
