"""Evaluating a learned head: each distinct video encoded once, against the per-episode path.

HCL (the heaviest per-video encoder: one transformer block over T·P patch tokens) on random features of
24 classes x 12 videos = 288 distinct videos, T = 8, a 4 x 4 patch grid (P = 16), D = 1280 (the
EfficientNet-Lite0 width), 2,000 5-way 1-shot episodes with 1 query per class (10 videos per episode:
20,000 encodings on the per-episode path). Both paths go through ``score_all`` with the same head
(``head_scorer(..., encoded=False)`` is the per-episode path); the per-episode path is timed on the first
``--subset`` episodes and extrapolated to the list, the encoded path runs the whole list (its one-off
encoding included). The scores of the subset are compared between the paths. The notes give the machine's
float32 GEMM rate and the GEMM work of both paths, which bound their ratio: the encoder's per video, the
patch cosines of the matching per episode. Two threads on shared cores slow both paths unevenly: run it on an
otherwise idle machine (``uptime``).
Run: ``python -m benchmarks --only head_eval`` (or ``python -m benchmarks.head_eval``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks._common import Table, ratio, timed, verdict
from fsar.episodes import EpisodeList, sample_episodes
from fsar.matchers.hcl import HCLConfig, HCLHead
from fsar.runner.checkpoint import head_scorer
from fsar.runner.features import LoadedFeatures
from fsar.runner.scoring import score_all

WAY, SHOT, QUERY, T = 5, 1, 1, 8
GOAL = 20.0  # times faster than the per-episode path on the whole list


def _setup(classes: int, per_class: int, episodes: int, grid: int, dim: int
           ) -> tuple[HCLHead, LoadedFeatures, EpisodeList]:
    ids = [f"v{i:04d}" for i in range(classes * per_class)]
    labels = [f"c{i // per_class:02d}" for i in range(classes * per_class)]
    listing = sample_episodes(ids, labels, way=WAY, shot=SHOT, query=QUERY, n=episodes, seed=0)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((len(listing.ids), T, grid * grid, dim), dtype=np.float32)
    torch.manual_seed(0)
    # text_encoder="none": the semantic attention is per episode either way and needs an optional package.
    head = HCLHead({"rgb": dim}, T, HCLConfig(text_encoder="none"))
    with torch.no_grad():  # the spatial position table is made on the first patches seen
        head.encode(torch.from_numpy(features[:1]))
    return head.eval(), LoadedFeatures({"rgb": features}), listing


def _gemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The machine's float32 GEMM rate (best of ``repeats`` n x n products): what bounds both paths."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _flops(grid: int, dim: int) -> tuple[float, float]:
    """GEMM FLOPs of HCL's encoder per video (attention projections, feed-forward, T·P tokens) and of one
    episode's matching (the patch cosines of its Q x S pairs, (T·P)² each)."""
    tokens, mlp = T * grid * grid, HCLConfig().mlp_ratio
    encode = 2 * tokens * (4 + 2 * mlp) * dim**2 + 4 * tokens**2 * dim
    match = 2 * (WAY * QUERY) * (WAY * SHOT) * tokens**2 * dim
    return encode, match


def tables(quick: bool, subset: int = 100) -> list[Table]:
    classes, per_class, n, grid, dim = (6, 4, 20, 2, 64) if quick else (24, 12, 2000, 4, 1280)
    subset = min(subset, n) if not quick else 5
    head, loaded, listing = _setup(classes, per_class, n, grid, dim)
    cpu = torch.device("cpu")
    part = listing.slice(0, subset)
    per_s, per_scores = timed(lambda: score_all(head_scorer(head, cpu, "hcl", encoded=False), loaded, part,
                                                False, "per-episode")["hcl"])
    sub_s, sub_scores = timed(lambda: score_all(head_scorer(head, cpu, "hcl"), loaded, part, False, "encoded")["hcl"])
    enc_s, _ = timed(lambda: score_all(head_scorer(head, cpu, "hcl"), loaded, listing, False, "encoded"))
    per_full = per_s / subset * n
    used = len(np.unique(np.concatenate([listing.query_idx.ravel(), listing.support_idx.ravel()])))
    table = Table(f"Head evaluation: HCL, {n:,} 5-way 1-shot episodes, P = {grid * grid}, D = {dim}",
                  ["path", "episodes timed", "videos encoded", "seconds", "ms / episode", "vs per-episode"])
    table.add("per-episode (head(query, support))", f"{subset:,}", f"{subset * WAY * (SHOT + QUERY):,}",
              f"{per_s:.1f}", f"{1e3 * per_s / subset:.1f}", "1x")
    table.add(f"per-episode, extrapolated to {n:,}", "-", f"{n * WAY * (SHOT + QUERY):,}", f"{per_full:.0f}",
              f"{1e3 * per_s / subset:.1f}", "1x")
    table.add(f"encoded once, first {subset:,} episodes", f"{subset:,}",
              f"{len(np.unique(np.concatenate([part.query_idx.ravel(), part.support_idx.ravel()]))):,}",
              f"{sub_s:.1f}", f"{1e3 * sub_s / subset:.1f}", ratio(per_s, sub_s))
    table.add(f"encoded once, all {n:,} episodes", f"{n:,}", f"{used:,}", f"{enc_s:.1f}",
              f"{1e3 * enc_s / n:.1f}", ratio(per_full, enc_s))
    gflops = _gemm_gflops()
    encode, match = _flops(grid, dim)
    bound = n * (WAY * (SHOT + QUERY) * encode + match) / (used * encode + n * match)
    diff = float(np.abs(per_scores - sub_scores).max())
    same = bool(np.array_equal(per_scores.argmax(-1), sub_scores.argmax(-1)))
    table.notes += [
        f"{classes} classes x {per_class} videos, T = {T}, random features; HCL defaults except "
        f"text_encoder=none; CPU, torch {torch.get_num_threads()} threads",
        f"per-episode path timed on {subset:,} episodes and extrapolated linearly to {n:,}; the encoded path "
        f"runs all {n:,} (encoding included)",
        f"scores of the first {subset:,} episodes: max |difference| {diff:.2e}, same argmax: {same}",
        f"GEMM rate {gflops:.0f} GFLOP/s (float32 2048² product); GEMM work: encoder {encode / 1e9:.2f} GFLOP per "
        f"video, matching {match / 1e9:.2f} GFLOP per episode: at that rate the encoded path takes at least "
        f"{(used * encode + n * match) / gflops / 1e9:.0f} s, and at equal rates it is at most {bound:.0f}x faster",
        f"goal: encoded >= {GOAL:.0f}x faster on the whole list: "
        f"{verdict(per_full / enc_s >= GOAL) if not quick else 'not judged at --quick sizes'}",
    ]
    return [table]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.head_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
    parser.add_argument("--subset", type=int, default=100, help="episodes timed on the per-episode path")
    args = parser.parse_args(argv)
    for table in tables(args.quick, args.subset):
        print(table.markdown())


if __name__ == "__main__":
    main()
