"""Deterministic episode sampling.

Randomness comes only from the raw 64-bit stream of ``numpy.random.PCG64(seed)``. The bit
generator's stream is fixed by its algorithm, whereas ``Generator`` methods may change between NumPy
releases; drawing uniforms from the raw stream and doing the partial Fisher-Yates shuffles here keeps
a (pool, arguments) pair mapped to the same episodes on any machine and NumPy version.

Draw order: one block of (E, way) uniforms picks the classes of every episode; then, for each class
in sorted order, one block of (m_c, shot + query) uniforms picks its videos in the m_c episodes that
use it (in episode order). The first ``shot`` picks are support videos, the rest query videos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from fsar.episodes.episode_list import EpisodeError, EpisodeList
from fsar.episodes.protocols import CUSTOM, PROTOCOLS

# Rows of a partial shuffle processed at once; bounds memory to _ROWS * pool-per-class integers.
_ROWS = 4096


def pool_sha256(pool_ids: Sequence[str]) -> str:
    """sha256 (hex) of the sorted ids joined by newlines, UTF-8 encoded."""
    return hashlib.sha256("\n".join(sorted(str(v) for v in pool_ids)).encode("utf-8")).hexdigest()


def _uniforms(bitgen: np.random.PCG64, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Uniforms in [0, 1) with 53 random bits each, from the raw stream."""
    raw = np.asarray(bitgen.random_raw(int(np.prod(shape))), dtype=np.uint64).reshape(shape)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _partial_shuffle(n: int, u: NDArray[np.float64]) -> NDArray[np.int64]:
    """First k elements of a Fisher-Yates shuffle of range(n) per row, k = u.shape[1].

    u: (R, k) uniforms. Returns (R, k) distinct values in [0, n) per row.
    """
    r, k = u.shape
    out = np.empty((r, k), dtype=np.int64)
    rows = np.arange(min(r, _ROWS))
    for lo in range(0, r, _ROWS):
        hi = min(lo + _ROWS, r)
        perm = np.tile(np.arange(n, dtype=np.int64), (hi - lo, 1))
        ri = rows[: hi - lo]
        for i in range(k):
            j = i + np.minimum((u[lo:hi, i] * (n - i)).astype(np.int64), n - i - 1)
            pick = perm[ri, j]
            perm[ri, j] = perm[ri, i]
            perm[ri, i] = pick
        out[lo:hi] = perm[:, :k]
    return out


def _group_pool(
    pool_ids: Sequence[str], pool_classes: Sequence[str], need: int, way: int
) -> tuple[NDArray[np.str_], list[str], list[NDArray[np.int64]]]:
    """Sort the pool and group it by class; check every class has ``need`` videos.

    Returns (sorted ids (N,), sorted class names (C,), per class the sorted positions of its videos).
    """
    if len(pool_ids) != len(pool_classes):
        raise EpisodeError(f"pool has {len(pool_ids)} ids but {len(pool_classes)} class labels")
    ids = np.asarray([str(v) for v in pool_ids])
    if len(np.unique(ids)) != len(ids):
        uniq, counts = np.unique(ids, return_counts=True)
        raise EpisodeError(f"pool has duplicate video ids, e.g. {uniq[counts > 1][:3].tolist()}")
    labels = np.asarray([str(c) for c in pool_classes])
    order = np.argsort(ids, kind="stable")
    ids, labels = ids[order], labels[order]
    names = sorted(set(labels.tolist()))
    members = [np.flatnonzero(labels == c) for c in names]
    short = [f"'{c}' has {len(m)}" for c, m in zip(names, members, strict=True) if len(m) < need]
    if short:
        raise EpisodeError(
            f"{len(short)} class(es) have fewer than shot + query = {need} videos: {'; '.join(short)}. "
            f"Lower --shot/--query or leave these classes out of the pool."
        )
    if len(names) < way:
        raise EpisodeError(f"pool has {len(names)} classes, fewer than way = {way}")
    return ids, names, members


def _resolve_protocol(protocol: str, n: int | None, query: int | None) -> tuple[int, int, int]:
    """(n, query, n_runs) for a preset or a custom protocol; conflicting values are an error."""
    if protocol == CUSTOM:
        if n is None or query is None:
            raise EpisodeError("protocol 'custom' needs both n and query")
        return n, query, 1
    if protocol not in PROTOCOLS:
        raise EpisodeError(f"unknown protocol '{protocol}'; choose one of {sorted(PROTOCOLS)} or 'custom'")
    p = PROTOCOLS[protocol]
    for name, given, fixed in (("n", n, p.n_episodes), ("query", query, p.query)):
        if given is not None and given != fixed:
            raise EpisodeError(
                f"protocol '{protocol}' fixes {name} = {fixed}, got {given}; use protocol 'custom'"
            )
    return p.n_episodes, p.query, p.n_runs


def sample_episodes(
    pool_ids: Sequence[str],
    pool_classes: Sequence[str],
    *,
    way: int,
    shot: int,
    query: int | None = None,
    n: int | None = None,
    seed: int,
    protocol: str = CUSTOM,
    dataset: str = "",
    split: str = "test",
    excluded_missing: int = 0,
) -> EpisodeList:
    """Draw a fixed list of ``n`` ``way``-way ``shot``-shot episodes from a pool of videos.

    pool_ids: (N,) video ids of the split (any order; missing videos already removed by the caller,
        their number passed as ``excluded_missing``). pool_classes: (N,) class name of each video.
    With a preset ``protocol`` (:data:`PROTOCOLS`), ``n`` and ``query`` default to the preset's and
    must not contradict it. Each episode has ``way`` distinct classes and ``shot + query`` distinct
    videos per class, so no video is both support and query.
    """
    n, query, n_runs = _resolve_protocol(protocol, n, query)
    if min(way, shot, query, n) < 1:
        raise EpisodeError(f"way, shot, query and n must be >= 1, got {way}, {shot}, {query}, {n}")
    ids, names, members = _group_pool(pool_ids, pool_classes, shot + query, way)
    bitgen = np.random.PCG64(seed)
    class_pick = _partial_shuffle(len(names), _uniforms(bitgen, (n, way)))  # (E, way)
    videos = np.empty((n, way, shot + query), dtype=np.int64)  # positions in the sorted pool
    for c in range(len(names)):
        ep_idx, slot = np.nonzero(class_pick == c)  # episode order
        picks = _partial_shuffle(len(members[c]), _uniforms(bitgen, (len(ep_idx), shot + query)))
        videos[ep_idx, slot] = members[c][picks]
    # Re-index onto the ids actually used by the list (pool positions sort like the ids).
    used, inverse = np.unique(videos, return_inverse=True)
    inverse = inverse.reshape(videos.shape).astype(np.int32)
    used_classes, class_inv = np.unique(class_pick, return_inverse=True)
    return EpisodeList(
        ids=ids[used],
        classes=np.asarray(names)[used_classes],
        support_idx=np.ascontiguousarray(inverse[:, :, :shot]),
        query_idx=np.ascontiguousarray(inverse[:, :, shot:]),
        class_idx=class_inv.reshape(n, way).astype(np.int32),
        dataset=dataset,
        split=split,
        way=way,
        shot=shot,
        query=query,
        seed=seed,
        protocol=protocol,
        pool_sha256=pool_sha256(pool_ids),
        n_runs=n_runs,
        excluded_missing=excluded_missing,
    )
