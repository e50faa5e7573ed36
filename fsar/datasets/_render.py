"""Procedural rendering of one synthetic action video: an actor performs a timeline of motion primitives.

The class of a video is its sequence of primitives and nothing else: background, actor shape, colours,
sizes, positions, distractors, timing, speed, camera jitter and noise are all drawn per video from
one ``numpy.random.Generator``, so appearance carries no class information.

Everything is rendered as whole-video arrays with broadcasting over ``(T, H, W)``; shapes are drawn
from signed-distance functions, which gives anti-aliased edges for free.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: The ten motion primitives. Four mirrored pairs plus two appearance changes. In image coordinates
#: (y points down) a positive angle turns clockwise on screen.
PRIMITIVES: tuple[str, ...] = (
    "move_left", "move_right", "move_up", "move_down", "grow", "shrink",
    "rotate_cw", "rotate_ccw", "change_colour", "blink",
)  # fmt: skip
#: Each mirrored primitive and its opposite.
MIRRORED: dict[str, str] = {
    "move_left": "move_right", "move_right": "move_left", "move_up": "move_down", "move_down": "move_up",
    "grow": "shrink", "shrink": "grow", "rotate_cw": "rotate_ccw", "rotate_ccw": "rotate_cw",
}  # fmt: skip
MIN_FRAMES, MAX_FRAMES = 24, 72
_SHAPES = ("ellipse", "box", "triangle", "diamond")
_MOVES = {"move_left": (-1.0, 0.0), "move_right": (1.0, 0.0), "move_up": (0.0, -1.0), "move_down": (0.0, 1.0)}

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class Rendered:
    """One rendered video.

    frames: (T, H, W, 3) uint8 RGB; actor_alpha: (T, H, W) float32 in [0, 1], the actor's coverage
    (zero while it blinks off), for checks that measure the motion on the rendered pixels.
    """

    frames: NDArray[np.uint8]
    actor_alpha: FloatArray


@dataclass(frozen=True)
class _Track:
    """Per-frame actor state, all arrays (T,): centre in px, scale factor, angle in rad, visibility."""

    x: FloatArray
    y: FloatArray
    scale: FloatArray
    angle: FloatArray
    visible: FloatArray
    progress: FloatArray  # (n_sub, T) eased progress of each sub-action
    radius: float  # half-length of the body at scale 1, px


def _timeline(rng: np.random.Generator, n_sub: int) -> tuple[int, FloatArray, list[tuple[float, float]]]:
    """Video length T, eased progress (n_sub, T) in [0, 1] and the (start, duration) of each sub-action.

    Idle frames are split at random into a lead-in, pauses between sub-actions and a tail, so that
    sub-actions sit at different times in different videos of one class.
    """
    n_frames = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
    active = n_frames * rng.uniform(0.55, 0.85)
    idle = (n_frames - active) * rng.dirichlet(np.ones(n_sub + 1))
    weights = rng.dirichlet(np.full(n_sub, 6.0))  # concentrated: no sub-action gets squeezed to nothing
    t = np.arange(n_frames, dtype=np.float32) + 0.5
    progress = np.empty((n_sub, n_frames), np.float32)
    spans = []
    start = float(idle[0])
    for k in range(n_sub):
        dur = float(active * weights[k])
        x = np.clip((t - start) / dur, 0.0, 1.0)
        if rng.random() < 0.5:  # ease in-out, else a power law: speed varies within the sub-action
            x = x * x * (3.0 - 2.0 * x)
        else:
            x = x ** rng.uniform(0.6, 1.6)
        progress[k] = x
        spans.append((start, dur))
        start += dur + float(idle[k + 1])
    return n_frames, progress, spans


def _hsv(h: float, s: float, v: float) -> NDArray[np.float32]:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _luma(c: NDArray[np.float32]) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _contrasting(rng: np.random.Generator, against: NDArray[np.float32], hue: float | None = None) -> FloatArray:
    """A saturated colour whose luma differs from ``against`` by at least 0.25 (best of 100 draws)."""
    best, best_gap = _hsv(0.0, 1.0, 1.0), -1.0
    for _ in range(100):
        h = rng.random() if hue is None else hue + rng.uniform(0.3, 0.7)
        c = _hsv(h, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
        gap = abs(_luma(c) - _luma(against))
        if gap >= 0.25:
            return c
        if gap > best_gap:
            best, best_gap = c, gap
    return best


def _track(rng: np.random.Generator, prims: tuple[str, ...], size: int, pad: int) -> _Track:
    """Sample magnitudes, timing and a start pose such that the whole path stays inside the frame."""
    n_frames, progress, spans = _timeline(rng, len(prims))
    shift = np.zeros((len(prims), 2))
    dlog = np.zeros(len(prims))
    dangle = np.zeros(len(prims))
    for k, p in enumerate(prims):
        if p in _MOVES:  # large translations: clearly visible on 8 frames sampled from a 128 px video
            shift[k] = np.array(_MOVES[p]) * rng.uniform(0.35, 0.5) * size
        elif p in ("grow", "shrink"):
            dlog[k] = np.log(rng.uniform(1.7, 2.2)) * (1 if p == "grow" else -1)
        elif p in ("rotate_cw", "rotate_ccw"):
            dangle[k] = np.deg2rad(rng.uniform(100, 160)) * (1 if p == "rotate_cw" else -1)
    path = np.vstack([np.zeros(2), np.cumsum(shift, 0)])  # pose after each sub-action
    max_scale = float(np.exp(np.concatenate([[0.0], np.cumsum(dlog)]).max()))
    extent = path.max(0) - path.min(0)
    fit = float((size - extent.max() - 2 * pad) / (2 * max_scale))  # largest radius that fits
    radius = min(rng.uniform(0.09, 0.13) * size, fit)
    margin = radius * max_scale + pad
    lo, hi = margin - path.min(0), size - margin - path.max(0)
    x0, y0 = rng.uniform(lo, np.maximum(hi, lo))
    visible = np.ones(n_frames, np.float32)
    if "blink" in prims:
        start, dur = spans[prims.index("blink")]
        phase = (np.arange(n_frames) + 0.5 - start) / dur
        n_off = 2 if dur < 12 else 3
        window = np.floor(phase * (2 * n_off + 1))
        visible[(phase >= 0) & (phase < 1) & (window % 2 == 1)] = 0.0
    return _Track(
        x=(x0 + shift[:, 0] @ progress).astype(np.float32),
        y=(y0 + shift[:, 1] @ progress).astype(np.float32),
        scale=np.exp(dlog @ progress).astype(np.float32),
        angle=(rng.uniform(0, 2 * np.pi) + dangle @ progress).astype(np.float32),
        visible=visible,
        progress=progress,
        radius=float(radius),
    )


def _shape_distance(kind: str, u: FloatArray, v: FloatArray, aspect: float) -> FloatArray:
    """Signed distance (negative inside) to a body of half-length 1 along u, in the body's units."""
    au, av = np.abs(u), np.abs(v)
    if kind == "ellipse":  # first-order distance estimate; exact enough for a one-pixel soft edge
        return ((np.sqrt(u * u + (v / aspect) ** 2) - 1.0) * aspect).astype(np.float32, copy=False)
    if kind == "box":
        return np.maximum(au - 0.85, av - 0.85 * aspect).astype(np.float32, copy=False)
    if kind == "diamond":
        return ((au * aspect + av - aspect) / np.float32(np.hypot(1.0, aspect))).astype(np.float32, copy=False)
    # isosceles triangle pointing along +u, vertices (1, 0), (-0.7, +-w)
    w = 1.2 * aspect
    n = np.float32(np.hypot(w, 1.7))
    return np.maximum(-0.7 - u, (w * (u - 1.0) + 1.7 * av) / n)


