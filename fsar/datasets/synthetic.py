"""The built-in synthetic action dataset: procedural videos whose class is the motion, never the appearance.

Built like Something-Something: ten motion primitives (four mirrored pairs -- move left / right,
up / down, grow / shrink, rotate clockwise / anticlockwise -- plus change colour and blink) give 100
classes, the 10 single primitives and the 90 ordered pairs "A then B". "A then B" and "B then A" are
made of the same sub-actions in a different order, so only temporal reasoning separates them.
Everything else (background, actor, distractors, timing, camera jitter, noise) is random per video.

Layout written by :func:`synthesize` (the class-tree layout of :mod:`fsar.datasets._formats`)::

    DIR/videos/<class>/<class>_<k:03d>.mp4    h264, yuv420p, constant fps
    DIR/splits/{train,val,test}list.txt       one ``class/video_id`` per line
    DIR/classes.json                          every class's primitives and split
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from fsar._platform import usable_cores
from fsar.datasets._render import MIRRORED, PRIMITIVES, render_video

__all__ = [
    "MIRRORED", "PRIMITIVES", "SPLITS", "SynthClass", "SynthSummary", "class_catalogue", "class_splits",
    "read_frames", "synthesize", "video_rng", "write_contact_sheet",
]  # fmt: skip

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: The split of the full dataset, 64 / 12 / 24 classes, like the standard FSAR benchmarks.
SPLIT_CLASSES: tuple[int, int, int] = (64, 12, 24)
#: The class split and subset are a property of the dataset, not of a run: one fixed seed for all.
SPLIT_SEED = 20_17_10_24
MAX_CLASSES = 10 + 10 * 9


@dataclass(frozen=True)
class SynthClass:
    """One class: its folder name, the primitives it performs in order, its index in the catalogue."""

    name: str
    primitives: tuple[str, ...]
    index: int


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote: counts of videos and of classes per split, and the time taken."""

    out_dir: Path
    n_videos: int
    n_classes: int
    n_train_classes: int
    n_val_classes: int
    n_test_classes: int
    seconds: float


def class_catalogue() -> tuple[SynthClass, ...]:
    """All 100 classes: the 10 primitives alone, then every ordered pair ``A_then_B`` with A != B."""
    combos = [(p,) for p in PRIMITIVES] + list(itertools.permutations(PRIMITIVES, 2))
    return tuple(SynthClass("_then_".join(c), c, i) for i, c in enumerate(combos))


def _split_sizes(classes: int) -> tuple[int, int, int]:
    """Classes per split, proportional to 64 / 12 / 24 and each at least one."""
    val = max(1, round(classes * SPLIT_CLASSES[1] / MAX_CLASSES))
    test = max(1, round(classes * SPLIT_CLASSES[2] / MAX_CLASSES))
    return classes - val - test, val, test


def class_splits(classes: int = MAX_CLASSES) -> dict[str, tuple[SynthClass, ...]]:
    """The fixed seeded subset of ``classes`` classes, split into train / val / test.

    The same ``classes`` always gives the same split (independent of the video seed); each split's
    classes are listed in catalogue order.
    """
    if not 3 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 3 (one per split) and {MAX_CLASSES}, got {classes}")
    order = np.random.default_rng(SPLIT_SEED).permutation(MAX_CLASSES)[:classes]
    catalogue = class_catalogue()
    bounds = np.cumsum((0, *_split_sizes(classes)))
    return {
        split: tuple(catalogue[i] for i in sorted(order[bounds[k]:bounds[k + 1]].tolist()))
        for k, split in enumerate(SPLITS)
    }


def video_rng(seed: int, cls: SynthClass, k: int) -> np.random.Generator:
    """The generator of video ``k`` of ``cls``: independent of the other videos and of the class subset."""
    return np.random.default_rng([seed, cls.index, k])


