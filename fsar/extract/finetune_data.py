"""Training input of ``fsar finetune``: frames of train videos, labelled with their video's class.

Each item is one video: one frame per TSN segment and one spatial crop for all of them. Training
epochs use augmented view ``epoch + 1`` (a random frame per segment, a random resized crop and, unless
the dataset's labels say left/right, a flip), validation uses view 0 (segment centres, centre crop).
Both are seeded by (seed, video id, view) only (see :mod:`fsar.extract.sampling`), so any worker, any
number of workers and a resumed run all see the same frames. Items hold plain numpy; an unreadable
video becomes an item with an error message, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from fsar import _heap as heap
from fsar.extract.flow import FlowMethod
from fsar.extract.source import SourceConfig, load_video
from fsar.extract.transforms import CropConfig


@dataclass(frozen=True)
class ClipSpec:
    """How a video becomes training input: ``frames`` TSN segments, the crop, the modality."""

    frames: int
    crop: CropConfig
    modality: str = "rgb"
    flow_method: FlowMethod = "farneback"
    seed: int = 0

    def source(self) -> SourceConfig:
        """The extraction's per-video input settings for this clip (one modality)."""
        return SourceConfig(frames=self.frames, crop=self.crop, modalities=(self.modality,),
                            flow_method=self.flow_method, seed=self.seed)


@dataclass(frozen=True)
class LabelledVideo:
    """One video to train or validate on; ``label`` indexes the train classes."""

    id: str
    path: Path
    label: int


@dataclass
class Clip:
    """frames: (T, S, S, C) uint8, or None when the video could not be read (``error`` says why)."""

    video_id: str
    label: int
    frames: NDArray[np.uint8] | None
    error: str = ""


@dataclass
class Batch:
    """Frames of the readable videos of one loader batch, flattened over videos and segments.

    frames: (B*T, S, S, C) uint8; labels: (B*T,) int64; failures: (video id, reason) of the unreadable ones.
    """

    frames: torch.Tensor
    labels: torch.Tensor
    failures: list[tuple[str, str]]

    def pin_memory(self) -> Batch:
        """Called by the DataLoader when ``pin_memory=True``."""
        return Batch(self.frames.pin_memory(), self.labels.pin_memory(), self.failures)


def read_clip(video: LabelledVideo, view: int, spec: ClipSpec) -> Clip:
    """Decode and preprocess ``view`` of one video, as extraction does; failures are returned, not raised."""
    item = load_video(0, video.id, video.path, spec.source(), views=(view,))
    if spec.modality not in item.inputs:
        return Clip(video.id, video.label, None, item.error)
    return Clip(video.id, video.label, item.inputs[spec.modality][0])


class ClipDataset(torch.utils.data.Dataset[Clip]):
    """``view`` of every video of ``videos`` (view 0: validation, view e + 1: training epoch e)."""

    def __init__(self, videos: list[LabelledVideo], view: int, spec: ClipSpec) -> None:
        self.videos, self.view, self.spec = videos, view, spec

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> Clip:
        return read_clip(self.videos[i], self.view, self.spec)


def collate(clips: list[Clip]) -> Batch:
    """Stack the readable clips into one frame batch; every frame carries its video's label."""
    ok = [c for c in clips if c.frames is not None]
    failures = [(c.video_id, c.error) for c in clips if c.frames is None]
    if not ok:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), failures)
    frames = np.concatenate([c.frames for c in ok if c.frames is not None])
    labels = np.repeat(np.array([c.label for c in ok], np.int64), [len(c.frames) for c in ok if c.frames is not None])
    return Batch(torch.from_numpy(frames), torch.from_numpy(labels), failures)


def make_loader(
    videos: list[LabelledVideo], view: int, spec: ClipSpec, *, videos_per_batch: int, workers: int,
    shuffle_seed: int | None, pin_memory: bool,
) -> torch.utils.data.DataLoader[Clip]:
    """A loader of :class:`Batch` es; ``shuffle_seed`` None keeps the list order (validation)."""
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    if workers:
        heap.trim()  # the workers fork when the loader is iterated, right after: share no free blocks
    return torch.utils.data.DataLoader(
        ClipDataset(videos, view, spec), batch_size=videos_per_batch, shuffle=shuffle_seed is not None,
        generator=generator, num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
        prefetch_factor=4 if workers else None, persistent_workers=False,
    )
