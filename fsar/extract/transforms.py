"""Spatial preprocessing of sampled frames (numpy + OpenCV, before the backbone).

* view 0 (test view): resize the short side to ``resize_short`` (default 256), centre crop
  ``crop`` x ``crop`` (default 224).
* views >= 1 (augmented): one random resized crop (area fraction ``scale``, aspect ``ratio``) and, unless
  ``flip=False``, a horizontal flip with probability 1/2 — the *same* crop and flip for every frame of
  the view, so motion stays coherent. Set ``flip=False`` for datasets whose labels say left/right
  (Something-Something v2).

Flow images (two channels, see :mod:`fsar.extract.flow`) are flipped by mirroring *and* negating the
horizontal component, which for the symmetric uint8 encoding is ``x -> 255 - x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from fsar.extract.sampling import STREAM_CROP, view_rng


@dataclass(frozen=True)
class CropConfig:
    """Spatial preprocessing parameters (recorded with the features)."""

    resize_short: int = 256
    crop: int = 224
    flip: bool = True
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def resize_short_side(frames: NDArray, size: int) -> NDArray:
    """Resize so the shorter side is ``size``. frames: (K, H, W, C) uint8 -> (K, H', W', C)."""
    h, w = frames.shape[1:3]
    if min(h, w) == size:
        return frames
    if h <= w:
        new_h, new_w = size, max(1, round(w * size / h))
    else:
        new_h, new_w = max(1, round(h * size / w)), size
    return _resize(frames, new_h, new_w)


def centre_crop(frames: NDArray, size: int) -> NDArray:
    """Central ``size`` x ``size`` window (frames smaller than ``size`` are resized up first).

    frames: (K, H, W, C) -> (K, size, size, C).
    """
    if min(frames.shape[1:3]) < size:
        frames = resize_short_side(frames, size)
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


def centre_view(frames: NDArray, config: CropConfig = CropConfig()) -> NDArray:
    """View-0 preprocessing: short-side resize + centre crop. (K, H, W, C) -> (K, crop, crop, C)."""
    return centre_crop(resize_short_side(frames, config.resize_short), config.crop)


def random_resized_crop(
    frames: NDArray, rng: np.random.Generator, config: CropConfig = CropConfig(), *, is_flow: bool = False
) -> NDArray:
    """One random resized crop (+ optional flip) applied to every frame.

    frames: (K, H, W, C) uint8, taken at their decoded size. Returns (K, crop, crop, C).
    """
    h, w = frames.shape[1:3]
    top, left, ch, cw = _crop_box(h, w, rng, config.scale, config.ratio)
    out = _resize(frames[:, top : top + ch, left : left + cw], config.crop, config.crop)
    if config.flip and rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, :, ::-1])
        if is_flow:
            out[..., 0] = 255 - out[..., 0]
    return out


def preprocess_view(
    frames: NDArray,
    *,
    view: int,
    seed: int = 0,
    video_id: str = "",
    config: CropConfig = CropConfig(),
    is_flow: bool = False,
) -> NDArray:
    """The spatial preprocessing of ``view`` (0: test view; >= 1: augmented, seeded by
    (seed, video_id, view)). frames: (K, H, W, C) uint8 -> (K, crop, crop, C) uint8."""
    if view == 0:
        return centre_view(frames, config)
    return random_resized_crop(frames, view_rng(seed, video_id, view, STREAM_CROP), config, is_flow=is_flow)


def _crop_box(
    h: int, w: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop of area fraction ``scale`` and aspect ``ratio``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top, left, ch, cw
    side = min(h, w)  # fallback: the central square
    return (h - side) // 2, (w - side) // 2, side, side


def _resize(frames: NDArray, new_h: int, new_w: int) -> NDArray:
    h, w = frames.shape[1:3]
    interp = cv2.INTER_AREA if new_h * new_w < h * w else cv2.INTER_LINEAR
    out = np.empty((frames.shape[0], new_h, new_w, frames.shape[3]), dtype=frames.dtype)
    for k, frame in enumerate(frames):
        resized = cv2.resize(np.ascontiguousarray(frame), (new_w, new_h), interpolation=interp)
        out[k] = resized.reshape(new_h, new_w, frames.shape[3])
    return out
