"""Episode lists drawn from the usable videos of one split of a feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsar.cache.schema import Status
from fsar.cache.store import FeatureCache
from fsar.episodes.episode_list import EpisodeList
from fsar.episodes.io import load_episodes, save_episodes
from fsar.episodes.sampling import sample_episodes as draw_episodes


def split_pool(cache: FeatureCache, split: str, modality: str = "rgb") -> tuple[list[str], list[str], int]:
    """Ids and class names of a split's usable videos, and how many were left out (not done/unreadable)."""
    rows = cache.rows_of_split(split)
    if modality not in cache.modalities:
        modality = cache.modalities[0]
    usable = cache.done(modality)[rows] & (cache.status(modality)[rows] != Status.UNREADABLE)
    kept = rows[usable]
    return cache.ids[kept].tolist(), cache.class_of(kept).tolist(), int((~usable).sum())


def episodes_for(cache: FeatureCache, *, split: str, way: int, shot: int, seed: int, protocol: str,
                 query: int | None = None, n: int | None = None) -> EpisodeList:
    """Draw an episode list over the usable videos of one split of ``cache``."""
    ids, classes, missing = split_pool(cache, split)
    return draw_episodes(ids, classes, way=way, shot=shot, query=query, n=n, seed=seed, protocol=protocol,
                         dataset=cache.spec.dataset, split=split, excluded_missing=missing)


def ensure_episodes(path: Path, cache: FeatureCache, **kwargs: Any) -> EpisodeList:
    """Load the fixed list at ``path``, drawing and saving it on first use."""
    if path.exists():
        return load_episodes(path)
    episodes = episodes_for(cache, **kwargs)
    save_episodes(episodes, path)
    return episodes

