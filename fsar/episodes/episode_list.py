"""The in-memory episode list: which videos form the support and query sets of every episode.

Videos are referred to by id (the split-file ids), never by cache row, so one list is valid for every
cache of a dataset. Ids and class names are stored once in sorted vocabularies and the episodes as
int32 indices into them; the string views (``support_ids`` ...) are decoded on access, so streaming
with :func:`iter_chunks` keeps memory flat in the number of episodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from fsar.errors import FsarError

FORMAT_VERSION = 1


class EpisodeError(FsarError, ValueError):
    """An episode list cannot be drawn, read or used as asked; the message says why and what to do."""


@dataclass(frozen=True, eq=False)
class EpisodeList:
    """A fixed list of E few-shot episodes.

    Arrays:
        ids: (N,) str, sorted unique video ids used by the list.
        classes: (C,) str, sorted unique class names used by the list.
        support_idx: (E, way, shot) int32 indices into ``ids``.
        query_idx: (E, way, query) int32 indices into ``ids``.
        class_idx: (E, way) int32 indices into ``classes``; position ``w`` is episode label ``w``.

    Metadata: ``pool_sha256`` is :func:`fsar.episodes.pool_sha256` of the pool the list was drawn
    from; ``n_runs > 1`` splits the list into contiguous runs of ``E // n_runs`` episodes (the ita
    protocol); ``excluded_missing`` counts pool videos the caller left out because they were missing.
    """

    ids: NDArray[np.str_]
    classes: NDArray[np.str_]
    support_idx: NDArray[np.int32]
    query_idx: NDArray[np.int32]
    class_idx: NDArray[np.int32]
    dataset: str
    split: str
    way: int
    shot: int
    query: int
    seed: int
    protocol: str
    pool_sha256: str
    n_runs: int = 1
    excluded_missing: int = 0
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        e = self.support_idx.shape[0]
        expect = {
            "support_idx": (self.support_idx, (e, self.way, self.shot)),
            "query_idx": (self.query_idx, (e, self.way, self.query)),
            "class_idx": (self.class_idx, (e, self.way)),
        }
        for name, (arr, shape) in expect.items():
            if arr.shape != shape:
                raise EpisodeError(f"episode list: {name} has shape {arr.shape}, expected {shape}")
        if self.n_runs < 1 or e % self.n_runs:
            raise EpisodeError(f"episode list: {e} episodes do not split into {self.n_runs} equal runs")

    @property
    def n_episodes(self) -> int:
        """Number of episodes E."""
        return int(self.support_idx.shape[0])

    @property
    def support_ids(self) -> NDArray[np.str_]:
        """(E, way, shot) str: support video ids."""
        return self.ids[self.support_idx]

    @property
    def query_ids(self) -> NDArray[np.str_]:
        """(E, way, query) str: query video ids; ``query_ids[e, w]`` belong to class ``w``."""
        return self.ids[self.query_idx]

    @property
    def class_names(self) -> NDArray[np.str_]:
        """(E, way) str: class name of each episode label."""
        return self.classes[self.class_idx]

    def slice(self, start: int, stop: int) -> EpisodeList:
        """Episodes ``start:stop`` as a list sharing the vocabularies (``n_runs`` becomes 1)."""
        return replace(
            self,
            support_idx=self.support_idx[start:stop],
            query_idx=self.query_idx[start:stop],
            class_idx=self.class_idx[start:stop],
            n_runs=1,
        )

    def rows(self, available_ids: Sequence[str] | NDArray[np.str_]) -> tuple[NDArray[np.int64], ...]:
        """Map the episodes onto positions in ``available_ids`` (e.g. a cache's ``videos/id``).

        Returns ``(support_rows (E, way, shot), query_rows (E, way, query))`` int64. Raises
        :class:`EpisodeError` (see :func:`check_episodes_fit`) if any id is absent.
        """
        check_episodes_fit(self, available_ids)
        position = {str(v): i for i, v in enumerate(available_ids)}
        vocab_rows = np.array([position[str(v)] for v in self.ids], dtype=np.int64)
        return vocab_rows[self.support_idx], vocab_rows[self.query_idx]


def check_episodes_fit(ep: EpisodeList, available_ids: Iterable[str]) -> None:
    """Raise :class:`EpisodeError` naming how many and which ids of ``ep`` are not available.

    ``available_ids``: the video ids a feature cache holds (with completed extraction).
    """
    available = {str(v) for v in available_ids}
    missing = [str(v) for v in ep.ids if str(v) not in available]
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise EpisodeError(
        f"{len(missing)} of the {len(ep.ids)} videos used by the {ep.dataset or 'dataset'} "
        f"{ep.split} episode list are not in the cache ({shown}). Run `fsar extract` for the "
        f"missing videos, or draw a new list over the videos the cache holds with `fsar episodes` "
        f"(missing videos are then excluded and counted)."
    )


def iter_chunks(ep: EpisodeList, chunk_size: int) -> Iterator[tuple[int, EpisodeList]]:
    """Yield ``(start, chunk)`` with consecutive chunks of at most ``chunk_size`` episodes."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, ep.n_episodes, chunk_size):
        yield start, ep.slice(start, min(start + chunk_size, ep.n_episodes))
