"""Kuhn-Munkres maximum-weight bipartite matching of a batch of matrices (numba).

The Hungarian algorithm by shortest augmenting paths with potentials, O(n² m) for n <= m rows, on the
costs -w. The public entry, with its input checks, is :func:`fsar.matchers.kernels.max_weight_matching`;
this module holds the solver apart because it is the one long algorithm among the kernels. The batch
driver lives in the same file as the steps it calls: numba's on-disk cache of a function is refreshed
only when its own file changes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def _match_cheapest_columns(w, u, p):
    # Row reduction: u_i = min_j (-w_ij) keeps every reduced cost >= 0, and a row whose cheapest column
    # is still free is matched to it at once (a tight edge). Only the rows left over need a shortest
    # augmenting path, and on 8x8 similarity matrices most rows are matched here (25-35% off the kernel).
    n, m = w.shape
    u[0] = 0.0
    for i in range(1, n + 1):
        best = np.inf
        at = 1
        for j in range(1, m + 1):
            c = -w[i - 1, j - 1]
            if c < best:
                best = c
                at = j
        u[i] = best
        if p[at] == 0:
            p[at] = i


@njit(cache=True, nogil=True)
def _augment(w, i, u, v, p, way, minv, used):
    # Dijkstra-like search from row i over columns with reduced costs; then flip the path found.
    m = w.shape[1]
    p[0] = i
    j0 = 0
    minv[: m + 1] = np.inf
    used[: m + 1] = False
    while True:
        used[j0] = True
        i0 = p[j0]
        delta = np.inf
        j1 = 0
        for j in range(1, m + 1):
            if not used[j]:
                cur = -w[i0 - 1, j - 1] - u[i0] - v[j]
                if cur < minv[j]:
                    minv[j] = cur
                    way[j] = j0
                if minv[j] < delta:
                    delta = minv[j]
                    j1 = j
        for j in range(m + 1):
            if used[j]:
                u[p[j]] += delta
                v[j] -= delta
            else:
                minv[j] -= delta
        j0 = j1
        if p[j0] == 0:
            break
    while j0 != 0:
        j1 = way[j0]
        p[j0] = p[j1]
        j0 = j1


@njit(cache=True, nogil=True)
def _hungarian_item(w, u, v, p, way, minv, used):
    # Minimises -w over n <= m rows (1-based potentials u, v; p[j] = row matched to column j).
    n, m = w.shape
    v[: m + 1] = 0.0
    p[: m + 1] = 0
    _match_cheapest_columns(w, u, p)
    for i in range(1, n + 1):
        matched = False
        for j in range(1, m + 1):
            if p[j] == i:
                matched = True
        if not matched:
            _augment(w, i, u, v, p, way, minv, used)


@njit(parallel=True, cache=True)
def hungarian_batch(weights, chunk):
    """Matching of each matrix of ``weights`` [B, T1, T2]: (score [B], assignment [B, T1], -1 = unmatched).

    ``chunk`` matrices per parallel task share one workspace.
    """
    b, n, m = weights.shape
    flip = n > m
    r, c = (m, n) if flip else (n, m)
    score = np.empty(b, dtype=np.float64)
    assign = np.full((b, n), -1, dtype=np.int64)
    for k in prange((b + chunk - 1) // chunk):
        u = np.empty(r + 1, dtype=np.float64)
        v = np.empty(c + 1, dtype=np.float64)
        minv = np.empty(c + 1, dtype=np.float64)
        p = np.empty(c + 1, dtype=np.int64)
        way = np.empty(c + 1, dtype=np.int64)
        used = np.empty(c + 1, dtype=np.bool_)
        for i in range(k * chunk, min(b, (k + 1) * chunk)):
            w = weights[i]
            _hungarian_item(w.T if flip else w, u, v, p, way, minv, used)
            total = 0.0
            for j in range(1, c + 1):
                if p[j] != 0:
                    row, col = (j - 1, p[j] - 1) if flip else (p[j] - 1, j - 1)
                    assign[i, row] = col
                    total += w[row, col]
            score[i] = total
    return score, assign
