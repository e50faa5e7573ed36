"""Builders shared by the test packages: toy datasets, toy feature caches, episode lists and result records.

Each builder is a plain function (``build_*``) handed to tests by a session fixture of the same name
without the prefix, so a test asks for ``toy_cache`` and calls it with the settings it needs::

    def test_x(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
        cache_path = toy_cache(tmp_path / "c.zarr", noise=2.0)

Every builder draws from its own seeded generator: the same call gives the same data in any test order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from fsar.cache.create import create_cache
from fsar.cache.schema import CacheSpec
from fsar.cache.store import open_cache
from fsar.episodes import save_episodes
from fsar.episodes.pool import episodes_for
from fsar.report import Record, make_record

VideoTable = tuple[list[str], list[int], list[str], list[str]]

# Layout of the toy cache (toy_cache): T frames of D features, PER_CLASS videos per class.
TOY_FRAMES, TOY_DIM, TOY_PER_CLASS = 4, 16, 6
TOY_SPLITS = {"train": 2, "val": 4, "test": 5}

# Layout of the nuisance cache (nuisance_cache): enough train classes to train a head on.
NUISANCE_SPLITS = {"train": 30, "val": 4, "test": 5}
NUISANCE_SIGNAL = 4  # the first dims carry the class; the others a per-video offset


def build_video_table(split_classes: dict[str, int], per_class: int, class_infix: str = "") -> VideoTable:
    """(ids, labels, splits, class names) of a toy dataset: class ``<split><infix><c>``, videos ``<class>_<k>``."""
    ids: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    names: list[str] = []
    for split, n_classes in split_classes.items():
        for _ in range(n_classes):
            names.append(f"{split}{class_infix}{len(names)}")
            for k in range(per_class):
                ids.append(f"{names[-1]}_{k}")
                labels.append(len(names) - 1)
                splits.append(split)
    return ids, labels, splits, names


def build_toy_cache(path: Path, modalities: tuple[str, ...] = ("rgb",), patches: int = 0, noise: float = 0.6) -> Path:
    """Each class is a fixed random sequence of T frames; videos are noisy copies of it.

    Layout: TOY_SPLITS classes with TOY_PER_CLASS videos each, [TOY_FRAMES, TOY_DIM] features per video
    (``patches`` > 0 adds patches x patches copies of each frame as its patch grid).
    """
    rng = np.random.default_rng(0)
    t, d = TOY_FRAMES, TOY_DIM
    ids, labels, splits, names = build_video_table(TOY_SPLITS, TOY_PER_CLASS)
    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=d, frames=t,
                     patches=patches, modalities=modalities, chunk_videos=8)
    cache = create_cache(path, spec, ids, labels, splits, names)
    centres = rng.standard_normal((len(names), t, d))
    for m in modalities:
        feats = centres[labels] + noise * rng.standard_normal((len(ids), t, d))
        for start, stop in cache.chunk_ranges():
            n = stop - start
            block = feats[start:stop, None]
            pat = np.repeat(block[:, :, :, None], patches * patches, axis=3) if patches else None
            cache.write_chunk(m, start, block, np.zeros(n, np.int8), [""] * n, np.full(n, t, np.int32), pat)
    return path


def build_episode_list(tmp_path: Path, cache_path: Path, n: int = 40, shot: int = 2, way: int = 5) -> Path:
    """A seeded list of ``n`` test episodes (2 queries per class) of the cache, saved as ``tmp_path/ep.npz``."""
    cache = open_cache(cache_path)
    episodes = episodes_for(cache, split="test", way=way, shot=shot, query=2, n=n, seed=3, protocol="custom")
    return save_episodes(episodes, tmp_path / "ep.npz")


def build_nuisance_cache(path: Path, *, views: int = 2, dim: int = 16, modalities: tuple[str, ...] = ("rgb",),
                         seed: int = 0, frames: int = 4, per_class: int = 6,
                         split_classes: dict[str, int] = NUISANCE_SPLITS) -> Path:
    """Classes live in the first NUISANCE_SIGNAL dims; a large per-video offset fills the rest.

    Cosine similarity of raw features is dominated by the offset (near chance); a head that learns to
    weight the signal dims separates the classes. Views are fresh noise around the same video.
    """
    rng = np.random.default_rng(seed)
    signal = NUISANCE_SIGNAL
    ids, labels, splits, names = build_video_table(split_classes, per_class)
    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=dim,
                     frames=frames, views=views, modalities=modalities, chunk_videos=8)
    cache = create_cache(path, spec, ids, labels, splits, names)
    centres = np.zeros((len(names), frames, dim))
    centres[..., :signal] = 1.5 * rng.standard_normal((len(names), frames, signal))
    offsets = np.zeros((len(ids), 1, 1, dim))
    offsets[..., signal:] = 3.0 * rng.standard_normal((len(ids), 1, 1, dim - signal))
    for m in modalities:
        feats = centres[labels][:, None] + offsets + 0.5 * rng.standard_normal((len(ids), views, frames, dim))
        for start, stop in cache.chunk_ranges():
            n = stop - start
            cache.write_chunk(m, start, feats[start:stop], np.zeros(n, np.int8), [""] * n,
                              np.full(n, frames, np.int32))
    return path


def build_record(
    matcher: str,
    correct: NDArray[np.bool_] | None = None,
    *,
    dataset: str = "ssv2",
    way: int = 5,
    shot: int = 1,
    query: int = 1,
    accuracy: float | None = None,
    ci95: float | None = None,
    created: str = "2024-01-01T00:00:00+00:00",
    episodes_sha256: str = "e" * 64,
    cache_sha256: str = "c" * 64,
    provenance: dict[str, object] | None = None,
) -> Record:
    """A result record with fixed metadata; ``accuracy``/``ci95`` override the computed values.

    ``provenance`` (fsar.report.provenance.FIELDS) overrides what the other arguments give.

    Without ``correct``: 20 episodes of seeded coin flips.
    """
    if correct is None:
        correct = np.random.default_rng(0).random((20, way * query)) < 0.5
    rec = make_record(
        matcher=matcher, params={"lam": 0.1}, dataset=dataset, split="test", way=way, shot=shot,
        query=query, protocol="custom", cache_path="caches/x.zarr", cache_sha256=cache_sha256,
        episodes_path="episodes/x.npz", episodes_sha256=episodes_sha256, correct=correct, seconds=2.0,
        provenance=provenance,
    )
    changes: dict[str, object] = {"created": created}
    if accuracy is not None:
        changes["accuracy"] = accuracy
    if ci95 is not None:
        changes["ci95"] = ci95
    return dataclasses.replace(rec, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def video_table() -> Callable[..., VideoTable]:
    """:func:`build_video_table`."""
    return build_video_table


@pytest.fixture(scope="session")
def toy_cache() -> Callable[..., Path]:
    """:func:`build_toy_cache`."""
    return build_toy_cache


@pytest.fixture(scope="session")
def write_list() -> Callable[..., Path]:
    """:func:`build_episode_list`."""
    return build_episode_list


@pytest.fixture(scope="session")
def nuisance_cache() -> Callable[..., Path]:
    """:func:`build_nuisance_cache`."""
    return build_nuisance_cache


@pytest.fixture(scope="session")
def record() -> Callable[..., Record]:
    """:func:`build_record`."""
    return build_record
