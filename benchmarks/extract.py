"""Extraction throughput: the full run (decode + sample + crop + backbone + Zarr write) against the backbone alone.

Run: ``python -m benchmarks.extract [--quick] [--videos-224 N] [--videos-112 N]``. For each backbone, input size
and precision, in one run:

- *backbone alone*: :meth:`Backbone.extract` on the same frames already decoded and cropped into one uint8
  array (after a warm-up call), i.e. the ceiling the full run can reach;
- *full*: :func:`fsar.extract.run.run_extraction` on a synthetic dataset of real mp4 files (h264, 12 fps), with
  DataLoader ``workers`` 1 and 2; the best is reported. Its time is the whole call, so it includes loading the
  backbone, creating the store and starting the workers.

The frames per second of both and their ratio (goal: full >= 90 % of the backbone alone) are reported, with the
serial decode + preprocess time per video measured on the side to explain the gap. On a CPU the decoding
workers and the backbone share the cores, so the full run cannot exceed the *CPU bound*
B / (B + D), B = the backbone's core-seconds per video (its wall time x torch threads), D = the decode
core-seconds per video; on a GPU the bound is 100 %. The table shows it next to the ratio. ``auto``
precision is measured only where it differs from fp32 (bf16 on CPUs with AVX-512 BF16 or AMX).

Inputs: input 224 uses 256 px videos resized to short side 256 and centre-cropped to 224 (the literature's
preprocessing); input 112 uses the default 128 px synthetic videos resized to short side 112 (the crop keeps
the whole frame). ``efficientnet_lite0`` runs with its packaged ImageNet weights, ``resnet50`` with
``weights="none"`` (random initialisation: ImageNet files are not available offline; the speed is the same).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from benchmarks._common import Table, best_seconds, machine_line, percent, timed, verdict
from fsar.datasets.catalog import load_dataset
from fsar.datasets.synthetic import synthesize
from fsar.extract.backbone import Precision, load_backbone, resolve_precision
from fsar.extract.run import ExtractConfig, run_extraction
from fsar.extract.source import SourceConfig, load_video
from fsar.extract.transforms import CropConfig

FRAMES = 8  # TSN segments per video
GOAL = 0.90
#: input size -> (video side in px, resize short side to)
INPUTS = {224: (256, 256), 112: (128, 112)}
BACKBONES = (("efficientnet_lite0", "imagenet"), ("resnet50", "none"))
PRECISIONS = ("auto", "fp32")
WORKERS = (1, 2)
#: Default dataset sizes: enough videos that start-up (backbone load, store, workers) weighs a few per cent.
VIDEOS_224, VIDEOS_112 = 32, 96


@dataclass(frozen=True)
class Case:
    backbone: str
    weights: str
    input_size: int
    precision: str


@dataclass(frozen=True)
class Measured:
    frames: int
    backbone_fps: float
    full_fps: dict[int, float]  # workers -> frames/s
    load_s: float  # building the backbone and loading its weights
    decode_s_per_video: float  # serial decode + sample + crop

    @property
    def best_workers(self) -> int:
        return max(self.full_fps, key=lambda w: self.full_fps[w])

    @property
    def ratio(self) -> float:
        return self.full_fps[self.best_workers] / self.backbone_fps

    @property
    def cpu_bound(self) -> float:
        """Highest full / alone when decoding and the backbone share the CPU cores."""
        backbone_core_s = torch.get_num_threads() * FRAMES / self.backbone_fps
        return backbone_core_s / (backbone_core_s + self.decode_s_per_video)


def make_dataset(out: Path, video_px: int, videos: int) -> Path:
    """A synthetic dataset of about ``videos`` mp4 files (3 classes: one per split)."""
    synthesize(out, classes=3, videos_per_class=max(1, round(videos / 3)), size=video_px, seed=0, progress=False)
    return out


def preload(root: Path, input_size: int) -> tuple[NDArray[np.uint8], float]:
    """Every video's sampled, cropped frames as one (N*T, S, S, 3) uint8 array; serial seconds per video."""
    short = INPUTS[input_size][1]
    config = SourceConfig(frames=FRAMES, crop=CropConfig(resize_short=short, crop=input_size, flip=False))
    videos = load_dataset("synthetic", root).videos
    start = time.perf_counter()
    items = [load_video(row, v.id, v.path, config) for row, v in enumerate(videos)]
    per_video = (time.perf_counter() - start) / len(videos)
    frames = np.concatenate([item.inputs["rgb"].reshape(-1, input_size, input_size, 3) for item in items])
    return frames, per_video


