"""Batched cosine similarities and the steps every parameter-free matcher shares.

Features may be stored as float16; everything here computes in float32. Similarities come from one
batched GEMM per call over a whole batch of episodes:

    query [E, Q, T, D] x support [E, S, T, D] -> [E, Q, S, T, T]

Episode helpers turn per-(query, support) pair scores into per-class scores (mean over the K shots)
and build class prototypes (frame-by-frame mean of the K supports), given ``support_labels [E, S]``
with values in 0..way-1.

A parameter-free matcher is then, in most cases, one call of :func:`class_scores` (validate the
episode batch, score every pair, average over the shots or compare with class prototypes) with a pair
score that is often :func:`pair_scores` (one numba kernel of :mod:`fsar.matchers.kernels` applied to
the frame-similarity matrix of every pair); the matcher's own module only says which kernel and how.

Batched products go through ``torch.bmm``: numpy's stacked ``matmul`` runs one small GEMM at a time,
30-50x slower on batches of episode-sized matrices (benchmarks/eval.py measures it).

Evaluation scores many episodes drawn from one fixed set of N videos, so a (query, support) pair of
videos recurs thousands of times. :class:`VideoFrames` holds the N videos' frames L2-normalised once
and, when it fits, the cosine of every frame pair of every two videos ([N, N, T, T], one large GEMM);
inside :func:`indexed_frames`, arrays registered as rows of it are recognised by :func:`frame_similarity`
and :func:`pair_scores`, which then gather the T x T blocks instead of multiplying features again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from numpy.typing import NDArray

from fsar.matchers import kernels

__all__ = [
    "check_episode",
    "class_prototypes",
    "class_scores",
    "VideoFrames",
    "frame_similarity",
    "indexed_frames",
    "l2_normalize",
    "pair_scores",
    "pairwise_cosine",
    "patch_similarity",
    "shot_counts",
    "shot_mean",
    "shot_weights",
]

F32 = NDArray[np.float32]
Videos = NDArray[np.floating]  # features of a batch of episodes: [E, N, T, D] (or [E, N, T, P, D] with patches)
Labels = NDArray[np.integer]  # support labels [E, S] in 0..way-1
Kernel = Callable[[F32], NDArray[np.floating]]  # a batch of matrices [B, T1, T2] -> one value each [B] (or [B, C])
Compare = Callable[[Videos, Videos], NDArray[np.floating]]  # query [E, Q, ..] x support [E, S, ..] -> [E, Q, S]

_EPS = 1e-8


def _tensor(x: NDArray[np.floating]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def bmm(a: NDArray[np.floating], b: NDArray[np.floating], transpose_b: bool = False) -> F32:
    """Batched matrix product in float32: a [E, M, K] x b [E, K, N] (or b [E, N, K] with transpose_b)."""
    ta, tb = _tensor(a), _tensor(b)
    with torch.inference_mode():
        return torch.bmm(ta, tb.transpose(1, 2) if transpose_b else tb).numpy()


def _normalized(x: NDArray[np.floating]) -> torch.Tensor:
    """float32 tensor of ``x`` scaled to unit L2 norm along its last axis (zero vectors stay zero)."""
    return torch.nn.functional.normalize(_tensor(x), dim=-1, eps=_EPS)


def l2_normalize(x: NDArray[np.floating], axis: int = -1) -> F32:
    """``x`` in float32 scaled to unit L2 norm along ``axis`` (zero vectors stay zero)."""
    with torch.inference_mode():
        return torch.nn.functional.normalize(_tensor(x), dim=axis, eps=_EPS).numpy()


def pairwise_cosine(a: NDArray[np.floating], b: NDArray[np.floating]) -> F32:
    """Cosine similarity of every pair of vectors. a: [E, Q, D], b: [E, S, D] -> [E, Q, S] float32."""
    with torch.inference_mode():
        return torch.bmm(_normalized(a), _normalized(b).transpose(1, 2)).numpy()


def _cosine_blocks(query: NDArray[np.floating], support: NDArray[np.floating], rows_q: int, rows_s: int
                   ) -> torch.Tensor:
    """[E, Q, rows_q, S, rows_s] cosines of query rows x support rows.

    One batched GEMM on the raw rows, then division by the two norms: the same cosines as normalising
    first, but the division touches the (much smaller) output instead of rewriting every feature.
    """
    e, q, s, d = query.shape[0], query.shape[1], support.shape[1], query.shape[-1]
    qt = _tensor(query).reshape(e, q * rows_q, d)
    st = _tensor(support).reshape(e, s * rows_s, d)
    q_norm = torch.linalg.vector_norm(qt, dim=-1).clamp_min_(_EPS)
    s_norm = torch.linalg.vector_norm(st, dim=-1).clamp_min_(_EPS)
    dots = torch.bmm(qt, st.transpose(1, 2))
    dots /= q_norm[:, :, None]
    dots /= s_norm[:, None, :]
    return dots.reshape(e, q, rows_q, s, rows_s)


def frame_similarity(query: NDArray[np.floating], support: NDArray[np.floating]) -> F32:
    """Frame-to-frame cosine similarity of every (query, support) pair of an episode batch.

    query: [E, Q, T1, D], support: [E, S, T2, D] -> [E, Q, S, T1, T2] float32 (C-contiguous),
    computed as one batched GEMM on L2-normalised frames (or gathered from a :class:`VideoFrames`
    table when both are registered rows of it).
    """
    indexed = _indexed_blocks(query, support, cost=False)
    if indexed is not None:
        return indexed
    with torch.inference_mode():
        sim = _cosine_blocks(query, support, query.shape[2], support.shape[2])
        return _finite(sim.permute(0, 1, 3, 2, 4).contiguous().numpy())


def patch_similarity(query: NDArray[np.floating], support: NDArray[np.floating]) -> F32:
    """Patch-to-patch cosine similarity of every (query, support) pair.

    query: [E, Q, T1, P1, D], support: [E, S, T2, P2, D] -> [E, Q, S, T1, P1, T2, P2] float32.
    """
    e, q, t1, p1 = query.shape[:4]
    s, t2, p2 = support.shape[1:4]
    with torch.inference_mode():
        sim = _cosine_blocks(query, support, t1 * p1, t2 * p2)
        return _finite(sim.permute(0, 1, 3, 2, 4).contiguous().numpy().reshape(e, q, s, t1, p1, t2, p2))


def _finite(sim: F32) -> F32:
    # A NaN or inf anywhere in a frame makes its norm and every dot product with it non-finite, so
    # every similarity of that frame is NaN: checking the (much smaller) output catches any bad input.
    if not kernels.all_finite(sim):
        raise ValueError("features contain NaN or inf (or values too large for float32)")
    return sim


def check_episode(
    query: NDArray[np.floating],
    support: NDArray[np.floating],
    support_labels: NDArray[np.integer],
    way: int,
    *,
    feature_ndim: int = 2,
    check_finite: bool = True,
) -> NDArray[np.int64]:
    """Validate one batch of episodes; return the labels as int64.

    query: [E, Q, T, ...], support: [E, S, T, ...] with ``feature_ndim`` trailing axes after E and the
    video axis (2 for frames [T, D], 3 for patches [T, P, D]); support_labels: [E, S] in 0..way-1,
    every class present in every episode. Raises ValueError otherwise.

    ``check_finite=False`` skips the scan of every feature for NaN/inf: for matchers that compute all
    their scores through :func:`frame_similarity` / :func:`patch_similarity`, which reject non-finite
    features from their output at a fraction of the cost (the scan alone would cost about a third of OTAM's
    evaluation).
    """
    q, s = np.asarray(query), np.asarray(support)
    labels = np.asarray(support_labels)
    ndim = 2 + feature_ndim
    if q.ndim != ndim or s.ndim != ndim:
        raise ValueError(f"query and support must have {ndim} axes, got {q.shape} and {s.shape}")
    if q.shape[0] != s.shape[0] or q.shape[3:] != s.shape[3:]:
        raise ValueError(f"query {q.shape} and support {s.shape} disagree on episodes or feature shape")
    if min(q.shape) < 1 or min(s.shape) < 1:
        raise ValueError(f"empty axis in query {q.shape} or support {s.shape}")
    if not np.issubdtype(q.dtype, np.floating) or not np.issubdtype(s.dtype, np.floating):
        raise ValueError(f"features must be floating point, got {q.dtype} and {s.dtype}")
    if labels.shape != s.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"support_labels must be integers of shape {s.shape[:2]}, got {labels.shape}")
    if way < 1 or labels.min() < 0 or labels.max() >= way:
        raise ValueError(f"support_labels must lie in 0..{way - 1}")
    counts = shot_counts(labels, way)
    if (counts == 0).any():
        raise ValueError("every class needs at least one support video in every episode")
    if check_finite and not (kernels.all_finite(q) and kernels.all_finite(s)):
        raise ValueError("features contain NaN or inf")
    return labels.astype(np.int64)


def shot_counts(support_labels: NDArray[np.integer], way: int) -> NDArray[np.int64]:
    """Number of supports of each class. support_labels: [E, S] -> [E, way]."""
    onehot = np.asarray(support_labels)[..., None] == np.arange(way)
    return onehot.sum(axis=1).astype(np.int64)


def shot_weights(support_labels: NDArray[np.integer], way: int) -> F32:
    """Averaging matrix A [E, S, way] with A[e, s, w] = 1/K_w if support s is of class w, else 0."""
    onehot = (np.asarray(support_labels)[..., None] == np.arange(way)).astype(np.float32)
    return onehot / np.maximum(onehot.sum(axis=1, keepdims=True), 1.0)


def shot_mean(pair_scores: NDArray[np.floating], support_labels: NDArray[np.integer], way: int) -> F32:
    """Class score = mean of the pair scores over the class's K supports.

    pair_scores: [E, Q, S], support_labels: [E, S] -> [E, Q, way] float32.
    """
    return bmm(pair_scores, shot_weights(support_labels, way))


def class_prototypes(support: NDArray[np.floating], support_labels: NDArray[np.integer], way: int) -> F32:
    """Element-wise mean of each class's supports. support: [E, S, ...] -> [E, way, ...] float32."""
    e, s = support.shape[:2]
    flat = np.asarray(support, dtype=np.float32).reshape(e, s, -1)
    proto = bmm(np.swapaxes(shot_weights(support_labels, way), 1, 2), flat)
    return proto.reshape(e, way, *support.shape[2:])


