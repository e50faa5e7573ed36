"""Kernel speed at T = 8: ns per cost matrix, against the way the public reference code computes it.

Run: ``python -m benchmarks.kernels [--pairs N] [--threads K]``. Compares, in one run,

- the numba OTAM kernel with a per-episode PyTorch cell loop (the public OTAM/TRX implementation's
  structure: a [Q, S, T, T+2] cumulative tensor filled cell by cell with soft-min exp/log);
- the numba Kuhn-Munkres kernel with ``scipy.optimize.linear_sum_assignment`` in a Python loop;
- the numba Hausdorff kernel with a batched torch min-reduction (HyRSM's way);
and reports DTW and Chamfer on their own. Numba compilation is warmed up before timing.
Targets on 2 threads: OTAM/DTW <= 80 ns/pair, Kuhn-Munkres <= 1,200 ns/pair.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
import torch
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from benchmarks._common import Table, best_seconds, ratio
from fsar.matchers import kernels

T = 8
WAY, QUERIES = 5, 5  # one reference "episode" = 5 queries x 5 supports = 25 pairs


def torch_otam_episode(dists: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """Reference structure: dists [Q, S, L, M] -> [Q, S], one torch op per cell (soft-min)."""
    dists = torch.nn.functional.pad(dists, (1, 1), "constant", 0)
    cum = torch.zeros(dists.shape, dtype=dists.dtype)
    for m in range(1, dists.shape[3]):
        cum[:, :, 0, m] = dists[:, :, 0, m] + cum[:, :, 0, m - 1]
    for l in range(1, dists.shape[2]):
        cum[:, :, l, 1] = dists[:, :, l, 1] - lam * torch.log(
            torch.exp(-cum[:, :, l - 1, 0] / lam)
            + torch.exp(-cum[:, :, l - 1, 1] / lam)
            + torch.exp(-cum[:, :, l, 0] / lam)
        )
        for m in range(2, dists.shape[3] - 1):
            cum[:, :, l, m] = dists[:, :, l, m] - lam * torch.log(
                torch.exp(-cum[:, :, l - 1, m - 1] / lam) + torch.exp(-cum[:, :, l, m - 1] / lam)
            )
        cum[:, :, l, -1] = dists[:, :, l, -1] - lam * torch.log(
            torch.exp(-cum[:, :, l - 1, -2] / lam)
            + torch.exp(-cum[:, :, l - 1, -1] / lam)
            + torch.exp(-cum[:, :, l, -2] / lam)
        )
    return cum[:, :, -1, -1]


def _scipy_loop(weights: NDArray[np.float32]) -> list[float]:
    out = []
    for w in weights:
        rows, cols = linear_sum_assignment(w, maximize=True)
        out.append(float(w[rows, cols].sum()))
    return out


def run(pairs: int, threads: int) -> list[tuple[str, float, float | None]]:
    """Return (kernel, ns/pair, reference ns/pair or None) rows."""
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    costs = rng.uniform(0, 2, size=(pairs, T, T)).astype(np.float32)
    sims = (1 - costs).astype(np.float32)
    for fn in (kernels.dtw, kernels.otam, kernels.hausdorff_mean, kernels.chamfer, kernels.max_weight_matching):
        fn(costs[:256])  # compile (or load the cache) before timing
    kernels.otam(costs[:256], symmetric=True)

    def ns(seconds: float, n: int) -> float:
        return seconds / n * 1e9

    rows: list[tuple[str, float, float | None]] = []
    n_ref = min(pairs, 2_000)
    episodes = torch.from_numpy(costs[: n_ref - n_ref % 25].reshape(-1, QUERIES, WAY, T, T))
    ref_otam = best_seconds(lambda: [torch_otam_episode(ep) for ep in episodes], 2)
    rows.append(
        ("otam", ns(best_seconds(lambda: kernels.otam(costs), 5), pairs), ns(ref_otam, episodes.shape[0] * 25))
    )
    rows.append(("otam symmetric", ns(best_seconds(lambda: kernels.otam(costs, symmetric=True), 5), pairs), None))
    rows.append(("dtw", ns(best_seconds(lambda: kernels.dtw(costs), 5), pairs), None))
    ref_km = best_seconds(lambda: _scipy_loop(sims[:n_ref]), 2)
    km = best_seconds(lambda: kernels.max_weight_matching(sims), 3)
    rows.append(("kuhn-munkres", ns(km, pairs), ns(ref_km, n_ref)))
    torch_costs = torch.from_numpy(costs)
    ref_h = best_seconds(lambda: torch_costs.min(2).values.sum(1) + torch_costs.min(1).values.sum(1), 5)
    rows.append(("hausdorff", ns(best_seconds(lambda: kernels.hausdorff_mean(costs), 5), pairs), ns(ref_h, pairs)))
    rows.append(("chamfer", ns(best_seconds(lambda: kernels.chamfer(sims), 5), pairs), None))
    return rows


def tables(quick: bool = False, threads: int = 2) -> list[Table]:
    """The kernel table for ``python -m benchmarks`` (``quick``: a few thousand pairs, seconds)."""
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)  # NUMBA_NUM_THREADS caps what numba can use
    pairs = 5_000 if quick else 200_000
    table = Table(f"Kernels: ns per {T}x{T} cost matrix ({pairs:,} per call, {threads} threads, best of several)",
                  ["kernel", "ns/pair", "reference way ns/pair", "speed-up vs reference"])
    for name, fast, ref in run(pairs, threads):
        table.add(name, f"{fast:,.1f}", "-" if ref is None else f"{ref:,.0f}",
                  "-" if ref is None else ratio(ref, fast))
    table.notes.append("references: per-episode PyTorch OTAM cell loop (OTAM/TRX code), scipy "
                       "linear_sum_assignment in a Python loop, batched torch min-reduction (HyRSM)")
    table.notes.append("targets on 2 threads: OTAM/DTW <= 80 ns/pair, Kuhn-Munkres <= 1,200 ns/pair")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000, help="cost matrices per kernel call")
    parser.add_argument("--threads", type=int, default=2, help="numba and torch threads")
    args = parser.parse_args()
    rows = run(args.pairs, args.threads)
    print(f"T={T}, {args.pairs} pairs per call, {args.threads} threads (best of several runs)")
    print(f"{'kernel':<16}{'ns/pair':>10}{'reference ns/pair':>20}{'speed-up':>10}")
    for name, fast, ref in rows:
        ref_txt = f"{ref:>20,.0f}{ref / fast:>9,.0f}x" if ref is not None else f"{'-':>20}{'-':>10}"
        print(f"{name:<16}{fast:>10,.1f}{ref_txt}")


if __name__ == "__main__":
    main()
