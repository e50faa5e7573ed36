"""Episode lists drawn from the usable videos of one split of a feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsar.cache.store import FeatureCache
from fsar.episodes.coverage import Coverage
from fsar.episodes.episode_list import EpisodeError, EpisodeList
from fsar.episodes.io import load_episodes, save_episodes
from fsar.episodes.sampling import pool_sha256
from fsar.episodes.sampling import sample_episodes as draw_episodes


def split_pool(cache: FeatureCache, split: str, modality: str = "rgb") -> tuple[list[str], list[str], int]:
    """Ids and class names of a split's usable videos, and how many were left out (not done/unreadable)."""
    rows = cache.rows_of_split(split)
    if modality not in cache.modalities:
        modality = cache.modalities[0]
    usable = cache.usable(modality)[rows]
    kept = rows[usable]
    return cache.ids[kept].tolist(), cache.class_of(kept).tolist(), int((~usable).sum())


def episodes_for(cache: FeatureCache, *, split: str, way: int, shot: int, seed: int, protocol: str,
                 query: int | None = None, n: int | None = None) -> EpisodeList:
    """Draw an episode list over the usable videos of one split of ``cache``."""
    ids, classes, missing = split_pool(cache, split)
    return draw_episodes(ids, classes, way=way, shot=shot, query=query, n=n, seed=seed, protocol=protocol,
                         dataset=cache.spec.dataset, split=split, excluded_missing=missing)


def ensure_episodes(path: Path, cache: FeatureCache, **kwargs: Any) -> EpisodeList:
    """Load the fixed list at ``path``, drawing and saving it on first use.

    A list drawn from another pool than the cache's usable videos of that split now (videos extracted or
    lost since, or another cache's) is refused rather than reused: its numbers would not be the ones a
    fresh list gives on this cache.
    """
    if not path.exists():
        episodes = episodes_for(cache, **kwargs)
        save_episodes(episodes, path)
        return episodes
    episodes = load_episodes(path)
    ids = split_pool(cache, episodes.split)[0]
    if episodes.pool_sha256 != pool_sha256(ids):
        raise EpisodeError(
            f"the fixed episode list {path} was drawn from another pool of {episodes.split} videos than cache "
            f"{cache.path} now has ({len(ids)} usable): its videos were extracted, lost or recorded unreadable "
            f"since. Delete the list to draw it again from the current pool, or keep it and evaluate with "
            f"--episodes LIST (only its own videos are checked then)")
    return episodes


def coverage(cache: FeatureCache, split: str) -> Coverage:
    """The coverage of the split list by the cache's pool of ``split`` (its usable videos)."""
    ids, classes, _ = split_pool(cache, split)
    rows = cache.rows_of_split(split)
    return Coverage(len(ids), len(rows), len(set(classes)), len(set(cache.class_of(rows).tolist())))


def pool_line(cache: FeatureCache, split: str) -> str:
    """:meth:`Coverage.line` of the cache's pool of ``split``."""
    return coverage(cache, split).line(split)