def _coverage(distance: FloatArray, pixels_per_unit: FloatArray | float) -> FloatArray:
    """Anti-aliased coverage in [0, 1] from a signed distance measured in body units."""
    return np.clip(0.5 - distance * pixels_per_unit, 0.0, 1.0)


def _texture(rng: np.random.Generator, n: int, size: int) -> FloatArray:
    """A random (n, n) background texture in [0, 1]: flat, gradient, stripes, checks or smooth blobs."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    kind = int(rng.integers(5))
    if kind == 1:
        return (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    if kind == 2:
        return 0.5 + 0.5 * np.sin(2 * np.pi * proj / (rng.uniform(0.08, 0.3) * size))
    if kind == 3:
        period = max(2, int(rng.uniform(0.06, 0.2) * size))
        return ((xx // period + yy // period) % 2).astype(np.float32)
    if kind == 4:  # bilinear upsampling of a coarse random grid, as two interpolation matrices
        grid = rng.random((5, 5))
        pos = np.linspace(0, 4, n)
        interp = np.stack([np.interp(pos, np.arange(5), np.eye(5)[j]) for j in range(5)], 1)
        return (interp @ grid @ interp.T).astype(np.float32)
    return np.zeros((n, n), np.float32)


def _background(rng: np.random.Generator, size: int, pad: int) -> tuple[FloatArray, NDArray[np.float32]]:
    """Static scene on a canvas padded for camera jitter: (size+2pad, size+2pad, 3) and its base colour."""
    n = size + 2 * pad
    base = _hsv(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.15, 0.85))
    other = np.clip(base + rng.uniform(-0.12, 0.12, 3), 0, 1).astype(np.float32)
    canvas = base + _texture(rng, n, size)[..., None] * (other - base)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):  # static distractors: they never move, so carry no class
        r = rng.uniform(0.05, 0.1) * size
        cx, cy, a = rng.uniform(pad + r, n - pad - r), rng.uniform(pad + r, n - pad - r), rng.uniform(0, np.pi)
        dx, dy = (xx - cx) / r, (yy - cy) / r
        u, v = dx * np.cos(a) + dy * np.sin(a), dy * np.cos(a) - dx * np.sin(a)
        alpha = _coverage(_shape_distance(str(rng.choice(_SHAPES)), u, v, rng.uniform(0.5, 1.0)), r)
        colour = _hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.3, 0.95))
        canvas += alpha[..., None] * (colour - canvas)
    return canvas.astype(np.float32), base


def _actor_layers(track: _Track, shape: str, aspect: float, size: int, jx: FloatArray, jy: FloatArray
                  ) -> tuple[FloatArray, FloatArray, NDArray[np.int64], NDArray[np.int64]]:
    """Body and head-marker coverage in a window that follows the actor.

    The camera moves by (jx, jy) px per frame. Returns body and marker (T, A, A) float32 and the
    windows' top-left corners rows, cols (T,). Rendering only a window around the actor, rather
    than the whole frame, is what keeps a video at a few milliseconds.
    """
    win = min(size, int(np.ceil(2.05 * track.radius * float(track.scale.max()))) + 4)
    cx, cy = track.x + jx, track.y + jy
    top = np.clip(np.round(cy - win / 2), 0, size - win).astype(np.int64)
    left = np.clip(np.round(cx - win / 2), 0, size - win).astype(np.int64)
    axis = np.arange(win, dtype=np.float32) + 0.5
    dx = (left[:, None, None] + axis[None, None, :]) - cx[:, None, None]  # (T, 1, A)
    dy = (top[:, None, None] + axis[None, :, None]) - cy[:, None, None]  # (T, A, 1)
    ppu = (track.radius * track.scale)[:, None, None]
    cos, sin = np.cos(track.angle)[:, None, None] / ppu, np.sin(track.angle)[:, None, None] / ppu
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    body = _coverage(_shape_distance(shape, u, v, aspect), ppu)
    # an off-centre marker makes rotation and mirrored shapes visible, even on an ellipse
    marker = _coverage(np.sqrt((u - 0.5) ** 2 + v * v) - 0.2, ppu)
    vis = track.visible[:, None, None]
    return body * vis, np.minimum(marker, body) * vis, top, left


def _colours(rng: np.random.Generator, primitives: tuple[str, ...], track: _Track,
             background: NDArray[np.float32]) -> tuple[FloatArray, FloatArray]:
    """Per-frame body colour (T, 3) and the marker colour (3,), all contrasting with the background."""
    colour0 = _contrasting(rng, background)
    colour = np.repeat(colour0[None], track.x.shape[0], 0)
    if "change_colour" in primitives:
        progress = track.progress[primitives.index("change_colour")]
        colour1 = _contrasting(rng, background, hue=colorsys.rgb_to_hsv(*colour0)[0])
        colour = colour0 + progress[:, None] * (colour1 - colour0)
    marker = np.full(3, 0.08 if _luma(colour0) > 0.55 else 0.97, np.float32)
    return colour.astype(np.float32), marker


def render_video(primitives: tuple[str, ...], size: int, rng: np.random.Generator) -> Rendered:
    """Render one video of the class made of ``primitives`` (performed in order) at ``size`` px.

    Returns frames (T, H, W, 3) uint8 with T in [24, 72], and the actor's coverage (T, H, W).
    """
    unknown = set(primitives) - set(PRIMITIVES)
    if unknown or not primitives:
        raise ValueError(f"unknown or empty primitives {sorted(unknown)}; choose from {PRIMITIVES}")
    jitter = max(1, round(size / 64))
    track = _track(rng, primitives, size, pad=jitter + 1)
    canvas, bg_colour = _background(rng, size, jitter)
    colour, marker_colour = _colours(rng, primitives, track, bg_colour)
    amp = int(rng.integers(0, jitter + 1))
    jx, jy = rng.integers(-amp, amp + 1, (2, track.x.shape[0]))
    # the camera moves by (jx, jy): the static scene is a shifted crop, the actor shifts the other way
    frames = np.stack([canvas[jitter + a:jitter + a + size, jitter + b:jitter + b + size] for a, b in zip(jy, jx,
                                                                                                   strict=True)])
    frames *= 255.0
    body, marker, top, left = _actor_layers(track, str(rng.choice(_SHAPES)), rng.uniform(0.45, 0.62), size,
                                            -jx.astype(np.float32), -jy.astype(np.float32))
    win = body.shape[1]
    index = (np.arange(len(frames))[:, None, None], (top[:, None] + np.arange(win))[:, :, None],
             (left[:, None] + np.arange(win))[:, None, :])
    patch = frames[index]  # (T, A, A, 3)
    patch += body[..., None] * (255.0 * colour[:, None, None, :] - patch)
    patch += marker[..., None] * (255.0 * marker_colour - patch)
    frames[index] = patch
    alpha = np.zeros(frames.shape[:3], np.float32)
    alpha[index] = body
    # grey (luma) noise of +-noise_amp levels, one draw per pixel: cheap to draw and to encode
    noise_amp = rng.uniform(1.0, 5.0)
    noise = np.frombuffer(rng.bytes(frames[..., 0].size), np.uint8).reshape(*frames.shape[:3], 1)
    frames += np.multiply(noise, np.float32(noise_amp / 127.5), dtype=np.float32)
    frames += np.float32(0.5 - noise_amp)
    return Rendered(np.clip(frames, 0, 255, out=frames).astype(np.uint8), alpha)
