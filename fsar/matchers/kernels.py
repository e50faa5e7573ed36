"""Numba kernels reducing batches of frame cost / similarity matrices to one number each.

Every kernel takes a whole batch ``[B, T1, T2]`` in one call and runs ``prange`` over chunks of
the batch (one workspace allocation per chunk, not per item). The private ``_*_item`` functions
hold one recursion each; the public wrappers check shape, dtype and finiteness and raise
``ValueError``. Nothing here imports torch or any fsar module but the solver's, or does I/O.

Kernels (float32 or float64 in, float64 accumulation and output):

- :func:`dtw`: dynamic time warping, D(i,j) = c(i,j) + min(D(i-1,j), D(i,j-1), D(i-1,j-1)).
- :func:`otam`: OTAM (Cao et al., CVPR 2020) exactly as the public re-implementations compute it,
  with one zero column padded before and after the support axis (docs/methods.md, section otam).
- :func:`max_weight_matching`: maximum-weight bipartite matching (Kuhn-Munkres; shortest augmenting
  paths with potentials, O(T1 T2 min(T1, T2))), as used by TSJM's joint matching module; the solver
  is in :mod:`fsar.matchers._kuhn_munkres`.
- :func:`hausdorff_mean`: HyRSM's bidirectional mean Hausdorff distance (summed form).
- :func:`chamfer`: mean of the best matches, both directions, on similarities.
- :func:`zoom_in`: HCL's temporal (Eq. 3) and spatial (Eq. 4) zoom-in matching scores.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from fsar.matchers._kuhn_munkres import hungarian_batch

__all__ = ["all_finite", "chamfer", "dtw", "hausdorff_mean", "max_weight_matching", "otam", "zoom_in"]

_CHUNK = 64  # batch items per parallel task; one workspace per task


# --------------------------------------------------------------------------- DTW
@njit(cache=True, nogil=True)
def _dtw_item(c, row):
    n, m = c.shape
    acc = 0.0
    for j in range(m):
        acc += c[0, j]
        row[j] = acc
    for i in range(1, n):
        diag = row[0]
        row[0] = diag + c[i, 0]
        for j in range(1, m):
            up = row[j]
            best = min(up, row[j - 1], diag)
            diag = up
            row[j] = c[i, j] + best
    return row[m - 1]


@njit(parallel=True, cache=True)
def _dtw_batch(costs):
    b, _, m = costs.shape
    out = np.empty(b, dtype=np.float64)
    for k in prange((b + _CHUNK - 1) // _CHUNK):
        row = np.empty(m, dtype=np.float64)
        for i in range(k * _CHUNK, min(b, (k + 1) * _CHUNK)):
            out[i] = _dtw_item(costs[i], row)
    return out


# --------------------------------------------------------------------------- OTAM
@njit(cache=True, nogil=True)
def _otam_item(c, row):
    # ``row`` holds one row of the cumulative matrix over the padded support axis (M + 2 columns),
    # updated in place; ``diag`` keeps the previous row's value of the column to the left.
    n, m = c.shape
    acc = 0.0
    row[0] = 0.0
    for j in range(m):
        acc += c[0, j]
        row[j + 1] = acc
    row[m + 1] = acc
    for i in range(1, n):
        diag = row[1]
        row[1] = c[i, 0] + min(row[0], diag, 0.0)  # column 0 is 0 in every row
        for j in range(2, m + 1):
            up = row[j]
            row[j] = c[i, j - 1] + min(diag, row[j - 1])
            diag = up
        row[m + 1] = min(diag, row[m + 1], row[m])
    return row[m + 1]


@njit(cache=True)
def _smin(a, b, c, lam):
    # -λ log Σ exp(-x/λ) over the three values, shifted by their minimum so that exp never underflows to 0.
    low = min(a, b, c)
    return low - lam * np.log(np.exp((low - a) / lam) + np.exp((low - b) / lam) + np.exp((low - c) / lam))


@njit(cache=True)
def _otam_item_soft(c, row, lam):
    # _otam_item with every min replaced by the soft-min; a two-way min passes +inf as its third value.
    n, m = c.shape
    acc = 0.0
    row[0] = 0.0
    for j in range(m):
        acc += c[0, j]
        row[j + 1] = acc
    row[m + 1] = acc
    for i in range(1, n):
        diag = row[1]
        row[1] = c[i, 0] + _smin(row[0], diag, 0.0, lam)
        for j in range(2, m + 1):
            up = row[j]
            row[j] = c[i, j - 1] + _smin(diag, row[j - 1], np.inf, lam)
            diag = up
        row[m + 1] = _smin(diag, row[m + 1], row[m], lam)
    return row[m + 1]


@njit(cache=True)
def _otam_one(c, row, lam):
    # The hard-min recursion stays its own function: the soft-min's logs and exps would slow the default.
    return _otam_item_soft(c, row, lam) if lam > 0 else _otam_item(c, row)


@njit(parallel=True, cache=True)
def _otam_batch(costs, symmetric, lam):
    b, n, m = costs.shape
    out = np.empty(b, dtype=np.float64)
    width = max(n, m) + 2
    for k in prange((b + _CHUNK - 1) // _CHUNK):
        row = np.empty(width, dtype=np.float64)
        for i in range(k * _CHUNK, min(b, (k + 1) * _CHUNK)):
            d = _otam_one(costs[i], row, lam)
            if symmetric:
                d += _otam_one(costs[i].T, row, lam)
            out[i] = d
    return out


# --------------------------------------------------------------------------- set matching
@njit(parallel=True, cache=True)
def _hausdorff_batch(costs):
    b, n, m = costs.shape
    out = np.empty(b, dtype=np.float64)
    for i in prange(b):
        c = costs[i]
        total = 0.0
        for r in range(n):
            total += c[r].min()
        for j in range(m):
            total += c[:, j].min()
        out[i] = total
    return out


@njit(parallel=True, cache=True)
def _chamfer_batch(sims):
    b, n, m = sims.shape
    out = np.empty(b, dtype=np.float64)
    for i in prange(b):
        s = sims[i]
        rows = 0.0
        for r in range(n):
            rows += s[r].max()
        cols = 0.0
        for j in range(m):
            cols += s[:, j].max()
        out[i] = 0.5 * (rows / n + cols / m)
    return out


# --------------------------------------------------------------------------- zoom-in (HCL)
@njit(cache=True, nogil=True)
def _top_k_sum(vals, k, taken):
    """Sum of the k largest entries of ``vals`` (k <= len(vals)); ``taken`` is scratch."""
    taken[: vals.size] = False
    total = 0.0
    for _ in range(k):
        best = -np.inf
        at = 0
        for j in range(vals.size):
            if not taken[j] and vals[j] > best:
                best = vals[j]
                at = j
        taken[at] = True
        total += best
    return total


@njit(cache=True, nogil=True)
def _zoom_item(fs, ps, cq, cs, n_clips, n_patches, best, partner, taken, pbest):
    n1, length = cq.shape
    n2 = cs.shape[0]
    p1 = ps.shape[1]
    p2 = ps.shape[3]
    for a in range(n1):  # each query clip picks its most similar support clip
        bs = -np.inf
        bj = 0
        for b2 in range(n2):
            s = 0.0
            for t in range(length):
                s += fs[cq[a, t], cs[b2, t]]
            if s > bs:
                bs = s
                bj = b2
        best[a] = bs / length
        partner[a] = bj
    taken[:n1] = False
    temporal = 0.0
    spatial = 0.0
    for _ in range(n_clips):  # top clip pairs, first index on ties
        top = -np.inf
        a_top = 0
        for a in range(n1):
            if not taken[a] and best[a] > top:
                top = best[a]
                a_top = a
        taken[a_top] = True
        temporal += top
        b2 = partner[a_top]
        for t in range(length):  # each patch of the query clip picks its best patch in the partner clip
            for q in range(p1):
                pm = -np.inf
                for t2 in range(length):
                    for r in range(p2):
                        pm = max(pm, ps[cq[a_top, t], q, cs[b2, t2], r])
                pbest[t * p1 + q] = pm
        spatial += _top_k_sum(pbest[: length * p1], n_patches, taken[n1:])
    return temporal / n_clips, spatial / (n_clips * n_patches)


@njit(parallel=True, cache=True)
def _zoom_batch(frame_sim, patch_sim, cq, cs, n_clips, n_patches):
    b = frame_sim.shape[0]
    n1, length = cq.shape
    p1 = patch_sim.shape[2]
    temporal = np.empty(b, dtype=np.float64)
    spatial = np.empty(b, dtype=np.float64)
    for k in prange((b + _CHUNK - 1) // _CHUNK):
        best = np.empty(n1, dtype=np.float64)
        partner = np.empty(n1, dtype=np.int64)
        taken = np.empty(n1 + length * p1, dtype=np.bool_)
        pbest = np.empty(length * p1, dtype=np.float64)
        for i in range(k * _CHUNK, min(b, (k + 1) * _CHUNK)):
            temporal[i], spatial[i] = _zoom_item(
                frame_sim[i], patch_sim[i], cq, cs, n_clips, n_patches, best, partner, taken, pbest
            )
    return temporal, spatial


# --------------------------------------------------------------------------- public wrappers
def _checked(x: NDArray[np.floating], name: str, ndim: int = 3) -> NDArray[np.floating]:
    """``x`` as a C-contiguous float32/float64 array of ``ndim`` non-empty axes, all finite."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {x.shape}")
    if ndim > 0 and min(x.shape[1:]) < 1:
        raise ValueError(f"{name} has an empty matrix axis: shape {x.shape}")
    x = np.ascontiguousarray(x)
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or inf")
    return x


