"""TSN sparse temporal sampling (Wang et al., "Temporal Segment Networks", ECCV 2016).

A video of ``n`` frames is cut into ``T`` equal segments; segment ``k`` covers the half-open frame
interval ``[k*n/T, (k+1)*n/T)``. One frame is taken from each segment:

* **view 0** (the deterministic test view) takes each segment's centre,
  ``index_k = floor((2k + 1) * n / (2T))``, computed in integers so no float rounding can move it.
  This is TSN's ``int(tick / 2 + tick * k)`` with ``tick = n / T``.
* **views >= 1** (augmented training views) take a uniformly random frame of each segment,
  ``index_k ~ U{floor(k*n/T), ..., max(floor((k+1)*n/T), floor(k*n/T) + 1) - 1}``, drawn from a
  :class:`numpy.random.Generator` seeded from ``(seed, video id, view)`` only, so any worker
  reproduces any view of any video.

A video shorter than ``T`` frames yields repeated indices in temporal order (the centre formula
with ``n < T``, e.g. ``n = 7, T = 8 -> [0, 1, 2, 3, 3, 4, 5, 6]``) and is flagged ``padded``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_SEGMENTS = 8

#: Independent random streams derived from one (seed, video, view): temporal sampling, spatial crop.
STREAM_SAMPLING = 0
STREAM_CROP = 1


@dataclass(frozen=True)
class SampledIndices:
    """Frame indices chosen for one view of one video.

    indices: (T,) int64, non-decreasing, each in ``[0, n_frames)``.
    padded: True when the video had fewer than T frames and indices repeat.
    """

    indices: NDArray[np.int64]
    padded: bool


def video_key(video_id: str) -> int:
    """A stable 63-bit integer for a video id (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def view_rng(seed: int, video_id: str, view: int, stream: int = STREAM_SAMPLING) -> np.random.Generator:
    """The generator for one (seed, video, view, stream); identical in every process."""
    if seed < 0 or view < 0 or stream < 0:
        raise ValueError(f"seed, view and stream must be >= 0, got {seed}, {view}, {stream}")
    return np.random.default_rng(np.random.SeedSequence([seed, video_key(video_id), view, stream]))


def segment_centres(n_frames: int, num_segments: int = DEFAULT_SEGMENTS) -> NDArray[np.int64]:
    """Centre frame of each TSN segment: ``floor((2k + 1) * n / (2T))`` for k = 0..T-1.

    Returns (T,) int64.
    """
    _check(n_frames, num_segments)
    k = np.arange(num_segments, dtype=np.int64)
    return ((2 * k + 1) * n_frames) // (2 * num_segments)


def segment_random(
    n_frames: int, rng: np.random.Generator, num_segments: int = DEFAULT_SEGMENTS
) -> NDArray[np.int64]:
    """One uniformly random frame per TSN segment. Returns (T,) int64."""
    _check(n_frames, num_segments)
    k = np.arange(num_segments, dtype=np.int64)
    start = (k * n_frames) // num_segments
    stop = np.maximum(((k + 1) * n_frames) // num_segments, start + 1)
    return rng.integers(start, stop, dtype=np.int64)


def sample_indices(
    n_frames: int,
    *,
    num_segments: int = DEFAULT_SEGMENTS,
    view: int = 0,
    seed: int = 0,
    video_id: str = "",
) -> SampledIndices:
    """TSN indices for ``view`` of a video with ``n_frames`` frames (see the module docstring).

    View 0 ignores ``seed`` and ``video_id``; views >= 1 depend on all three.
    """
    if view == 0:
        indices = segment_centres(n_frames, num_segments)
    else:
        indices = segment_random(n_frames, view_rng(seed, video_id, view, STREAM_SAMPLING), num_segments)
    return SampledIndices(indices=indices, padded=n_frames < num_segments)


def _check(n_frames: int, num_segments: int) -> None:
    if n_frames < 1:
        raise ValueError(f"a video needs at least one frame, got n_frames={n_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
