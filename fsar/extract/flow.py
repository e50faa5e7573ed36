"""Optical flow for the sampled positions: computed with OpenCV, or read from pre-extracted jpgs.

Flow at sampled frame ``i`` is the displacement from frame ``i`` to frame ``i + 1`` (clamped at the last
frame, see :func:`fsar.extract.decode.read_frame_pairs`). It is computed on frames resized to a short
side of ``resize_short`` (default 256, as in TSN) so that pixel displacements — and the clipping bound —
mean the same for every source resolution.

Encoding (the TSN / denseflow convention): each component is clipped to ``[-bound, bound]``
(default 20 px) and mapped linearly to ``[0, 255]``: ``u8 = round((f + bound) * 255 / (2 * bound))``.
A flow image is (H, W, 2) uint8 with channel 0 = x (horizontal, positive right) and channel 1 = y
(vertical, positive down); the flow backbone takes these two channels (see
:mod:`fsar.extract.backbone`).

Pre-extracted flow layouts read by :func:`locate_flow` (flow ``k`` from 0 is the ``k``-th file in
natural order; file numbering usually starts at 1, e.g. ``flow_x_00001.jpg`` is flow 0):

* ``<root>/<video>/flow_x_00001.jpg``, ``flow_y_00001.jpg`` (TSN ``build_of.py``, mmaction denseflow);
* ``<root>/<video>/flow_x/*.jpg`` and ``<root>/<video>/flow_y/*.jpg``;
* ``<root>/flow_x/<video>/*.jpg`` and ``<root>/flow_y/<video>/*.jpg``, or ``u``/``v`` in place of
  ``flow_x``/``flow_y`` (feichtenhofer's gpu_flow TV-L1 dumps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from fsar.extract.decode import VideoReadError, natural_key
from fsar.extract.transforms import resize_short_side

FLOW_BOUND = 20.0
#: OpenCV's type stubs reject the ``None`` output arguments its flow API accepts.
_cv: Any = cv2
FlowMethod = Literal["farneback", "dis", "tvl1"]
FLOW_METHODS: tuple[str, ...] = ("farneback", "dis", "tvl1")


class FlowMethodUnavailable(RuntimeError):
    """The requested flow method needs an OpenCV build that is not installed."""


def compute_flow(prev: NDArray[np.uint8], nxt: NDArray[np.uint8], method: FlowMethod = "farneback") -> NDArray:
    """Dense flow from ``prev`` to ``nxt``.

    prev, nxt: (H, W, 3) uint8 RGB or (H, W) uint8 grey. Returns (H, W, 2) float32 (x, y) in pixels.
    """
    a, b = _grey(prev), _grey(nxt)
    if method == "farneback":
        flow = _cv.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15,
                                           iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    elif method == "dis":
        flow = _cv.DISOpticalFlow_create(_cv.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    elif method == "tvl1":
        flow = _tvl1().calc(a, b, None)
    else:
        raise ValueError(f"unknown flow method {method!r}; choose one of {FLOW_METHODS}")
    return np.asarray(flow, dtype=np.float32)


def _tvl1() -> Any:
    optflow = getattr(cv2, "optflow", None)
    if optflow is None:
        raise FlowMethodUnavailable(
            "TV-L1 flow needs OpenCV's contrib modules: pip uninstall opencv-python-headless && "
            "pip install opencv-contrib-python-headless (same version); or use method='farneback' or 'dis'"
        )
    return optflow.DualTVL1OpticalFlow_create()


def flow_to_uint8(flow: NDArray, bound: float = FLOW_BOUND) -> NDArray[np.uint8]:
    """Clip to [-bound, bound] and map linearly to [0, 255]. (..., 2) float -> (..., 2) uint8."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)


def uint8_to_flow(image: NDArray[np.uint8], bound: float = FLOW_BOUND) -> NDArray[np.float32]:
    """Inverse of :func:`flow_to_uint8` (to within half a quantisation step, bound / 255 px). (..., 2) -> float32."""
    return (image.astype(np.float32) * (2 * bound / 255.0) - bound).astype(np.float32)


