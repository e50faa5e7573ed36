"""Training memory and speed on an SSv2-full-sized cache: features streamed from the cache vs held in memory.

The cache has the real SSv2-full (OTAM) split lists' 71,796 ids (67,013 train videos, 64 classes), T = 8,
4x4 patches, one view, chunks of 16 videos, random float16 features of D dims written through
``create_cache`` + ``write_chunk`` (D = 256 by default: 4.7 GB on disk; the real ResNet-50 D = 2,048 makes
the same cache 8x larger, printed in the notes). Each head trains one epoch in a fresh process per mode
(its own peak RSS, VmHWM), streamed and, where the split fits in half the free memory, in memory; the
ratio is streamed episodes/s over in-memory episodes/s, measured in the same run. Goal: peak RSS <= 4 GB
streamed, episodes/s >= 90 % of in memory. Run: ``python -m benchmarks.train_memory [--quick] [--dim 256]
[--dir FOLDER]`` (the cache is made in FOLDER and deleted afterwards).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from benchmarks._common import Table, ratio
from benchmarks.eval import peak_rss_kb

T, GRID, CHUNK = 8, 4, 16
# (head, -p parameters, episodes per measured epoch at full size): hcl without class-name embeddings (the
# SSv2-full names are anonymised); episodes sized for about a minute per mode on 2 cores.
HEADS = (("ita", {}, 200), ("hcl", {"text_encoder": "none"}, 20))
QUICK_PARAMS = {"ita": {"hidden": "32"}, "hcl": {"heads": "2", "mlp_ratio": "1", "batch_classes": "4"}}
QUICK_LINES = (6, 12)  # the first 6 classes of each split, 12 videos each
RSS_GOAL_GB, RATE_GOAL = 4.0, 0.9


def split_lines(limit: tuple[int, int] | None = None) -> dict[str, list[str]]:
    """The packaged SSv2-full split lists (``<class>/<video>`` lines); with ``limit`` = (classes, videos) only the
    first videos of each split's first classes (a tiny cache that still draws 5-way 5-query episodes)."""
    folder = resources.files("fsar.datasets") / "splits" / "ssv2_OTAM"
    lines = {}
    for split in ("train", "val", "test"):
        text = (folder / f"{split}list07.txt").read_text().split()
        if limit is not None:
            classes, videos = limit
            kept = sorted({line.split("/")[0] for line in text})[:classes]
            text = [line for c in kept for line in [x for x in text if x.split("/")[0] == c][:videos]]
        lines[split] = text
    return lines