def pair_scores(query: Videos, support: Videos, kernel: Kernel, *, cost: bool = False) -> NDArray[np.floating]:
    """``kernel`` applied to the frame cosine-similarity matrix of every (query, support) pair.

    query: [E, Q, T1, D], support: [E, S, T2, D] -> [E, Q, S] (or [E, Q, S, C] for a kernel giving C values
    per matrix). ``kernel`` takes the batch [E*Q*S, T1, T2] at once (the kernels of
    :mod:`fsar.matchers.kernels` run it in parallel); ``cost=True`` hands it 1 - cosine instead.
    """
    indexed = _indexed_blocks(query, support, cost=cost)
    if indexed is not None:  # already 1 - cosine when cost: fresh blocks, converted in place
        e, q, s, t1, t2 = indexed.shape
        values = kernel(indexed.reshape(e * q * s, t1, t2))
        return values.reshape(e, q, s, *values.shape[1:])
    sim = frame_similarity(query, support)
    e, q, s, t1, t2 = sim.shape
    flat = sim.reshape(e * q * s, t1, t2)
    values = kernel(1.0 - flat if cost else flat)
    return values.reshape(e, q, s, *values.shape[1:])


def class_scores(
    query: Videos,
    support: Videos,
    support_labels: Labels,
    way: int,
    compare: Compare,
    *,
    embed: Callable[[Videos], Videos] | None = None,
    prototypes: bool = False,
    feature_ndim: int = 2,
    check_finite: bool = False,
) -> F32:
    """Class scores of a parameter-free matcher from its pair score ``compare`` (higher = more similar).

    query: [E, Q, T, ...], support: [E, W*K, T, ...], support_labels: [E, W*K] -> [E, Q, way] float32.

    1. :func:`check_episode` (with ``feature_ndim`` and ``check_finite``; leave ``check_finite`` False only
       when ``compare`` goes through :func:`frame_similarity` or :func:`patch_similarity`, which reject
       non-finite features themselves);
    2. ``embed`` (if given) maps query and support to the features compared, e.g. a mean over frames;
    3. ``prototypes=False``: ``compare(query, support) -> [E, Q, W*K]`` scores every pair and the class
       score is the mean over the class's K supports (:func:`shot_mean`); ``prototypes=True``: the K
       supports of each class are first averaged element-wise (:func:`class_prototypes`) and
       ``compare(query, prototypes) -> [E, Q, way]`` is the class score.
    """
    labels = check_episode(query, support, support_labels, way, feature_ndim=feature_ndim, check_finite=check_finite)
    if embed is not None:
        query, support = embed(query), embed(support)
    if prototypes:
        return compare(query, class_prototypes(support, labels, way)).astype(np.float32)
    return shot_mean(compare(query, support), labels, way)


