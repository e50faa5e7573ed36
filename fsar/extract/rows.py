"""The rows of a cache's video table as extraction sees them, and which chunks a run still has to commit.

Every line of the chosen split lists is a row from the start, found under the dataset root or not: the table,
and with it the shards' chunk-aligned row ranges, stays the same while a partial download completes, and
re-running the same command adds the videos that arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from fsar.cache.schema import Status
from fsar.cache.store import FeatureCache, shard_ranges
from fsar.datasets.catalog import DatasetListing, VideoEntry
from fsar.extract.source import VideoItem


class TableRow(NamedTuple):
    """One row of the cache's video table: a line of the chosen split lists, and its video if it is there."""

    id: str
    class_name: str
    split: str
    video: VideoEntry | None  # None: not under the dataset root (yet); a later run adds it


def table_rows(listing: DatasetListing, splits: Sequence[str]) -> list[TableRow]:
    """Every line of ``splits`` in the listing's order, with its video where it was found."""
    found = {v.id: v for v in listing.videos}
    return [TableRow(vid, cls, split, found.get(vid)) for split, cls, vid in listing.lines if split in splits]


def pending_chunks(cache: FeatureCache, modalities: Sequence[str], shard: tuple[int, int], rows: list[TableRow]
                   ) -> tuple[list[int], list[tuple[int, int, list[str], int]]]:
    """Rows to decode, and the chunks to commit: (start, stop, the modalities the chunk lacks, how many of its rows
    are decoded). A chunk is pending while a video that is there is not done, or a missing one is not yet
    recorded as missing; a chunk is committed whole, so its present videos are all decoded again."""
    done = {m: cache.done(m) for m in modalities}
    status = {m: cache.status(m) for m in modalities}
    jobs: list[int] = []
    pending = []
    for start, stop in shard_ranges(cache, *shard):
        present = [r for r in range(start, stop) if rows[r].video is not None]
        absent = [r for r in range(start, stop) if rows[r].video is None]
        mods = [m for m in modalities if not done[m][present].all()
                or (status[m][absent] != Status.MISSING).any()]
        if mods:
            pending.append((start, stop, mods, len(present)))
            jobs.extend(present)
    return jobs, pending


def missing_item(row: int, line: TableRow) -> VideoItem:
    return VideoItem(row, line.id, int(Status.MISSING), "not found under the dataset root", 0, {})