def backbone_alone(case: Case, frames: NDArray[np.uint8], repeats: int) -> tuple[float, float]:
    """(frames/s of Backbone.extract on preloaded frames, seconds to load the backbone)."""
    load_s, backbone = timed(lambda: load_backbone(case.backbone, case.weights, "cpu"))
    precision: Precision = case.precision  # type: ignore[assignment]
    backbone.extract(frames[:8], precision=precision)  # warm-up: oneDNN builds its primitives on the first call
    seconds = best_seconds(lambda: backbone.extract(frames, batch_size=64, precision=precision), repeats)
    return frames.shape[0] / seconds, load_s


def full_run(case: Case, root: Path, workers: int, out: Path) -> float:
    """frames/s of one whole run_extraction call into a new store."""
    config = ExtractConfig(dataset="synthetic", root=root, backbone=case.backbone, weights=case.weights,
                           frames=FRAMES, short_side=INPUTS[case.input_size][1], input_size=case.input_size,
                           device="cpu", precision=case.precision, workers=workers, batch_frames=64)
    seconds, summary = timed(lambda: run_extraction(config, out, progress=False))
    return summary.extracted * FRAMES / seconds


def measure(case: Case, root: Path, frames: NDArray[np.uint8], decode_s: float, workers: tuple[int, ...],
            scratch: Path, repeats: int) -> Measured:
    fps, load_s = backbone_alone(case, frames, repeats)
    full = {}
    for w in workers:
        out = scratch / f"{case.backbone}-{case.input_size}-{case.precision}-w{w}.zarr"
        full[w] = full_run(case, root, w, out)
    return Measured(frames.shape[0], fps, full, load_s, decode_s)


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("efficientnet_lite0", "imagenet", 112, "auto")]
    cpu = torch.device("cpu")
    distinct = [p for p in PRECISIONS if p == "fp32" or resolve_precision(p, cpu) != torch.float32]  # type: ignore[arg-type]
    return [Case(b, w, size, p) for size in INPUTS for b, w in BACKBONES for p in distinct]


def tables(quick: bool = False, videos: dict[int, int] | None = None) -> list[Table]:
    """The extraction table; ``quick``: one small case (seconds), for the smoke test."""
    videos = videos or ({112: 3} if quick else {224: VIDEOS_224, 112: VIDEOS_112})
    workers = (1,) if quick else WORKERS
    table = Table("Extraction: full run vs backbone alone (frames/s, same run)",
                  ["backbone", "input", "precision", "frames", "backbone alone f/s", "full f/s (workers)",
                   "full / alone", f"goal >= {percent(GOAL)}", "CPU bound", "decode ms/video",
                   "backbone load s"])
    with tempfile.TemporaryDirectory(prefix="fsar-bench-extract-") as tmp:
        scratch = Path(tmp)
        preloaded: dict[int, tuple[Path, NDArray[np.uint8], float]] = {}
        for case in cases(quick):
            if case.input_size not in preloaded:
                root = make_dataset(scratch / f"synthetic-{case.input_size}", INPUTS[case.input_size][0],
                                    videos[case.input_size])
                preloaded[case.input_size] = (root, *preload(root, case.input_size))
            root, frames, decode_s = preloaded[case.input_size]
            m = measure(case, root, frames, decode_s, workers, scratch, repeats=1 if quick else 2)
            dtype = str(resolve_precision(case.precision, torch.device("cpu"))).removeprefix("torch.")  # type: ignore[arg-type]
            table.add(case.backbone, case.input_size, f"{case.precision} ({dtype})", m.frames,
                      f"{m.backbone_fps:.1f}", f"{m.full_fps[m.best_workers]:.1f} ({m.best_workers})",
                      percent(m.ratio), verdict(m.ratio >= GOAL), percent(m.cpu_bound),
                      f"{1000 * m.decode_s_per_video:.0f}",
                      f"{m.load_s:.2f}")
    table.notes += [
        machine_line(),
        "input 224: 256 px videos, short side 256, centre crop 224; input 112: 128 px videos, short side 112",
        f"full = whole run_extraction call (load backbone, create store, workers {'/'.join(map(str, workers))}: "
        "best shown, decode, backbone, write); backbone alone = Backbone.extract on the preloaded uint8 frames "
        "after a warm-up call",
        "decode ms/video: serial decode + sample + crop of one video in the main process (8 frames)",
        "CPU bound: B / (B + D), B = backbone core-seconds per video (wall x torch threads), D = decode core-seconds "
        "per video; the most full / alone can be while both share the cores (100 % when the backbone is on a GPU)",
        "resnet50 with weights=none (ImageNet file not available offline; same speed)",
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny case, seconds (smoke test)")
    parser.add_argument("--videos-224", type=int, default=VIDEOS_224, help="videos in the input-224 dataset")
    parser.add_argument("--videos-112", type=int, default=VIDEOS_112, help="videos in the input-112 dataset")
    args = parser.parse_args()
    videos = None if args.quick else {224: args.videos_224, 112: args.videos_112}
    for table in tables(args.quick, videos):
        print(table.markdown())


if __name__ == "__main__":
    main()