# --- per-video frames of an evaluation, gathered instead of recomputed --------------------------------------------

# Largest cosine table [N, N, T, T] float32 built; above it, normalised frames are multiplied per episode.
TABLE_BYTES = 256 * 2**20
# Without the table, episodes are multiplied in slices whose gathered query and support frames take at most
# this many bytes (a 5-way 5-shot episode at D = 2,048: 30 videos, ~2 MB).
GATHER_BYTES = 64 * 2**20
_TABLE_ROWS = 64  # videos per GEMM while building the table: bounds the temporary to a slice of it


class VideoFrames:
    """Frame features of the N videos of an evaluation, [N, T, D], L2-normalised once.

    :meth:`blocks` gives the frame cosines [E, Q, S, T, T] of episodes given by row indices. The cosine
    table of all N x N video pairs is built on first use, when it fits ``table_bytes`` and costs no
    more GEMM work than the ``pairs`` (query, support) pairs expected (the same video pairs recur across
    episodes); otherwise each call multiplies the gathered normalised frames episode by episode.
    """

    def __init__(self, videos: NDArray[np.floating], pairs: int, table_bytes: int | None = None) -> None:
        n, t = videos.shape[:2]
        budget = TABLE_BYTES if table_bytes is None else table_bytes
        self.n, self.t = n, t
        self.use_table = n * n * t * t * 4 <= budget and n * n <= pairs
        self._videos: NDArray[np.floating] | None = videos
        self._unit: torch.Tensor | None = None
        self._table: F32 | None = None
        self._gathered: dict[str, torch.Tensor] = {}  # per side, reused: see _gather

    @property
    def unit(self) -> torch.Tensor:
        """[N, T, D] float32 frames at unit L2 norm, computed on first use (a matcher may never ask)."""
        if self._unit is None:
            assert self._videos is not None
            with torch.inference_mode():
                self._unit = _normalized(self._videos)
        return self._unit

    def table(self) -> F32:
        """[N * N, T * T]: row a * N + b holds cos(frame i of a, frame j of b) at i * T + j."""
        if self._table is None:
            n, t = self.n, self.t
            flat = self.unit.reshape(n * t, -1)
            out = torch.empty((n, n, t, t), dtype=torch.float32)
            with torch.inference_mode():
                # cos(a_i, b_j) = cos(b_j, a_i): each block row is multiplied with the videos from its own
                # start on only, and the transposed blocks fill the rest (half the GEMM work)
                for start in range(0, n, _TABLE_ROWS):
                    stop = min(n, start + _TABLE_ROWS)
                    dots = torch.mm(flat[start * t:stop * t], flat[start * t:].T).view(stop - start, t, n - start, t)
                    out[start:stop, start:] = dots.permute(0, 2, 1, 3)
                    out[start:, start:stop] = dots.permute(2, 0, 3, 1)
            self._table = out.view(n * n, t * t).numpy()
            if self.use_table:  # every later call reads the table
                self._videos = self._unit = None
        return self._table

    def blocks(self, query_rows: NDArray[np.integer], support_rows: NDArray[np.integer], cost: bool) -> F32:
        """Cosines (``cost``: 1 - cosine) of rows [E, Q] x rows [E, S] -> [E, Q, S, T, T], a fresh array."""
        qr, sr = np.asarray(query_rows, np.int64), np.asarray(support_rows, np.int64)
        e, nq, ns, t = qr.shape[0], qr.shape[1], sr.shape[1], self.t
        if self.use_table:
            # numpy, not torch: single-threaded copies stay fast when the cores are shared
            out = np.take(self.table(), (qr[:, :, None] * self.n + sr[:, None, :]).ravel(), axis=0)
        else:
            out = np.empty((e, nq, ns, t, t), dtype=np.float32)
            step = max(1, GATHER_BYTES // ((nq + ns) * self.unit[0].numel() * 4))
            with torch.inference_mode():
                for a in range(0, e, step):
                    b = min(e, a + step)
                    q = self._gather("query", qr[a:b]).view(b - a, nq * t, -1)
                    s = self._gather("support", sr[a:b]).view(b - a, ns * t, -1)
                    dots = torch.bmm(q, s.transpose(1, 2)).view(b - a, nq, t, ns, t)
                    torch.from_numpy(out[a:b]).copy_(dots.permute(0, 1, 3, 2, 4))
        if cost:
            np.subtract(1.0, out, out=out)
        return _finite(out.reshape(e, nq, ns, t, t))

    def _gather(self, side: str, rows: NDArray[np.int64]) -> torch.Tensor:
        """Normalised frames of ``rows`` [len, T * D], valid until the next call for ``side``.

        Into a buffer kept across calls (at most :data:`GATHER_BYTES` for both sides): the page faults of a
        fresh buffer cost several times the copy itself.
        """
        flat = self.unit.view(self.n, -1)
        if side not in self._gathered or len(self._gathered[side]) < rows.size:
            self._gathered[side] = torch.empty((rows.size, flat.shape[1]), dtype=flat.dtype)
        out = self._gathered[side][: rows.size]
        torch.index_select(flat, 0, torch.from_numpy(rows.ravel()), out=out)
        return out


class FrameIndex:
    """Arrays known to be ``VideoFrames`` rows: ``add(array, frames, rows)``, keyed by the array object itself."""

    def __init__(self) -> None:
        # The arrays are kept referenced, so their ids cannot be reused by other arrays while registered.
        self._known: dict[int, tuple[NDArray[np.floating], VideoFrames, NDArray[np.integer]]] = {}

    def add(self, array: NDArray[np.floating], frames: VideoFrames, rows: NDArray[np.integer]) -> None:
        self._known[id(array)] = (array, frames, rows)

    def clear(self) -> None:
        self._known.clear()

    def lookup(self, array: object) -> tuple[VideoFrames, NDArray[np.integer]] | None:
        entry = self._known.get(id(array))
        return None if entry is None or entry[0] is not array else (entry[1], entry[2])


_INDEX: ContextVar[FrameIndex | None] = ContextVar("fsar_frame_index", default=None)


@contextmanager
def indexed_frames() -> Iterator[FrameIndex]:
    """Within the block, :func:`frame_similarity` and :func:`pair_scores` gather the cosines of registered arrays.

    Registering promises that the array holds exactly the frames of those rows (unchanged until
    :meth:`FrameIndex.clear`); any other input, e.g. prototypes or frame means derived from it, is computed.
    """
    index = FrameIndex()
    token = _INDEX.set(index)
    try:
        yield index
    finally:
        _INDEX.reset(token)


def _indexed_blocks(query: object, support: object, cost: bool) -> F32 | None:
    index = _INDEX.get()
    if index is None:
        return None
    q, s = index.lookup(query), index.lookup(support)
    if q is None or s is None or q[0] is not s[0]:
        return None
    return q[0].blocks(q[1], s[1], cost)
