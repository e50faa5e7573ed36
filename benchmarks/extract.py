"""Extraction throughput: the full run (decode + sample + crop + backbone + Zarr write) against the backbone alone.

Run: ``python -m benchmarks.extract [--quick] [--seconds S] [--rounds R] [--inputs 224,112]
[--backbones resnet50,efficientnet_lite0]``. For each backbone, input size and precision, in one run:

- *backbone alone*: :meth:`Backbone.extract` on the same frames already decoded and cropped into one uint8
  array (after a warm-up call): what the full run would reach if decoding were free;
- *full*: :func:`fsar.extract.run.run_extraction` on a synthetic dataset of real mp4 files (h264, 12 fps), with
  DataLoader ``workers`` 1 and 2; the best is reported. Its *steady* rate counts the frames committed after the
  first chunk over the time from the first chunk's commit to the last one's: the rate a long extraction
  sustains. The *whole call* rate also pays the start-up (loading the backbone, creating the store, starting
  the workers, decoding the first chunk before the backbone can start), shown in seconds on its own.

Every case gets as many videos as its backbone runs in about ``--seconds`` (a short probe on random frames
decides; at least three chunks), so a fast backbone is not timed over a fraction of a second and a slow one does
not take minutes. Shared CPUs vary by about 10 % from one run to the next, so the measurements are interleaved in
``rounds`` (each round: backbone alone, then the full run with each worker count); rates are medians over the
rounds and each ratio is the median of the rounds' ratios (a round's runs are back to back), shown with their
range. The goal (full >= 90 % of the backbone alone) is judged on the steady rate.

On a CPU the decoding workers and the backbone share the cores. Each full run's CPU time is read from the
process and its (joined) workers: *cores busy* is that time over wall time x cores, *decode share* the workers'
part of it. With the cores busy, the backbone keeps about (1 - decode share) of them, whatever the pipeline does:
a ratio below the goal with the cores busy is the cost of decoding on the same cores, not a stall. The *ceiling*
makes that a number: the backbone-alone call's CPU seconds per frame plus one frame's serial decoding, against the
cores' CPU seconds; *steady / ceiling* is what the pipeline keeps of the most this machine allows. The
*decode apart* rows (machines of 2 cores or more) give the backbone all cores but one (for it and alone) and
run one decoding worker: the situation of a GPU, where decoding only has to keep up. ``auto`` precision is
measured only where it differs from fp32 (bf16 on CPUs with AVX-512 BF16 or AMX).

Inputs: input 224 uses 256 px videos resized to short side 256 and centre-cropped to 224 (the literature's
preprocessing); input 112 uses the default 128 px synthetic videos resized to short side 112 (the crop keeps
the whole frame). ``efficientnet_lite0`` runs with its packaged ImageNet weights, ``resnet50`` with
``weights="none"`` (random initialisation: ImageNet files are not available offline; the speed is the same).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from benchmarks._common import Table, machine_line, percent, timed, verdict
from fsar._platform import usable_cores
from fsar.datasets.catalog import load_dataset
from fsar.datasets.synthetic import synthesize
from fsar.extract.backbone import Backbone, Precision, load_backbone, resolve_precision
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
#: Backbone-alone seconds each measurement aims at (the dataset of a case is sized from a probe).
SECONDS = 5.0
CHUNK_VIDEOS = 16  # the extract default
#: At least three chunks, so the steady rate spans two chunks or more.
MIN_VIDEOS = 3 * CHUNK_VIDEOS
ROUNDS = 3
CORES = usable_cores()
THREADS = torch.get_num_threads()  # torch's default: what the backbone uses unless a case says otherwise


@dataclass(frozen=True)
class Case:
    backbone: str
    weights: str
    input_size: int
    precision: str
    #: decode on a core of its own: the backbone gets all cores but one, one decoding worker
    apart: bool = False

    @property
    def threads(self) -> int:
        return max(1, CORES - 1) if self.apart else THREADS

    @property
    def workers(self) -> tuple[int, ...]:
        return (1,) if self.apart else WORKERS


@dataclass(frozen=True)
class FullRun:
    whole_fps: float  # frames / seconds of the whole run_extraction call
    steady_fps: float  # frames committed after the first chunk / time from the first commit to the last
    cores_busy: float  # CPU seconds of the process and its workers / (wall seconds x cores)
    decode_share: float  # the workers' part of those CPU seconds


@dataclass(frozen=True)
class Measured:
    frames: int
    alone_fps: list[float]  # backbone alone, per round
    alone_cpu_s: list[float]  # CPU seconds of the process in each backbone-alone call
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
    def cores_busy(self) -> float:
        return self._median(lambda run, _: run.cores_busy)

    @property
    def decode_share(self) -> float:
        return self._median(lambda run, _: run.decode_share)

    def ceiling_fps(self, apart: bool) -> float:
        """The most a full run can reach when decoding needs CPU time too.

        Sharing the cores, each frame costs the backbone's CPU seconds (as measured alone) plus its decoding's
        (serial decode ms / frames), and the cores give ``CORES`` CPU seconds a second; decoding apart, one core
        decodes and the backbone keeps its rate alone. Never above the backbone alone.
        """
        decode = self.decode_s_per_video / FRAMES
        if apart:
            return min(self.backbone_fps, 1 / decode)
        backbone = float(np.median(self.alone_cpu_s)) / self.frames
        return min(self.backbone_fps, CORES / (backbone + decode))


def spread(values: list[float]) -> str:
    """``88-97`` (per cent) for the range of ``values``."""
    return f"{100 * min(values):.0f}-{100 * max(values):.0f}"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_dataset(out: Path, video_px: int, videos: int) -> Path:
    """A synthetic dataset of at least ``videos`` mp4 files (3 classes: one per split)."""
    synthesize(out, classes=3, videos_per_class=max(1, math.ceil(videos / 3)), size=video_px, seed=0,
               progress=False)
    return out


def first_videos(root: Path, videos: int, out: Path) -> Path:
    """Split lists (a ``split_dir``) that keep the first ``videos`` videos of the dataset at ``root``, in order."""
    chosen = load_dataset("synthetic", root).videos[:videos]
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = [f"{v.class_name}/{v.id}\n" for v in chosen if v.split == split]
        (out / f"{split}list.txt").write_text("".join(lines))
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


def probe_fps(backbone: Backbone, case: Case) -> float:
    """Frames/s of the backbone on 64 random frames (after a warm-up call of the same batch), to size the case's
    dataset."""
    frames = np.random.default_rng(0).integers(0, 256, (64, case.input_size, case.input_size, 3), np.uint8)
    precision: Precision = case.precision  # type: ignore[assignment]
    with torch_threads(case.threads):
        backbone.extract(frames, batch_size=64, precision=precision)  # oneDNN builds its primitives per shape
        seconds, _ = timed(lambda: backbone.extract(frames, batch_size=64, precision=precision))
    return frames.shape[0] / seconds


def videos_for(fps: float, seconds: float) -> int:
    """Videos (whole chunks, at least :data:`MIN_VIDEOS`) that a backbone of ``fps`` runs in ``seconds``."""
    chunks = math.ceil(seconds * fps / FRAMES / CHUNK_VIDEOS)
    return max(MIN_VIDEOS, chunks * CHUNK_VIDEOS)


def full_run(case: Case, root: Path, split_dir: Path, workers: int, out: Path) -> FullRun:
    """Frame rates and CPU use of one whole run_extraction call into a new store."""
    config = ExtractConfig(dataset="synthetic", root=root, backbone=case.backbone, weights=case.weights,
                           frames=FRAMES, short_side=INPUTS[case.input_size][1], input_size=case.input_size,
                           split_dir=split_dir, device="cpu", precision=case.precision, workers=workers,
                           batch_frames=64, chunk_videos=CHUNK_VIDEOS)
    before = os.times()
    seconds, summary = timed(lambda: run_extraction(config, out, progress=False))
    after = os.times()  # the workers are joined by now: their CPU time is in the children's
    own = after.user + after.system - before.user - before.system
    children = after.children_user + after.children_system - before.children_user - before.children_system
    busy, share = (own + children) / (seconds * CORES), children / max(own + children, 1e-9)
    whole = summary.extracted * FRAMES / seconds
    commits = summary.committed_s
    if len(commits) < 2:  # one chunk: no steady part to measure
        return FullRun(whole, whole, busy, share)
    after_first = (summary.extracted - CHUNK_VIDEOS) * FRAMES  # two commits or more: more than one chunk
    return FullRun(whole, after_first / (commits[-1] - commits[0]), busy, share)


def measure(case: Case, backbone: Backbone, load_s: float, root: Path, split_dir: Path, frames: NDArray[np.uint8],
            decode_s: float, scratch: Path, rounds: int) -> Measured:
    """Backbone alone and the full runs, interleaved over ``rounds``."""
    precision: Precision = case.precision  # type: ignore[assignment]
    alone: list[float] = []
    alone_cpu: list[float] = []
    full: dict[int, list[FullRun]] = {w: [] for w in case.workers}
    with torch_threads(case.threads):
        backbone.extract(frames[:64], batch_size=64, precision=precision)  # warm-up: oneDNN builds its primitives
        for r in range(rounds):
            before = os.times()
            seconds, _ = timed(lambda: backbone.extract(frames, batch_size=64, precision=precision))
            after = os.times()
            alone.append(frames.shape[0] / seconds)
            alone_cpu.append(after.user + after.system - before.user - before.system)
            for w in case.workers:
                out = scratch / f"{case.backbone}-{case.input_size}-{case.precision}-{case.apart}-w{w}-r{r}.zarr"
                full[w].append(full_run(case, root, split_dir, w, out))
                shutil.rmtree(out)
    return Measured(frames.shape[0], alone, alone_cpu, full, load_s, decode_s)


def cases(quick: bool, inputs: tuple[int, ...] = tuple(INPUTS), backbones: tuple[str, ...] | None = None
          ) -> list[Case]:
    """The rows: every backbone, input and distinct precision with all cores, then (2 cores or more) the fastest
    precision with decoding apart."""
    if quick:
        return [Case("efficientnet_lite0", "imagenet", 112, "auto")]
    cpu = torch.device("cpu")
    distinct = [p for p in PRECISIONS if p == "fp32" or resolve_precision(p, cpu) != torch.float32]  # type: ignore[arg-type]
    chosen = [(b, w, size) for size in inputs for b, w in BACKBONES if backbones is None or b in backbones]
    shared = [Case(b, w, size, p) for b, w, size in chosen for p in distinct]
    apart = [Case(b, w, size, distinct[0], apart=True) for b, w, size in chosen] if CORES >= 2 else []
    return shared + apart


def tables(quick: bool = False, seconds: float = SECONDS, rounds: int = ROUNDS,
           inputs: tuple[int, ...] = tuple(INPUTS), backbones: tuple[str, ...] | None = None) -> list[Table]:
    """The extraction table; ``quick``: one small case (seconds), for the smoke test. ``inputs`` and
    ``backbones`` choose the rows (default: all); each case runs its backbone about ``seconds`` per measurement."""
    rounds = 1 if quick else rounds
    table = Table("Extraction: full run vs backbone alone (frames/s, same run)",
                  ["backbone", "input", "precision", "threads / workers", "frames", "backbone alone f/s",
                   "full f/s steady", "steady / alone (rounds)", f"goal >= {percent(GOAL)}", "ceiling f/s",
                   "steady / ceiling", "cores busy",
                   "decode share", "whole call f/s", "whole / alone", "start-up s", "decode ms/video",
                   "backbone load s"])
    chosen = cases(quick, inputs, backbones)
    with tempfile.TemporaryDirectory(prefix="fsar-bench-extract-") as tmp:
        scratch = Path(tmp)
        for size in dict.fromkeys(c.input_size for c in chosen):
            size_cases = [c for c in chosen if c.input_size == size]
            loaded: dict[str, tuple[float, Backbone]] = {}
            for name, weights in dict.fromkeys((c.backbone, c.weights) for c in size_cases):
                loaded[name] = timed(lambda: load_backbone(name, weights, "cpu"))  # noqa: B023 (called at once)
            need = {c: 3 if quick else videos_for(probe_fps(loaded[c.backbone][1], c), seconds) for c in size_cases}
            root = make_dataset(scratch / f"synthetic-{size}", INPUTS[size][0], max(need.values()))
            frames, decode_s = preload(root, size)
            for case in size_cases:
                n = need[case]
                lists = first_videos(root, n, scratch / f"lists-{size}-{n}")
                load_s, backbone = loaded[case.backbone]
                m = measure(case, backbone, load_s, root, lists, frames[: n * FRAMES], decode_s, scratch, rounds)
                ceiling = m.ceiling_fps(case.apart)
                dtype = str(resolve_precision(case.precision, torch.device("cpu"))).removeprefix("torch.")  # type: ignore[arg-type]
                table.add(case.backbone + (" (decode apart)" if case.apart else ""), size,
                          f"{case.precision} ({dtype})", f"{case.threads} / {m.best_workers}", m.frames,
                          f"{m.backbone_fps:.1f}", f"{m.steady_fps:.1f}",
                          f"{percent(m.ratio)} ({spread(m.steady_ratios(m.best_workers))})",
                          verdict(m.ratio >= GOAL), f"{ceiling:.1f}", percent(m.steady_fps / ceiling),
                          percent(m.cores_busy), percent(m.decode_share),
                          f"{m.whole_fps:.1f}", percent(m.whole_ratio), f"{m.startup_s:.1f}",
                          f"{1000 * m.decode_s_per_video:.1f}", f"{m.load_s:.2f}")
    table.notes += _notes(seconds, rounds)
    return [table]


def _notes(seconds: float, rounds: int) -> list[str]:
    """The notes under the extraction table: the machine, then what each column means."""
    return [
        machine_line(),
        "input 224: 256 px videos, short side 256, centre crop 224; input 112: 128 px videos, short side 112",
        f"frames: each case's videos x {FRAMES}, as many as its backbone runs in about {seconds:g} s "
        f"(at least {MIN_VIDEOS} videos)",
        f"{rounds} interleaved rounds (backbone alone, then the full run with each worker count, "
        f"{'/'.join(map(str, WORKERS))} with all cores; the best shown): rates are medians over the rounds, ratios "
        "the median (and range) of each round's ratio; backbone alone = Backbone.extract on the preloaded uint8 "
        "frames after a warm-up call, with the same torch threads as the full run",
        f"full = run_extraction (decode, backbone, write) into a new store, chunks of {CHUNK_VIDEOS} videos; steady: "
        "the frames committed after the first chunk over the time from its commit to the last one (the rate of a "
        "long extraction); whole call: all frames over the whole call; start-up s: how much longer the whole "
        "call took than its frames at the steady rate (backbone load, store, workers, the first chunk's decode)",
        f"cores busy: CPU seconds of the process and its decoding workers over wall seconds x {CORES} cores (whole "
        "call); decode share: the workers' part of those CPU seconds. With the cores busy the backbone keeps about "
        "(1 - decode share) of them",
        "ceiling: the most a full run can reach with decoding's CPU time counted: sharing the cores, a frame "
        "costs the backbone's CPU seconds (process CPU time of the backbone-alone call per frame) plus its decode "
        f"(decode ms/video / {FRAMES}), against {CORES} CPU seconds a second; decoding apart, the decoder's core "
        "must keep up and the backbone keeps its rate alone. Capped at the backbone alone. A ceiling below the "
        "goal is the machine's limit, not the pipeline's; steady / ceiling is what the pipeline keeps of it",
        "decode apart: the backbone gets all cores but one (alone too) and one worker decodes: the case of a GPU, "
        "where decoding only has to keep up",
        "decode ms/video: serial decode + sample + crop of one video in the main process (8 frames)",
        "resnet50 with weights=none (ImageNet file not available offline; same speed)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny case, seconds (smoke test)")
    parser.add_argument("--seconds", type=float, default=SECONDS,
                        help="backbone-alone seconds each measurement aims at (default: %(default)s)")
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
    for table in tables(args.quick, args.seconds, args.rounds, inputs, backbones):
        print(table.markdown())


if __name__ == "__main__":
    main()
