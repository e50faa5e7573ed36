"""Fixed episode lists: deterministic sampling, protocol presets and the episode-list file format."""

from fsar.episodes.episode_list import (
    FORMAT_VERSION,
    EpisodeError,
    EpisodeList,
    check_episodes_fit,
    iter_chunks,
)
from fsar.episodes.io import episodes_to_bytes, load_episodes, save_episodes
from fsar.episodes.protocols import CUSTOM, PROTOCOLS, Protocol
from fsar.episodes.sampling import pool_sha256, sample_episodes

__all__ = [
    "CUSTOM",
    "FORMAT_VERSION",
    "PROTOCOLS",
    "EpisodeError",
    "EpisodeList",
    "Protocol",
    "check_episodes_fit",
    "episodes_to_bytes",
    "iter_chunks",
    "load_episodes",
    "pool_sha256",
    "sample_episodes",
    "save_episodes",
]
