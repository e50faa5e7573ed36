"""Extraction throughput: the full run (decode + sample + crop + backbone + Zarr write) against the backbone alone.

Run: ``python -m benchmarks.extract [--quick] [--videos-224 N] [--videos-112 N] [--rounds R] [--inputs 224,112]
[--backbones resnet50,efficientnet_lite0]``. For each backbone, input size and precision, in one run:

- *backbone alone*: :meth:`Backbone.extract` on the same frames already decoded and cropped into one uint8
  array (after a warm-up call), i.e. the ceiling the full run can reach;
- *full*: :func:`fsar.extract.run.run_extraction` on a synthetic dataset of real mp4 files (h264, 12 fps), with
  DataLoader ``workers`` 1 and 2; the best is reported. Its *steady* rate counts the frames committed after the
  first chunk over the time from the first chunk's commit to the last one's: the rate a long extraction
  sustains. The *whole call* rate also pays the start-up (loading the backbone, creating the store, starting
  the workers, decoding the first chunk before the backbone can start), shown in seconds on its own.

Shared CPUs vary by about 10 % from one run to the next, so the measurements are interleaved in ``rounds``
(each round: backbone alone, then the full run with each worker count); rates are medians over the rounds and
each ratio is the median of the rounds' ratios (a round's two runs are back to back), shown with their range.
The goal (full >= 90 % of the backbone alone) is judged on the steady rate, with the serial decode + preprocess
time per video measured on the side to explain the gap. On a CPU the decoding workers and the backbone share
the cores: the *decode load* column is D / B, D = the decode core-seconds per video, B = the core-seconds the
backbone holds per video (its wall time x torch threads). B includes the time its threads spin at
synchronisation points (their CPU time reads ~2.0 of 2 cores), which decoding can use instead, so D / B is no
bound: the full run can keep more than B / (B + D) of the backbone's rate. On a GPU decoding only has to keep
up. ``auto`` precision is measured only where it differs from fp32 (bf16 on CPUs with AVX-512 BF16 or AMX).

Inputs: input 224 uses 256 px videos resized to short side 256 and centre-cropped to 224 (the literature's
preprocessing); input 112 uses the default 128 px synthetic videos resized to short side 112 (the crop keeps
the whole frame). ``efficientnet_lite0`` runs with its packaged ImageNet weights, ``resnet50`` with
``weights="none"`` (random initialisation: ImageNet files are not available offline; the speed is the same).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from benchmarks._common import Table, machine_line, percent, timed, verdict
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
#: Default dataset sizes: at least three chunks of 16 videos, so the steady rate spans two chunks or more.
VIDEOS_224, VIDEOS_112 = 48, 96
ROUNDS = 3
CHUNK_VIDEOS = 16  # the extract default


@dataclass(frozen=True)
class Case:
    backbone: str
    weights: str
    input_size: int
    precision: str


@dataclass(frozen=True)
class FullRun:
    whole_fps: float  # frames / seconds of the whole run_extraction call
    steady_fps: float  # frames committed after the first chunk / time from the first commit to the last


@dataclass(frozen=True)
class Measured:
    frames: int
    alone_fps: list[float]  # backbone alone, per round
    full: dict[int, list[FullRun]]  # workers -> the full runs, per round
    load_s: float  # building the backbone and loading its weights
    decode_s_per_video: float  # serial decode + sample + crop

    def steady_ratios(self, workers: int) -> list[float]:
        """Steady full / alone of each round (the two measured back to back)."""
        return [run.steady_fps / alone for run, alone in zip(self.full[workers], self.alone_fps, strict=True)]

    @property
    def best_workers(self) -> int:
        return max(self.full, key=lambda w: float(np.median(self.steady_ratios(w))))

    def _median(self, value: Callable[[FullRun, float], float]) -> float:
        """Median over the rounds of ``value(full run, backbone alone f/s)``, for the best worker count."""
        runs = self.full[self.best_workers]
        return float(np.median([value(run, alone) for run, alone in zip(runs, self.alone_fps, strict=True)]))

    @property
    def ratio(self) -> float:
        return self._median(lambda run, alone: run.steady_fps / alone)

    @property
    def backbone_fps(self) -> float:
        return float(np.median(self.alone_fps))

    @property
    def steady_fps(self) -> float:
        return self._median(lambda run, _: run.steady_fps)

    @property
    def whole_fps(self) -> float:
        return self._median(lambda run, _: run.whole_fps)

    @property
    def whole_ratio(self) -> float:
        return self._median(lambda run, alone: run.whole_fps / alone)

    @property
    def startup_s(self) -> float:
        """How much longer the whole call took than its frames at the steady rate (median of the rounds)."""
        return self._median(lambda run, _: self.frames / run.whole_fps - self.frames / run.steady_fps)

    @property
    def decode_load(self) -> float:
        """Decode core-seconds per video over the core-seconds the backbone holds per video."""
        return self.decode_s_per_video / (torch.get_num_threads() * FRAMES / self.backbone_fps)


def spread(values: list[float]) -> str:
    """``88-97`` (per cent) for the range of ``values``."""
    return f"{100 * min(values):.0f}-{100 * max(values):.0f}"


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


def full_run(case: Case, root: Path, workers: int, out: Path) -> FullRun:
    """Frame rates of one whole run_extraction call into a new store."""
    config = ExtractConfig(dataset="synthetic", root=root, backbone=case.backbone, weights=case.weights,
                           frames=FRAMES, short_side=INPUTS[case.input_size][1], input_size=case.input_size,
                           device="cpu", precision=case.precision, workers=workers, batch_frames=64,
                           chunk_videos=CHUNK_VIDEOS)
    seconds, summary = timed(lambda: run_extraction(config, out, progress=False))
    whole = summary.extracted * FRAMES / seconds
    commits = summary.committed_s
    if len(commits) < 2:  # one chunk: no steady part to measure
        return FullRun(whole, whole)
    after_first = (summary.extracted - CHUNK_VIDEOS) * FRAMES  # two commits or more: more than one chunk
    return FullRun(whole, after_first / (commits[-1] - commits[0]))


def measure(case: Case, root: Path, frames: NDArray[np.uint8], decode_s: float, workers: tuple[int, ...],
            scratch: Path, rounds: int) -> Measured:
    """Backbone alone and the full runs, interleaved over ``rounds``."""
    load_s, backbone = timed(lambda: load_backbone(case.backbone, case.weights, "cpu"))
    precision: Precision = case.precision  # type: ignore[assignment]
    backbone.extract(frames[:8], precision=precision)  # warm-up: oneDNN builds its primitives on the first call
    alone: list[float] = []
    full: dict[int, list[FullRun]] = {w: [] for w in workers}
    for r in range(rounds):
        seconds, _ = timed(lambda: backbone.extract(frames, batch_size=64, precision=precision))
        alone.append(frames.shape[0] / seconds)
        for w in workers:
            out = scratch / f"{case.backbone}-{case.input_size}-{case.precision}-w{w}-r{r}.zarr"
            full[w].append(full_run(case, root, w, out))
            shutil.rmtree(out)
    return Measured(frames.shape[0], alone, full, load_s, decode_s)


def cases(quick: bool, inputs: tuple[int, ...] = tuple(INPUTS), backbones: tuple[str, ...] | None = None
          ) -> list[Case]:
    if quick:
        return [Case("efficientnet_lite0", "imagenet", 112, "auto")]
    cpu = torch.device("cpu")
    distinct = [p for p in PRECISIONS if p == "fp32" or resolve_precision(p, cpu) != torch.float32]  # type: ignore[arg-type]
    return [Case(b, w, size, p) for size in inputs for b, w in BACKBONES if backbones is None or b in backbones
            for p in distinct]


def tables(quick: bool = False, videos: dict[int, int] | None = None, rounds: int = ROUNDS,
           inputs: tuple[int, ...] = tuple(INPUTS), backbones: tuple[str, ...] | None = None) -> list[Table]:
    """The extraction table; ``quick``: one small case (seconds), for the smoke test. ``inputs`` and
    ``backbones`` choose the rows (default: all)."""
    videos = videos or ({112: 3} if quick else {224: VIDEOS_224, 112: VIDEOS_112})
    workers = (1,) if quick else WORKERS
    rounds = 1 if quick else rounds
    table = Table("Extraction: full run vs backbone alone (frames/s, same run)",
                  ["backbone", "input", "precision", "frames", "backbone alone f/s", "full f/s steady (workers)",
                   "steady / alone (rounds)", f"goal >= {percent(GOAL)}", "decode load", "whole call f/s",
                   "whole / alone", "start-up s", "decode ms/video", "backbone load s"])
    with tempfile.TemporaryDirectory(prefix="fsar-bench-extract-") as tmp:
        scratch = Path(tmp)
        preloaded: dict[int, tuple[Path, NDArray[np.uint8], float]] = {}
        for case in cases(quick, inputs, backbones):
            if case.input_size not in preloaded:
                root = make_dataset(scratch / f"synthetic-{case.input_size}", INPUTS[case.input_size][0],
                                    videos[case.input_size])
                preloaded[case.input_size] = (root, *preload(root, case.input_size))
            root, frames, decode_s = preloaded[case.input_size]
            m = measure(case, root, frames, decode_s, workers, scratch, rounds)
            dtype = str(resolve_precision(case.precision, torch.device("cpu"))).removeprefix("torch.")  # type: ignore[arg-type]
            table.add(case.backbone, case.input_size, f"{case.precision} ({dtype})", m.frames,
                      f"{m.backbone_fps:.1f}", f"{m.steady_fps:.1f} ({m.best_workers})",
                      f"{percent(m.ratio)} ({spread(m.steady_ratios(m.best_workers))})", verdict(m.ratio >= GOAL),
                      percent(m.decode_load), f"{m.whole_fps:.1f}", percent(m.whole_ratio),
                      f"{m.startup_s:.1f}", f"{1000 * m.decode_s_per_video:.0f}", f"{m.load_s:.2f}")
    table.notes += [
        machine_line(),
        "input 224: 256 px videos, short side 256, centre crop 224; input 112: 128 px videos, short side 112",
        f"{rounds} interleaved rounds (backbone alone, then the full run with workers {'/'.join(map(str, workers))}; "
        "the best worker count shown): rates are medians over the rounds, ratios the median (and range) of each "
        "round's ratio; backbone alone = Backbone.extract on the preloaded uint8 frames after a warm-up call",
        f"full = run_extraction (decode, backbone, write) into a new store, chunks of {CHUNK_VIDEOS} videos; steady: "
        "the frames committed after the first chunk over the time from its commit to the last one (the rate of a "
        "long extraction); whole call: all frames over the whole call; start-up s: how much longer the whole "
        "call took than its frames at the steady rate (backbone load, store, workers, the first chunk's decode)",
        "decode ms/video: serial decode + sample + crop of one video in the main process (8 frames)",
        "decode load: D / B, D = decode core-seconds per video, B = the core-seconds the backbone holds per video "
        "(wall x torch threads, spin-waiting included, which decoding can use instead: no bound on the ratio)",
        "resnet50 with weights=none (ImageNet file not available offline; same speed)",
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny case, seconds (smoke test)")
    parser.add_argument("--videos-224", type=int, default=VIDEOS_224, help="videos in the input-224 dataset")
    parser.add_argument("--videos-112", type=int, default=VIDEOS_112, help="videos in the input-112 dataset")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds; medians are reported")
    parser.add_argument("--inputs", default=",".join(map(str, INPUTS)),
                        help="input sizes to measure, comma-separated (default: %(default)s)")
    parser.add_argument("--backbones", default=",".join(b for b, _ in BACKBONES),
                        help="backbones to measure, comma-separated (default: %(default)s)")
    args = parser.parse_args()
    inputs = tuple(int(size) for size in args.inputs.split(","))
    backbones = tuple(args.backbones.split(","))
    unknown = [str(size) for size in inputs if size not in INPUTS] + [b for b in backbones
                                                                    if b not in dict(BACKBONES)]
    if unknown:
        parser.error(f"unknown input size or backbone: {', '.join(unknown)} "
                     f"(choose from {', '.join(map(str, INPUTS))} and {', '.join(dict(BACKBONES))})")
    videos = None if args.quick else {224: args.videos_224, 112: args.videos_112}
    for table in tables(args.quick, videos, args.rounds, inputs, backbones):
        print(table.markdown())


if __name__ == "__main__":
    main()
