"""Slow, obviously-correct references the fast matchers are tested against."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import NDArray


def dtw_reference(c: NDArray[np.floating]) -> float:
    """DTW by the textbook recursion on a full (T1+1) x (T2+1) matrix with an infinite border."""
    n, m = c.shape
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = c[i - 1, j - 1] + min(d[i - 1, j], d[i, j - 1], d[i - 1, j - 1])
    return float(d[n, m])


def _dtw_paths(n: int, m: int) -> Iterator[list[tuple[int, int]]]:
    def walk(i: int, j: int, path: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        if (i, j) == (n - 1, m - 1):
            yield path
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                yield from walk(i + di, j + dj, [*path, (i + di, j + dj)])

    yield from walk(0, 0, [(0, 0)])


def dtw_brute_force(c: NDArray[np.floating]) -> float:
    """Minimum cost over every monotone, continuous warping path from (0, 0) to (T1-1, T2-1)."""
    return min(sum(float(c[i, j]) for i, j in path) for path in _dtw_paths(*c.shape))


def otam_reference(c: NDArray[np.floating], smin: Callable[..., float] = min) -> float:
    """OTAM exactly as docs/methods.md (section otam) writes it, on the full zero-padded L x (M+2) matrix;
    ``smin`` replaces every min of the recursion (a soft-min gives OTAM's training relaxation)."""
    n, m = c.shape
    p = np.pad(np.asarray(c, dtype=np.float64), ((0, 0), (1, 1)))
    acc = np.zeros_like(p)
    for j in range(1, m + 2):
        acc[0, j] = p[0, j] + acc[0, j - 1]
    for i in range(1, n):
        acc[i, 1] = p[i, 1] + smin(acc[i - 1, 0], acc[i - 1, 1], acc[i, 0])
        for j in range(2, m + 1):
            acc[i, j] = p[i, j] + smin(acc[i - 1, j - 1], acc[i, j - 1])
        acc[i, m + 1] = smin(acc[i - 1, m], acc[i - 1, m + 1], acc[i, m])
    return float(acc[n - 1, m + 1])


def _otam_paths(n: int, m: int) -> Iterator[list[tuple[int, int]]]:
    """Admissible OTAM paths over the padded grid: right anywhere; down only in the padding
    columns and the first real column; diagonal into any real or the last padding column."""
    last = m + 1

    def walk(i: int, j: int, path: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        if (i, j) == (n - 1, last):
            yield path
            return
        steps = [(0, 1)] if j < last else []
        if i + 1 < n:
            if j in (0, 1, last):
                steps.append((1, 0))
            if j < last:
                steps.append((1, 1))
        for di, dj in steps:
            yield from walk(i + di, j + dj, [*path, (i + di, j + dj)])

    yield from walk(0, 0, [(0, 0)])


def otam_brute_force(c: NDArray[np.floating]) -> float:
    """Minimum over every admissible OTAM path of the summed padded costs."""
    p = np.pad(np.asarray(c, dtype=np.float64), ((0, 0), (1, 1)))
    return min(sum(float(p[i, j]) for i, j in path) for path in _otam_paths(*c.shape))


def matching_brute_force(w: NDArray[np.floating]) -> float:
    """Maximum total weight over every injective matching of the smaller side (permutations)."""
    n, m = w.shape
    if n > m:
        return matching_brute_force(w.T)
    return max(sum(float(w[i, j]) for i, j in enumerate(cols)) for cols in itertools.permutations(range(m), n))


def zoom_reference(
    q: NDArray[np.floating], s: NDArray[np.floating], n_clips: int, n_patches: int, length: int
) -> float:
    """HCL zoom-in score of one pair from explicit clip embeddings (concatenated unit frames).

    q: [T1, P1, D], s: [T2, P2, D] raw patch features.
    """

    def unit(x: NDArray[np.floating]) -> NDArray[np.float64]:
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    qf, sf = q.astype(np.float64).mean(axis=1), s.astype(np.float64).mean(axis=1)
    global_ = float(unit(qf.mean(axis=0)) @ unit(sf.mean(axis=0)))
    length = min(length, len(qf), len(sf))
    q_clips = list(itertools.combinations(range(len(qf)), length))
    s_clips = list(itertools.combinations(range(len(sf)), length))
    q_emb = np.array([unit(np.concatenate([unit(qf[t]) for t in c])) for c in q_clips])
    s_emb = np.array([unit(np.concatenate([unit(sf[t]) for t in c])) for c in s_clips])
    clip_sim = q_emb @ s_emb.T
    partner = clip_sim.argmax(axis=1)
    best = clip_sim.max(axis=1)
    chosen = np.argsort(-best, kind="stable")[:n_clips]
    spatial = 0.0
    for a in chosen:
        qp = unit(np.concatenate([q[t] for t in q_clips[a]]))
        sp = unit(np.concatenate([s[t] for t in s_clips[partner[a]]]))
        spatial += np.sort((qp @ sp.T).max(axis=1))[::-1][:n_patches].sum()
    return global_ + float(best[chosen].mean()) + spatial / (len(chosen) * n_patches)
