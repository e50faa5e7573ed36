"""Training and evaluation on an SSv2-full-sized cache: features streamed from the cache vs held in memory.

The cache has the real SSv2-full (OTAM) split lists' 71,796 ids (67,013 train videos, 64 classes; 2,857 test
videos, 24 classes), T = 8, 4x4 RGB patches, RGB and flow frames, one view, chunks of 16 videos, random float16
features of D dims written through ``create_cache`` + ``write_chunk`` (D = 256 by default: about 5 GB on disk;
the real ResNet-50 D = 2,048 makes it 8x larger, printed in the notes). Each learned head trains one epoch in
a fresh process per mode (its own peak RSS, VmHWM), streamed and, where the split fits in half the free memory,
in memory; the ratio is streamed episodes/s over in-memory episodes/s, measured in the same run. Goal: peak RSS
<= 4 GB streamed, episodes/s >= 90 % of in memory. After its streamed epoch each head evaluates test episodes
from the cache (reading the list's features, then scoring, each video encoded once), and a parameter-free
matcher evaluates 10,000 test episodes through ``evaluate()`` in a fresh process.
Run: ``python -m benchmarks.train_memory [--quick] [--dim 256] [--dir FOLDER]`` (the cache is made in FOLDER
and deleted afterwards).
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
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Table, verdict
from benchmarks.eval import peak_rss_kb

T, GRID, CHUNK = 8, 4, 16
# (head, -p parameters, episodes per measured epoch at full size, rounds): hcl without class-name embeddings
# (the SSv2-full names are anonymised); 1,000 episodes where a head trains them in well under a minute on 2
# cores, fewer (whole optimiser steps: tsjm and trx take 16 episodes per step) for the heads that take seconds
# per episode. Epochs of a few seconds vary most between runs on a shared machine: more interleaved rounds of
# (streamed, in memory) for those.
HEADS = (("ita", {}, 1000, 4), ("rvn", {}, 1000, 4), ("tap", {}, 40, 2), ("trx", {}, 64, 2), ("tsjm", {}, 160, 4),
         ("hcl", {"text_encoder": "none"}, 20, 2), ("m3net", {}, 20, 2))
# --quick (the tests): one head per kind of input, tiny.
QUICK_PARAMS = {"ita": {"hidden": "32"}, "tsjm": {}, "hcl": {"heads": "2", "mlp_ratio": "1", "batch_classes": "4"}}
QUICK_LINES = (6, 12)  # the first 6 classes of each split, 12 videos each
RSS_GOAL_GB, RATE_GOAL = 4.0, 0.9
HEAD_EVAL_EPISODES, FREE_EVAL_EPISODES = 1000, 10_000  # 5-way 1-shot (heads) and 5-shot (otam), 1 query/class


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
                     frames=T, views=1, patches=GRID, chunk_videos=CHUNK, modalities=("rgb", "flow"))
    cache = create_cache(path, spec, ids, labels, splits, names)
    rng = np.random.default_rng(seed)
    for start, stop in cache.chunk_ranges():
        n = stop - start
        ok, no_error, frames = np.zeros(n, np.int8), [""] * n, np.full(n, T, np.int32)
        patches = rng.standard_normal((n, 1, T, GRID * GRID, dim), dtype=np.float32).astype(np.float16)
        cache.write_chunk("rgb", start, patches.mean(axis=3), ok, no_error, frames, patches)
        # Flow frames for the two-stream head; no head reads flow patches, so they are zeros (cheap to make).
        flow = rng.standard_normal((n, 1, T, dim), dtype=np.float32).astype(np.float16)
        cache.write_chunk("flow", start, flow, ok, no_error, frames, np.zeros_like(patches))
    return path


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _child(cache: str, matcher: str, params: str, episodes: int, stream: bool, evaluate: int) -> None:
    """One epoch of ``matcher`` in this fresh process: load and training seconds, and the peak RSS; then
    ``evaluate`` test episodes with the trained head."""
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
    modalities = config.modalities()
    opened = open_cache(cache)
    base_kb = peak_rss_kb()
    torch.manual_seed(0)
    head: Head = info.obj({m: opened.spec.feature_dim for m in modalities}, T,
                          config_from_params(info.obj.Config, config.params))
    settings = config.optimiser_settings(info.obj.defaults)
    start = time.perf_counter()
    pool = streaming.train_pool(opened, "rgb")
    data = streaming.open_features(opened, pool, modalities, info.needs_patches, False, stream)
    load_s = time.perf_counter() - start
    video = 4 * len(modalities) * math.prod(streaming.video_shape(opened, info.needs_patches))
    window = streaming.window_steps(_step_videos(head, config, settings), video)
    plans = streaming.plan_epoch(pool, config, 1, _per_step(config, settings), head.balanced_batch)
    start = time.perf_counter()
    _run_epoch(head, streaming.prefetched(plans, data, window), None, config, 1, settings,
               make_optimiser(list(head.parameters()), settings), torch.amp.GradScaler("cuda", enabled=False),
               torch.device("cpu"), False, World())
    seconds = time.perf_counter() - start
    result = {"load_s": load_s, "seconds": seconds, "episodes": episodes, "base_kb": base_kb,
              "peak_kb": peak_rss_kb(), "window": window}
    del data
    if evaluate:
        result |= _evaluate_head(opened, head.eval(), matcher, modalities, info.needs_patches, evaluate)
    print(json.dumps(result))


def _evaluate_head(cache: Any, head: Any, matcher: str, modalities: tuple[str, ...], patches: bool, n: int
                   ) -> dict[str, float]:
    """``n`` 5-way 1-shot test episodes scored by ``head`` as ``fsar eval`` scores them: the list's features read
    from the cache once, then every episode (each video encoded once where the head allows it)."""
    import torch

    from fsar.episodes import sample_episodes
    from fsar.episodes.pool import split_pool
    from fsar.runner.checkpoint import head_scorer
    from fsar.runner.features import load_features
    from fsar.runner.scoring import score_all

    ids, classes, _ = split_pool(cache, "test", modalities[0])
    listing = sample_episodes(ids, classes, way=5, shot=1, query=1, n=n, seed=0, split="test")
    start = time.perf_counter()
    loaded = load_features(cache, listing, modalities, patches)
    read_s = time.perf_counter() - start
    with torch.no_grad():
        scores = score_all(head_scorer(head, torch.device("cpu"), matcher), loaded, listing, False, matcher)
    score_s = time.perf_counter() - start - read_s
    assert np.isfinite(scores[matcher]).all()
    return {"eval_episodes": n, "eval_videos": len(listing.ids), "eval_read_s": read_s, "eval_score_s": score_s,
            "eval_peak_kb": peak_rss_kb()}


def child_run(cache: Path, matcher: str, params: dict[str, str], episodes: int, stream: bool, evaluate: int = 0
              ) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.train_memory", "--child", str(cache), matcher,
                          json.dumps(params), str(episodes), "stream" if stream else "memory", str(evaluate)],
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


def measure(cache: Path, quick: bool, heads: Sequence[str] | None = None) -> list[Table]:
    from fsar.cache.store import open_cache
    from fsar.matchers.registry import get
    from fsar.runner.stream import split_bytes, train_pool

    opened = open_cache(cache)
    pool = train_pool(opened, "rgb")
    train = Table(f"Training on an SSv2-full-sized cache ({len(pool.ids):,} train videos, D={opened.spec.feature_dim}, "
                  f"4x4 patches): streamed vs in memory",
                  ["head", "input", "split in memory", "mode", "episodes", "load s", "episodes / s", "vs in memory",
                   "peak RSS", "goal", "window"])
    n_eval = 20 if quick else HEAD_EVAL_EPISODES
    evals = Table(f"Evaluating each trained head on the cache's test split: {n_eval:,} 5-way 1-shot episodes, "
                  f"1 query per class",
                  ["head", "input", "distinct videos", "read s", "scoring s", "ms / episode", "peak RSS"])
    for matcher, params, episodes, n_rounds in HEADS:
        if (quick and matcher not in QUICK_PARAMS) or (heads is not None and matcher not in heads):
            continue
        info = get(matcher)
        modalities = ("rgb", "flow") if info.needs_flow else ("rgb",)
        size = split_bytes(opened, pool, modalities, info.needs_patches)
        params, episodes = (params | QUICK_PARAMS[matcher], 2) if quick else (params, episodes)
        fits = size < _available_bytes() / 2
        rounds: list[dict[str, dict[str, float]]] = []
        for k in range(1 if quick else n_rounds):  # interleaved: a shared machine's drift hits both modes alike
            rounds.append({"stream": child_run(cache, matcher, params, episodes, True, n_eval if k == 0 else 0)})
            if fits:
                rounds[-1]["memory"] = child_run(cache, matcher, params, episodes, False)
        what = ("patches" if info.needs_patches else "frames") + (" (rgb+flow)" if info.needs_flow else "")
        rates = {mode: [r[mode]["episodes"] / r[mode]["seconds"] for r in rounds] for mode in rounds[0]}
        ratios = [r["memory"]["seconds"] / r["stream"]["seconds"] for r in rounds] if fits else []
        for mode in rounds[0]:
            rate = float(np.median(rates[mode]))
            peak = max(r[mode]["peak_kb"] for r in rounds) / 1e6
            vs, goal = "- (does not fit)", "-"
            if fits:
                vs = "1.00x" if mode == "memory" else \
                    f"{np.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            if mode == "stream":
                met_rss, met_rate = peak <= RSS_GOAL_GB, not fits or float(np.median(ratios)) >= RATE_GOAL
                goal = "met" if met_rss and met_rate else f"RSS {verdict(met_rss)}, rate {verdict(met_rate)}"
            first = rounds[0][mode]
            train.add(matcher, what, f"{size / 1e9:.2f} GB", mode, int(first["episodes"]), f"{first['load_s']:.1f}",
                      f"{rate:.2f}", vs, f"{peak:.2f} GB", goal, int(first["window"]))
        r = rounds[0]["stream"]  # evaluation runs in the first round's streamed process
        evals.add(matcher, what, f"{int(r['eval_videos']):,}", f"{r['eval_read_s']:.1f}", f"{r['eval_score_s']:.1f}",
                  f"{1e3 * r['eval_score_s'] / r['eval_episodes']:.1f}", f"{r['eval_peak_kb'] / 1e6:.2f} GB")
    evals.notes = [
        "in the process that trained the head (streamed), after its epoch: the list's features read from the cache "
        "once (read s), then every episode scored as `fsar eval` scores it, each distinct video encoded once where "
        "the head allows it (scoring s); peak RSS of that process over training and evaluation",
    ]
    return [train, evals, parameter_free(opened, cache, quick)]


def parameter_free(opened: Any, cache: Path, quick: bool) -> Table:
    """otam on 5-way 5-shot test episodes through ``evaluate()`` in a fresh process (peak RSS its own)."""
    from benchmarks.eval import child_run as eval_child
    from fsar.episodes import sample_episodes, save_episodes
    from fsar.episodes.pool import split_pool

    n = 200 if quick else FREE_EVAL_EPISODES
    ids, classes, _ = split_pool(opened, "test", "rgb")
    listing = sample_episodes(ids, classes, way=5, shot=5, query=1, n=n, seed=0, split="test")
    path = save_episodes(listing, cache.parent / "test-5shot.json")
    r = eval_child(cache, path, "otam")
    table = Table(f"Parameter-free evaluation on the cache's test split: otam, {n:,} 5-way 5-shot episodes, "
                  f"1 query per class", ["matcher", "distinct videos", "evaluate() s", "scoring s", "peak RSS"])
    table.add("otam", f"{len(listing.ids):,}", f"{r['wall']:.2f}", f"{r['seconds']:.2f}",
              f"{r['maxrss_kb'] / 1e6:.2f} GB")
    table.notes = ["evaluate() s: open the cache, read the list's features, score, make the record (wall); "
                   "scoring s: the part the record holds"]
    return table


def tables(quick: bool = False, dim: int | None = None, folder: Path | None = None,
           heads: Sequence[str] | None = None) -> list[Table]:
    dim = dim or (32 if quick else 256)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="fsar-train-memory-", dir=folder))
    try:
        start = time.perf_counter()
        cache = make_cache(workdir / "ssv2.zarr", dim, QUICK_LINES if quick else None)
        made_s, size = time.perf_counter() - start, disk_bytes(workdir / "ssv2.zarr")
        result = measure(cache, quick, heads)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    full = size * 2048 / dim
    rounds = sorted({h[3] for h in HEADS})
    result[0].notes = [
        f"cache made in {made_s:.0f} s, {size / 1e9:.2f} GB on disk (random features barely compress; at the "
        f"real D = 2,048 the same cache is about {full / 1e9:.0f} GB)",
        f"one epoch per head and mode, each in a fresh process, {rounds[0]}-{rounds[-1]} interleaved rounds: "
        "episodes/s the median, vs in memory the median (range) of each round's ratio; peak RSS = the highest VmHWM "
        "(torch, zarr and the head included); load s = opening the training features (the whole split in memory; "
        "checks when streamed)",
        f"goals: streamed peak RSS <= {RSS_GOAL_GB:g} GB, streamed episodes/s >= {RATE_GOAL:.0%} of in memory; "
        f"window = steps read ahead together (at most two windows held)",
    ]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=6, metavar=("CACHE", "HEAD", "PARAMS", "EPISODES", "MODE", "EVALUATE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dim", type=int, help="feature dimension (default 256; 32 with --quick)")
    parser.add_argument("--dir", type=Path, help="where to make the cache (default: the system's temp folder)")
    names = ", ".join(h[0] for h in HEADS)
    parser.add_argument("--heads", help=f"comma-separated heads to train (default: all of {names})")
    args = parser.parse_args(argv)
    heads = None if args.heads is None else args.heads.split(",")
    if heads is not None and (unknown := set(heads) - {h[0] for h in HEADS}):
        parser.error(f"unknown head(s) {sorted(unknown)}; choose among {names}")
    if args.child:
        cache, matcher, params, episodes, mode, evaluate = args.child
        _child(cache, matcher, params, int(episodes), mode == "stream", int(evaluate))
        return
    for table in tables(args.quick, args.dim, args.dir, heads):
        print(table.markdown())


if __name__ == "__main__":
    main()

