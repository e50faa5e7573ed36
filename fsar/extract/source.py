"""Per-video input of the extraction: decode the sampled frames, make every view, compute flow.

Runs inside DataLoader workers, so it holds no torch state; each item is plain numpy. A video that
cannot be read becomes an item with ``status=UNREADABLE`` and the reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fsar.cache.schema import Status
from fsar.extract.decode import VideoFile, VideoReadError
from fsar.extract.flow import FlowMethod, flow_images, locate_flow, read_flow_files
from fsar.extract.sampling import SampledIndices, sample_indices
from fsar.extract.transforms import CropConfig, preprocess_view


@dataclass(frozen=True)
class SourceConfig:
    """How one video becomes backbone input: T segments, V views, crop, and flow."""

    frames: int = 8
    views: int = 1
    crop: CropConfig = CropConfig()
    modalities: tuple[str, ...] = ("rgb",)
    flow_method: FlowMethod = "farneback"
    flow_root: Path | None = None  # pre-extracted flow jpgs instead of computing flow
    seed: int = 0


@dataclass
class VideoItem:
    """rgb: [V, T, S, S, 3] uint8, flow: [V, T, S, S, 2] uint8 (absent when not asked or failed)."""

    row: int
    video_id: str
    status: int
    error: str
    n_frames: int
    inputs: dict[str, NDArray[np.uint8]]


def load_video(row: int, video_id: str, path: Path, config: SourceConfig,
               views: Sequence[int] | None = None) -> VideoItem:
    """Decode and preprocess one video; failures are returned, not raised.

    ``views``: which views to make, in this order (default: 0 .. ``config.views`` - 1); the inputs
    then hold ``len(views)`` views.
    """
    chosen = tuple(range(config.views)) if views is None else tuple(views)
    try:
        return _load(row, video_id, path, config, chosen)
    except VideoReadError as err:
        return VideoItem(row, video_id, int(Status.UNREADABLE), str(err), 0, {})
    except (OSError, ValueError, RuntimeError, MemoryError) as err:  # a broken file must not stop the run
        return VideoItem(row, video_id, int(Status.UNREADABLE), f"{path}: {type(err).__name__}: {err}", 0, {})


def _load(row: int, video_id: str, path: Path, config: SourceConfig, views: tuple[int, ...]) -> VideoItem:
    with VideoFile(path) as video:  # opened once: counted, then read; a missing path raises VideoReadError
        n = video.count()
        try:
            indices, decoded = _decode(video, video_id, config, views, n)
        except VideoReadError:
            # The container's frame count can overstate what decodes: count exactly and sample again.
            exact = video.count(exact=True)
            if exact == n:
                raise
            n = exact
            indices, decoded = _decode(video, video_id, config, views, n)
    return _build(row, video_id, path, config, n, dict(zip(views, indices, strict=True)), decoded,
                  any(s.padded for s in indices))


def _decode(video: VideoFile, video_id: str, config: SourceConfig, views: tuple[int, ...], n: int
            ) -> tuple[list[SampledIndices], dict[int, NDArray[np.uint8]]]:
    """The sampled indices of each view of an ``n``-frame video and the frames they need (by index)."""
    indices = [sample_indices(n, num_segments=config.frames, view=v, seed=config.seed, video_id=video_id)
               for v in views]
    wanted = np.concatenate([s.indices for s in indices])
    if "flow" in config.modalities and config.flow_root is None:
        wanted = np.concatenate([wanted, np.minimum(wanted + 1, n - 1)])
    unique = np.unique(wanted)
    frames = video.read(unique)
    return indices, {int(i): frames[k] for k, i in enumerate(unique)}


def _build(row: int, video_id: str, path: Path, config: SourceConfig, n_frames: int,
           indices: dict[int, SampledIndices], decoded: dict[int, NDArray[np.uint8]], padded: bool) -> VideoItem:
    inputs: dict[str, NDArray[np.uint8]] = {}
    views_rgb, views_flow = [], []
    for v, sampled in indices.items():
        idx = sampled.indices
        if "rgb" in config.modalities:
            raw = np.stack([decoded[int(i)] for i in idx])
            views_rgb.append(preprocess_view(raw, view=v, seed=config.seed, video_id=video_id, config=config.crop))
        if "flow" in config.modalities:
            flow = _flow(path, video_id, idx, n_frames, decoded, config)
            views_flow.append(preprocess_view(flow, view=v, seed=config.seed, video_id=video_id,
                                              config=config.crop, is_flow=True))
    if views_rgb:
        inputs["rgb"] = np.stack(views_rgb)
    if views_flow:
        inputs["flow"] = np.stack(views_flow)
    status = Status.PADDED if padded else Status.OK
    return VideoItem(row, video_id, int(status), "", n_frames, inputs)


def _flow(path: Path, video_id: str, idx: NDArray[np.int64], n_frames: int,
          decoded: dict[int, NDArray[np.uint8]], config: SourceConfig) -> NDArray[np.uint8]:
    """Flow images [T, H, W, 2] at the sampled positions (frame i -> i+1, clamped)."""
    if config.flow_root is not None:
        return read_flow_files(locate_flow(config.flow_root, video_id), idx)
    nxt = np.minimum(idx + 1, n_frames - 1)
    pairs = np.stack([np.stack([decoded[int(a)], decoded[int(b)]]) for a, b in zip(idx, nxt, strict=True)])
    return flow_images(pairs, config.flow_method, resize_short=config.crop.resize_short)