def make_cache(path: Path, dim: int, limit: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """An SSv2-full-sized cache of random features (every video done), written chunk by chunk."""
    from fsar.cache.create import create_cache
    from fsar.cache.schema import CacheSpec

    lines = split_lines(limit)
    ids = [line for split in lines for line in lines[split]]
    splits = [split for split in lines for _ in lines[split]]
    names = [c for split in lines for c in sorted({line.split("/")[0] for line in lines[split]})]
    label_of = {c: i for i, c in enumerate(names)}
    labels = [label_of[line.split("/")[0]] for line in ids]
    spec = CacheSpec(dataset="ssv2", backbone="random", weights="none", weights_sha256="", feature_dim=dim,
                     frames=T, views=1, patches=GRID, chunk_videos=CHUNK)
    cache = create_cache(path, spec, ids, labels, splits, names)
    rng = np.random.default_rng(seed)
    for start, stop in cache.chunk_ranges():
        n = stop - start
        patches = rng.standard_normal((n, 1, T, GRID * GRID, dim), dtype=np.float32).astype(np.float16)
        cache.write_chunk("rgb", start, patches.mean(axis=3), np.zeros(n, np.int8), [""] * n,
                          np.full(n, T, np.int32), patches)
    return path


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _child(cache: str, matcher: str, params: str, episodes: int, stream: bool) -> None:
    """One epoch of ``matcher`` in this fresh process: load and training seconds, and the peak RSS."""
    import torch

    from fsar.cache.store import open_cache
    from fsar.matchers.head import Head, config_from_params
    from fsar.matchers.registry import get
    from fsar.runner import stream as streaming
    from fsar.runner.distributed import World
    from fsar.runner.train import TrainConfig, _per_step, _run_epoch, _step_videos, make_optimiser

    info = get(matcher)
    config = TrainConfig(matcher=matcher, episodes_per_epoch=episodes, epochs=1, params=json.loads(params),
                         device="cpu")
    opened = open_cache(cache)
    base_kb = peak_rss_kb()
    torch.manual_seed(0)
    head: Head = info.obj({"rgb": opened.spec.feature_dim}, T, config_from_params(info.obj.Config, config.params))
    settings = config.optimiser_settings(info.obj.defaults)
    start = time.perf_counter()
    pool = streaming.train_pool(opened, "rgb")
    data = streaming.open_features(opened, pool, ("rgb",), info.needs_patches, False, stream)
    load_s = time.perf_counter() - start
    video = 4 * math.prod(streaming.video_shape(opened, info.needs_patches))
    window = streaming.window_steps(_step_videos(head, config, settings), video)
    plans = streaming.plan_epoch(pool, config, 1, _per_step(config, settings), head.balanced_batch)
    start = time.perf_counter()
    _run_epoch(head, streaming.prefetched(plans, data, window), None, config, 1, settings,
               make_optimiser(list(head.parameters()), settings), torch.amp.GradScaler("cuda", enabled=False),
               torch.device("cpu"), False, World())
    seconds = time.perf_counter() - start
    print(json.dumps({"load_s": load_s, "seconds": seconds, "episodes": episodes, "base_kb": base_kb,
                      "peak_kb": peak_rss_kb(), "window": window}))


def child_run(cache: Path, matcher: str, params: dict[str, str], episodes: int, stream: bool) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.train_memory", "--child", str(cache), matcher,
                          json.dumps(params), str(episodes), "stream" if stream else "memory"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise RuntimeError(f"{matcher} training failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(cache: Path, quick: bool) -> Table:
    from fsar.cache.store import open_cache
    from fsar.matchers.registry import get
    from fsar.runner.stream import split_bytes, train_pool

    opened = open_cache(cache)
    pool = train_pool(opened, "rgb")
    table = Table(f"Training on an SSv2-full-sized cache ({len(pool.ids):,} train videos, D={opened.spec.feature_dim}, "
                  f"4x4 patches): streamed vs in memory",
                  ["head", "input", "split in memory", "mode", "load s", "episodes / s", "vs in memory",
                   "peak RSS", "window"])
    for matcher, params, episodes in HEADS:
        patches = get(matcher).needs_patches
        size = split_bytes(opened, pool, ("rgb",), patches)
        params, episodes = (params | QUICK_PARAMS[matcher], 2) if quick else (params, episodes)
        runs = {"stream": child_run(cache, matcher, params, episodes, True)}
        if size < _available_bytes() / 2:
            runs["memory"] = child_run(cache, matcher, params, episodes, False)
        held = runs.get("memory")
        for mode, r in runs.items():
            rate = r["episodes"] / r["seconds"]
            vs = ratio(rate, held["episodes"] / held["seconds"]) if held else "- (does not fit)"
            table.add(matcher, "patches" if patches else "frames", f"{size / 1e9:.2f} GB", mode, f"{r['load_s']:.1f}",
                      f"{rate:.2f}", vs, f"{r['peak_kb'] / 1e6:.2f} GB", int(r["window"]))
    return table


def tables(quick: bool = False, dim: int | None = None, folder: Path | None = None) -> list[Table]:
    dim = dim or (32 if quick else 256)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fsar-train-memory-", dir=folder))
    try:
        start = time.perf_counter()
        cache = make_cache(workdir / "ssv2.zarr", dim, QUICK_LINES if quick else None)
        made_s, size = time.perf_counter() - start, disk_bytes(workdir / "ssv2.zarr")
        table = measure(cache, quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    full = size * 2048 / dim
    table.notes = [
        f"cache made in {made_s:.0f} s, {size / 1e9:.2f} GB on disk (random features barely compress; at the "
        f"real D = 2,048 the same cache is about {full / 1e9:.0f} GB)",
        "one epoch per head and mode, each in a fresh process; peak RSS = its VmHWM (torch, zarr and the head "
        "included); load s = opening the training features (the whole split in memory; checks when streamed)",
        f"goals: streamed peak RSS <= {RSS_GOAL_GB:g} GB, streamed episodes/s >= {RATE_GOAL:.0%} of in memory; "
        f"window = steps read ahead together (at most two windows held)",
    ]
    return [table]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, metavar=("CACHE", "HEAD", "PARAMS", "EPISODES", "MODE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dim", type=int, help="feature dimension (default 256; 32 with --quick)")
    parser.add_argument("--dir", type=Path, help="where to make the cache (default: the system's temp folder)")
    args = parser.parse_args(argv)
    if args.child:
        cache, matcher, params, episodes, mode = args.child
        _child(cache, matcher, params, int(episodes), mode == "stream")
        return
    for table in tables(args.quick, args.dim, args.dir):
        print(table.markdown())


if __name__ == "__main__":
    main()

