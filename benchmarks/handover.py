"""Hand-over of decoded videos from the decoding workers to the extraction process: its CPU per video.

Run: ``python -m benchmarks.handover [--quick] [--rounds R]``. The extraction process receives every
video's frames from the DataLoader workers; whatever CPU that costs it is taken from what it can feed a
GPU (on a GPU machine one process per GPU receives every video). For input 224 (256 px videos, 8
frames of 224 x 224 x 3: 1.2 MB a video) and 112 (128 px videos: 0.3 MB), two workers decode the same
videos and the process only receives them (no backbone), interleaved over ``rounds``:

- from a plain DataLoader, one video per item pickled through its pipes (the baseline: what FSAR
  repositories do);
- from :func:`fsar.extract.run.decoded_videos` with the ring turned off (tasks of several videos, still
  pickled);
- from fsar's default (the same tasks, frames through the shared :class:`~fsar.extract.ring.FrameRing`).

The figure is the process's own CPU time (user + system, all its threads; the workers' decoding is not in
it) per video, median of the rounds, including the loader's start (forking two workers), which a long run
spreads over many more videos.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import Table, machine_line, ratio
from benchmarks.extract import CHUNK_VIDEOS, INPUTS, make_dataset
from fsar import _heap as heap
from fsar.datasets.catalog import VideoEntry, load_dataset
from fsar.extract.ring import available as ring_available
from fsar.extract.run import TASK_VIDEOS, decoded_videos
from fsar.extract.source import SourceConfig, VideoItem, load_video
from fsar.extract.transforms import CropConfig

VIDEOS = 192
WORKERS = 2
ROUNDS = 3
AHEAD = CHUNK_VIDEOS + 1  # videos in flight, as run_extraction keeps them with the default chunks


class _Plain(torch.utils.data.Dataset[VideoItem]):
    def __init__(self, jobs: list[tuple[int, VideoEntry]], config: SourceConfig) -> None:
        self.jobs, self.config = jobs, config

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> VideoItem:
        row, entry = self.jobs[i]
        return load_video(row, entry.id, entry.path, self.config)


def plain_loader(jobs: list[tuple[int, VideoEntry]], config: SourceConfig) -> Iterator[VideoItem]:
    """The baseline: one video per item, about as many in flight as fsar keeps, pickled to this process."""
    heap.trim()
    yield from torch.utils.data.DataLoader(_Plain(jobs, config), batch_size=None, num_workers=WORKERS,
                                           prefetch_factor=-(-AHEAD // WORKERS))


def main_cpu_ms(videos: Callable[[], Iterator[VideoItem]]) -> float:
    """CPU milliseconds of this process per video received from ``videos()``."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    received = sum(1 for _ in videos())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return 1000 * cpu / received


def tables(quick: bool = False, rounds: int = ROUNDS) -> list[Table]:
    """Main-process CPU per video, pipe vs ring, at each input size; ``quick``: a few videos, one round."""
    videos, rounds = (6, 1) if quick else (VIDEOS, rounds)
    table = Table("Hand-over of decoded videos to the extraction process (its CPU per video, same run)",
                  ["input", "MB / video", "videos", "plain DataLoader ms/video", f"tasks of {TASK_VIDEOS}, pipe",
                   f"tasks of {TASK_VIDEOS}, ring (fsar)", "fsar vs plain",
                   "videos/s one process takes (plain -> fsar)"])
    heap.retain_freed_blocks()  # as a run with a backbone loaded has it
    with tempfile.TemporaryDirectory(prefix="fsar-bench-handover-") as tmp:
        for size, (video_px, short) in INPUTS.items():
            root = make_dataset(Path(tmp) / f"synthetic-{size}", video_px, videos)
            entries = load_dataset("synthetic", root).videos[:videos]
            jobs = list(enumerate(entries))
            config = SourceConfig(frames=8, crop=CropConfig(resize_short=short, crop=size, flip=False))
            ways: dict[str, Callable[[], Iterator[VideoItem]]] = {
                "plain": lambda: plain_loader(jobs, config),  # noqa: B023 (called within the iteration)
                "pipe": lambda: decoded_videos(jobs, config, WORKERS, ahead=AHEAD, ring=False),  # noqa: B023
                "ring": lambda: decoded_videos(jobs, config, WORKERS, ahead=AHEAD),  # noqa: B023
            }
            ms: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(rounds):
                for way, videos_of in ways.items():
                    ms[way].append(main_cpu_ms(videos_of))
            plain, pipe, ring = (float(np.median(ms[way])) for way in ways)
            table.add(size, f"{8 * size * size * 3 / 1e6:.2f}", len(jobs), f"{plain:.2f}", f"{pipe:.2f}",
                      f"{ring:.2f}" + ("" if ring_available() else " (no ring here: pipe)"),
                      f"{ratio(plain, ring)} less", f"{1000 / plain:,.0f} -> {1000 / ring:,.0f}")
    table.notes += [
        machine_line(),
        f"{WORKERS} DataLoader workers decode (h264 mp4, 8 frames a video, centre crop); the process only receives; "
        f"medians of {rounds} interleaved rounds; CPU time of the receiving process (getrusage), loader start "
        "included",
        "plain DataLoader: one video per item, pickled through the DataLoader's queue; tasks of "
        f"{TASK_VIDEOS}: {TASK_VIDEOS} videos per worker task; pipe: pickled; ring: frames written by the worker "
        "into a shared slot, copied out once by the process (fsar's default on Linux)",
        "videos/s one process takes: 1000 / ms, the most one extraction process could receive if receiving "
        "were all it did (the backbone's own CPU work, batching and the writer thread come on top)",
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few videos, one round (smoke test)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds; medians are reported")
    args = parser.parse_args()
    for table in tables(args.quick, args.rounds):
        print(table.markdown())


if __name__ == "__main__":
    main()