def _yuv420p(frames: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """RGB (T, H, W, 3) uint8 to packed yuv420p planes (T, 3H/2, W) uint8, BT.601 limited range.

    That is the matrix decoders assume for untagged h264, and converting a whole video at once in
    numpy is several times faster than converting it frame by frame in libswscale.
    """
    t, h, w, _ = frames.shape
    f = frames.astype(np.float32)
    y = (65.481 / 255) * f[..., 0] + (128.553 / 255) * f[..., 1] + (24.966 / 255) * f[..., 2] + 16.5
    rows = f[:, 0::2] + f[:, 1::2]
    q = (rows[:, :, 0::2] + rows[:, :, 1::2]) * np.float32(0.25 / 255)  # 2x2 means, (T, H/2, W/2, 3)
    u = -37.797 * q[..., 0] - 74.203 * q[..., 1] + 112.0 * q[..., 2] + 128.5
    v = 112.0 * q[..., 0] - 93.786 * q[..., 1] - 18.214 * q[..., 2] + 128.5
    out = np.concatenate([y.reshape(t, -1), u.reshape(t, -1), v.reshape(t, -1)], 1)
    return np.clip(out, 0, 255, out=out).astype(np.uint8).reshape(t, h * 3 // 2, w)


def _write_mp4(path: Path, frames: NDArray[np.uint8], fps: int) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB as h264 yuv420p at ``fps``; one x264 thread for reproducibility."""
    # bitexact: no creation time or muxer version in the file, so the same frames give the same bytes
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # The same seed must give the same bytes. x264 is deterministic only without its lookahead thread,
        # which otherwise lets one input encode differently from run to run: one thread, no lookahead.
        options = {"crf": "23", "preset": "veryfast", "threads": "1",
                   "x264-params": "threads=1:lookahead-threads=1:sync-lookahead=0:rc-lookahead=0"}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for i, planes in enumerate(_yuv420p(frames)):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def read_frames(path: Path) -> NDArray[np.uint8]:
    """Decode every frame of a video file: (T, H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _make_video(task: tuple[Path, SynthClass, int, int, int, int]) -> int:
    """Render and write one video; returns its number of frames. Top level so that it pickles."""
    path, cls, k, seed, size, fps = task
    rendered = render_video(cls.primitives, size, video_rng(seed, cls, k))
    _write_mp4(path, rendered.frames, fps)
    return len(rendered.frames)


def _check_arguments(classes: int, videos_per_class: int, size: int, fps: int, seed: int,
                     workers: int | None) -> None:
    if not 3 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 3 (one per train/val/test split) and {MAX_CLASSES}, "
                         f"got {classes}")
    if videos_per_class < 1:
        raise ValueError(f"videos_per_class must be at least 1, got {videos_per_class}")
    if not (32 <= size <= 1024 and size % 2 == 0):
        raise ValueError(f"size must be an even number of pixels between 32 and 1024 (yuv420p), got {size}")
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {fps}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")


def _prepare(out_dir: Path) -> None:
    """Make ``out_dir`` ready: replace an earlier synthetic dataset there, refuse any other content."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "classes.json").is_file():
            raise ValueError(f"{out_dir} is not empty and holds no synthetic dataset; choose an empty directory")
        for sub in ("videos", "splits"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / "splits").mkdir(parents=True, exist_ok=True)


def _run(tasks: list[tuple[Path, SynthClass, int, int, int, int]], workers: int, progress: bool) -> None:
    """Make every video, in ``workers`` processes; each video's result depends only on its task."""
    with tqdm(total=len(tasks), desc="synth", unit="video", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                _make_video(task)
                bar.update()
            return
        with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
            for _ in pool.map(_make_video, tasks, chunksize=8):
                bar.update()


def synthesize(out_dir: Path, *, classes: int = 100, videos_per_class: int = 20, size: int = 128, fps: int = 12,
               seed: int = 0, preview: Path | None = None, progress: bool = True,
               workers: int | None = None) -> SynthSummary:
    """Write the synthetic dataset to ``out_dir`` (videos, split lists, classes.json).

    ``classes`` < 100 takes a fixed subset (see :func:`class_splits`). The same ``seed`` gives the
    same decoded frames. ``workers`` processes render in parallel (default: the number of CPUs).
    ``preview`` also writes a contact sheet PNG there (:func:`write_contact_sheet`).
    """
    _check_arguments(classes, videos_per_class, size, fps, seed, workers)
    began = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare(out_dir)
    splits = class_splits(classes)
    tasks = []
    for cls in itertools.chain.from_iterable(splits.values()):
        (out_dir / "videos" / cls.name).mkdir(parents=True, exist_ok=True)
        for k in range(videos_per_class):
            tasks.append((out_dir / "videos" / cls.name / f"{cls.name}_{k:03d}.mp4", cls, k, seed, size, fps))
    _run(tasks, workers or usable_cores(), progress)
    entries: list[dict[str, Any]] = []
    for split, members in splits.items():
        lines = [f"{c.name}/{c.name}_{k:03d}\n" for c in members for k in range(videos_per_class)]
        (out_dir / "splits" / f"{split}list.txt").write_text("".join(lines), newline="\n")
        entries += [{"name": c.name, "primitives": list(c.primitives), "split": split, "index": c.index}
                    for c in members]
    meta = {"dataset": "synthetic", "seed": seed, "size": size, "fps": fps, "videos_per_class": videos_per_class,
            "primitives": list(PRIMITIVES), "classes": sorted(entries, key=lambda e: e["index"])}
    (out_dir / "classes.json").write_text(json.dumps(meta, indent=1) + "\n")
    if preview is not None:
        write_contact_sheet(out_dir, preview)
    return SynthSummary(out_dir, len(tasks), classes, len(splits["train"]), len(splits["val"]), len(splits["test"]),
                        seconds=time.perf_counter() - began)


def _sheet_classes(entries: list[dict[str, object]], n: int) -> list[str]:
    """``n`` classes spread over the dataset, each pair followed by its reversal when that exists."""
    names = [str(e["name"]) for e in entries]
    picked: list[str] = []
    for name in names[:: max(1, len(names) // n)]:
        for candidate in (name, "_then_".join(reversed(name.split("_then_")))):
            if candidate in names and candidate not in picked and len(picked) < n:
                picked.append(candidate)
    return picked


def write_contact_sheet(out_dir: Path, png: Path, *, n_classes: int = 6, n_frames: int = 6) -> Path:
    """Draw ``n_frames`` evenly spaced frames of the first video of ``n_classes`` classes, read back
    from the written files, one labelled row per class; returns the PNG's path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global figure state
    from matplotlib.figure import Figure

    if n_classes < 1 or n_frames < 1:
        raise ValueError(f"n_classes and n_frames must be at least 1, got {n_classes}, {n_frames}")
    out_dir, png = Path(out_dir), Path(png)
    meta = json.loads((out_dir / "classes.json").read_text())
    names = _sheet_classes(meta["classes"], n_classes)
    fig = Figure(figsize=(1.5 * n_frames, 1.75 * len(names)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), n_frames, squeeze=False)
    for row, name in zip(axes, names, strict=True):
        video = read_frames(out_dir / "videos" / name / f"{name}_000.mp4")
        picks = ((np.arange(n_frames) + 0.5) * len(video) / n_frames).astype(int)  # segment centres
        for j, (ax, t) in enumerate(zip(row, picks, strict=True)):
            ax.imshow(video[t])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"t={t}", fontsize=7)
            if j == 0:
                ax.set_title(name, loc="left", fontsize=9, fontweight="bold")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    return png