def flow_images(
    pairs: NDArray[np.uint8],
    method: FlowMethod = "farneback",
    *,
    resize_short: int | None = 256,
    bound: float = FLOW_BOUND,
) -> NDArray[np.uint8]:
    """Flow images of frame pairs.

    pairs: (K, 2, H, W, 3) uint8 RGB (from :func:`fsar.extract.decode.read_frame_pairs`).
    resize_short: short side the frames are resized to before computing flow (None keeps the size).
    Returns (K, H', W', 2) uint8, ready for :mod:`fsar.extract.transforms` and the flow backbone.
    """
    if pairs.ndim != 5 or pairs.shape[1] != 2:
        raise ValueError(f"expected pairs of shape (K, 2, H, W, 3), got {pairs.shape}")
    k, _, h, w, c = pairs.shape
    frames = pairs.reshape(k * 2, h, w, c)
    if resize_short is not None:
        frames = resize_short_side(frames, resize_short)
    frames = frames.reshape(k, 2, *frames.shape[1:])
    return np.stack([flow_to_uint8(compute_flow(p[0], p[1], method), bound) for p in frames])


@dataclass(frozen=True)
class FlowFiles:
    """Pre-extracted flow of one video: x[k], y[k] are the jpgs of flow k."""

    x: tuple[Path, ...]
    y: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.x)


def locate_flow(root: str | Path, video: str) -> FlowFiles:
    """Find the flow jpgs of ``video`` under ``root`` in any layout of the module docstring."""
    root = Path(root)
    candidates = [
        (root / video, "flow_x_*.jpg", root / video, "flow_y_*.jpg"),
        (root / video / "flow_x", "*.jpg", root / video / "flow_y", "*.jpg"),
        (root / "flow_x" / video, "*.jpg", root / "flow_y" / video, "*.jpg"),
        (root / "u" / video, "*.jpg", root / "v" / video, "*.jpg"),
    ]
    for x_dir, x_glob, y_dir, y_glob in candidates:
        xs = sorted(x_dir.glob(x_glob), key=natural_key) if x_dir.is_dir() else []
        if xs:
            ys = sorted(y_dir.glob(y_glob), key=natural_key) if y_dir.is_dir() else []
            if len(xs) != len(ys):
                raise VideoReadError(x_dir, f"{len(xs)} flow_x images but {len(ys)} flow_y images")
            return FlowFiles(tuple(xs), tuple(ys))
    raise VideoReadError(root / video, "no pre-extracted flow found (flow_x_*.jpg, flow_x/, u/ layouts)")


def read_flow_files(files: FlowFiles, indices: Sequence[int] | NDArray[np.integer]) -> NDArray[np.uint8]:
    """Flow images ``indices`` of a pre-extracted video. Returns (K, H, W, 2) uint8 (x, y)."""
    out = []
    for i in np.asarray(indices, dtype=np.int64).reshape(-1):
        if not 0 <= i < len(files):
            raise VideoReadError(files.x[0].parent, f"flow {i} requested but there are {len(files)}")
        fx = cv2.imread(str(files.x[i]), cv2.IMREAD_GRAYSCALE)
        fy = cv2.imread(str(files.y[i]), cv2.IMREAD_GRAYSCALE)
        if fx is None or fy is None or fx.shape != fy.shape:
            raise VideoReadError(files.x[i].parent, f"cannot read flow pair {files.x[i].name}")
        out.append(np.stack([fx, fy], axis=-1))
    return np.stack(out)


def write_flow_folder(video_dir: str | Path, images: NDArray[np.uint8], quality: int = 95) -> None:
    """Write flow images (K, H, W, 2) uint8 as ``video_dir/flow_{x,y}_%05d.jpg`` numbered from 1."""
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for k, image in enumerate(images, start=1):
        for c, axis in enumerate("xy"):
            if not cv2.imwrite(str(video_dir / f"flow_{axis}_{k:05d}.jpg"), image[..., c], params):
                raise OSError(f"cannot write flow image in {video_dir}")


def _grey(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return image if image.ndim == 2 else np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