@njit(parallel=True, cache=True)
def _count_nonfinite(flat):
    # One parallel read pass; np.isfinite(x).all() first writes a boolean copy of the whole batch,
    # which costs about as much as the OTAM recursion itself at T = 8. v - v is NaN for NaN and +-inf.
    n = 0
    for i in prange(flat.size):
        v = flat[i]
        if not (v - v == 0.0):
            n += 1
    return n


def all_finite(x: NDArray[np.floating]) -> bool:
    """True when no element of ``x`` is NaN or +-inf (one parallel read pass for float32/float64)."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        return bool(np.isfinite(a).all())
    return _count_nonfinite(np.ascontiguousarray(a).reshape(-1)) == 0


def dtw(costs: NDArray[np.floating]) -> NDArray[np.float64]:
    """DTW distance D[T1-1, T2-1] per matrix. costs: [B, T1, T2] -> [B] float64."""
    return _dtw_batch(_checked(costs, "costs"))


def otam(costs: NDArray[np.floating], *, symmetric: bool = False, lam: float = 0.0) -> NDArray[np.float64]:
    """OTAM distance C[L-1, M+1] (not length-normalised) per matrix.

    costs: [B, L, M] (query frames as rows, typically 1 - cosine) -> [B] float64.
    ``symmetric=True`` returns OTAM(c) + OTAM(cᵀ), the matcher's distance. ``lam`` > 0 replaces every min of
    the recursion by the soft-min -λ log Σ exp(-x/λ) (OTAM's training relaxation, which its public code also
    evaluates with); 0 is the hard min.
    """
    if lam < 0 or not np.isfinite(lam):
        raise ValueError(f"lam must be a finite value >= 0, got {lam}")
    return _otam_batch(_checked(costs, "costs"), bool(symmetric), float(lam))


def max_weight_matching(weights: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Maximum-weight bipartite matching of min(T1, T2) pairs per matrix (Kuhn-Munkres).

    weights: [B, T1, T2]. Returns (score [B] float64 = sum of matched weights,
    assignment [B, T1] int64 = matched column of each row, -1 for unmatched rows when T1 > T2).
    """
    return hungarian_batch(_checked(weights, "weights"), _CHUNK)


def hausdorff_mean(costs: NDArray[np.floating]) -> NDArray[np.float64]:
    """Bidirectional mean Hausdorff (HyRSM): Σ_i min_j c_ij + Σ_j min_i c_ij. [B,T1,T2] -> [B]."""
    return _hausdorff_batch(_checked(costs, "costs"))


def chamfer(sims: NDArray[np.floating]) -> NDArray[np.float64]:
    """Chamfer similarity ½(mean_i max_j s_ij + mean_j max_i s_ij). [B, T1, T2] -> [B]."""
    return _chamfer_batch(_checked(sims, "sims"))


def zoom_in(
    frame_sim: NDArray[np.floating],
    patch_sim: NDArray[np.floating],
    clips_query: NDArray[np.integer],
    clips_support: NDArray[np.integer],
    n_clips: int,
    n_patches: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """HCL zoom-in matching (Eq. 3 temporal, Eq. 4 spatial with α = 1) per video pair.

    frame_sim: [B, T1, T2] frame cosine similarities; patch_sim: [B, T1, P1, T2, P2] patch cosine
    similarities; clips_query [N1, L] / clips_support [N2, L]: frame indices of each clip (a clip's
    similarity is the mean of its aligned frame similarities). Each query clip is paired with its most
    similar support clip; the ``n_clips`` best pairs give the temporal score (their mean); inside each,
    every query patch takes its best partner patch and the ``n_patches`` best give the spatial score
    (mean over n_clips × n_patches). Returns (temporal [B], spatial [B]) float64.
    """
    fs = _checked(frame_sim, "frame_sim")
    ps = _checked(patch_sim, "patch_sim", ndim=5)
    b, t1, t2 = fs.shape
    if ps.shape[0] != b or ps.shape[1] != t1 or ps.shape[3] != t2:
        raise ValueError(f"patch_sim shape {ps.shape} does not match frame_sim shape {fs.shape}")
    cq = np.ascontiguousarray(clips_query, dtype=np.int64)
    cs = np.ascontiguousarray(clips_support, dtype=np.int64)
    for name, clips, t in (("clips_query", cq, t1), ("clips_support", cs, t2)):
        if clips.ndim != 2 or clips.shape[0] < 1 or clips.shape[1] < 1:
            raise ValueError(f"{name} must be a non-empty [N, L] array, got shape {clips.shape}")
        if clips.min() < 0 or clips.max() >= t:
            raise ValueError(f"{name} indexes frames outside 0..{t - 1}")
    if cq.shape[1] != cs.shape[1]:
        raise ValueError("query and support clips must have the same length")
    if not 1 <= n_clips <= cq.shape[0]:
        raise ValueError(f"n_clips must be in 1..{cq.shape[0]}, got {n_clips}")
    if not 1 <= n_patches <= cq.shape[1] * ps.shape[2]:
        raise ValueError(f"n_patches must be in 1..{cq.shape[1] * ps.shape[2]}, got {n_patches}")
    return _zoom_batch(fs, ps, cq, cs, int(n_clips), int(n_patches))
