"""Episode sampling: determinism, within-episode constraints, uniformity, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from fsar.episodes import (
    PROTOCOLS,
    EpisodeError,
    check_episodes_fit,
    episodes_to_bytes,
    iter_chunks,
    pool_sha256,
    sample_episodes,
)


def make_pool(n_classes: int = 8, per_class: int = 7, seed: int = 0) -> tuple[list[str], list[str]]:
    """A shuffled pool of ids 'c{k}_v{i}' labelled 'class{k}'."""
    ids = [f"c{k}_v{i}" for k in range(n_classes) for i in range(per_class)]
    classes = [f"class{k}" for k in range(n_classes) for _ in range(per_class)]
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order], [classes[i] for i in order]


def test_same_arguments_same_bytes_and_pool_order_irrelevant() -> None:
    ids, classes = make_pool(seed=0)
    ids2, classes2 = make_pool(seed=1)  # same pool, another order
    a = sample_episodes(ids, classes, way=5, shot=2, query=3, n=50, seed=7)
    b = sample_episodes(ids2, classes2, way=5, shot=2, query=3, n=50, seed=7)
    assert episodes_to_bytes(a) == episodes_to_bytes(b)
    assert a.pool_sha256 == b.pool_sha256 == pool_sha256(sorted(ids))


def test_different_seed_different_episodes() -> None:
    ids, classes = make_pool()
    a = sample_episodes(ids, classes, way=5, shot=1, query=1, n=20, seed=0)
    b = sample_episodes(ids, classes, way=5, shot=1, query=1, n=20, seed=1)
    assert not np.array_equal(a.support_ids, b.support_ids)


@pytest.mark.parametrize(("way", "shot", "query"), [(2, 1, 1), (5, 2, 3), (8, 1, 6)])
def test_constraints_within_episodes(way: int, shot: int, query: int) -> None:
    ids, classes = make_pool()
    label = dict(zip(ids, classes, strict=True))
    ep = sample_episodes(ids, classes, way=way, shot=shot, query=query, n=200, seed=3)
    assert ep.support_ids.shape == (200, way, shot)
    assert ep.query_ids.shape == (200, way, query)
    assert ep.class_names.shape == (200, way)
    for e in range(ep.n_episodes):
        names = ep.class_names[e]
        assert len(set(names)) == way
        videos = np.concatenate([ep.support_ids[e], ep.query_ids[e]], axis=1)  # (way, shot + query)
        assert len(set(videos.ravel())) == way * (shot + query)  # distinct, no support-query overlap
        for w in range(way):
            assert {label[v] for v in videos[w]} == {names[w]}


def test_classes_and_videos_used_uniformly() -> None:
    ids, classes = make_pool(n_classes=8, per_class=7)
    ep = sample_episodes(ids, classes, way=5, shot=1, query=1, n=4000, seed=11)
    _, class_counts = np.unique(ep.class_names, return_counts=True)
    assert len(class_counts) == 8
    assert chisquare(class_counts).pvalue > 1e-4
    _, video_counts = np.unique(np.concatenate([ep.support_ids.ravel(), ep.query_ids.ravel()]),
                                return_counts=True)
    assert len(video_counts) == 56
    assert chisquare(video_counts).pvalue > 1e-4
    # Each chosen class position is equally likely to hold any class (labels are not sorted).
    assert chisquare(np.unique(ep.class_names[:, 0], return_counts=True)[1]).pvalue > 1e-4


def test_too_few_videos_names_the_class() -> None:
    ids, classes = make_pool(n_classes=6, per_class=5)
    ids, classes = ids + ["small_1", "small_2"], classes + ["tiny class", "tiny class"]
    with pytest.raises(EpisodeError, match=r"'tiny class' has 2") as info:
        sample_episodes(ids, classes, way=5, shot=2, query=1, n=10, seed=0)
    assert "shot + query = 3" in str(info.value)


def test_too_few_classes_and_bad_pools() -> None:
    ids, classes = make_pool(n_classes=3)
    with pytest.raises(EpisodeError, match="3 classes, fewer than way = 5"):
        sample_episodes(ids, classes, way=5, shot=1, query=1, n=10, seed=0)
    with pytest.raises(EpisodeError, match="duplicate"):
        sample_episodes(ids + ids[:1], classes + classes[:1], way=2, shot=1, query=1, n=10, seed=0)
    with pytest.raises(EpisodeError, match="class labels"):
        sample_episodes(ids, classes[:-1], way=2, shot=1, query=1, n=10, seed=0)


def test_protocol_presets() -> None:
    assert (PROTOCOLS["otam"].n_episodes, PROTOCOLS["otam"].query) == (10_000, 1)
    assert (PROTOCOLS["ita"].n_runs, PROTOCOLS["ita"].episodes_per_run, PROTOCOLS["ita"].query) == (10, 600, 15)
    assert (PROTOCOLS["m3net"].n_episodes, PROTOCOLS["m3net"].query) == (6_000, 5)
    ids, classes = make_pool(n_classes=6, per_class=20)
    ep = sample_episodes(ids, classes, way=5, shot=1, seed=0, protocol="ita", dataset="toy")
    assert (ep.n_episodes, ep.query, ep.n_runs, ep.protocol) == (6000, 15, 10, "ita")
    with pytest.raises(EpisodeError, match="fixes query = 15"):
        sample_episodes(ids, classes, way=5, shot=1, query=1, seed=0, protocol="ita")
    with pytest.raises(EpisodeError, match="unknown protocol"):
        sample_episodes(ids, classes, way=5, shot=1, query=1, n=5, seed=0, protocol="nope")


def test_check_fit_and_rows() -> None:
    ids, classes = make_pool()
    ep = sample_episodes(ids, classes, way=3, shot=1, query=2, n=30, seed=0)
    cache_ids = list(reversed(ids))
    check_episodes_fit(ep, cache_ids)
    support_rows, query_rows = ep.rows(cache_ids)
    assert np.array_equal(np.asarray(cache_ids)[support_rows], ep.support_ids)
    assert np.array_equal(np.asarray(cache_ids)[query_rows], ep.query_ids)
    absent = str(ep.ids[0])
    with pytest.raises(EpisodeError, match=rf"1 of the {len(ep.ids)} videos .*{absent}.*fsar extract"):
        check_episodes_fit(ep, [v for v in ids if v != absent])
    with pytest.raises(EpisodeError, match="not in the cache"):
        ep.rows(["unrelated"])


def test_iter_chunks_covers_all_episodes() -> None:
    ids, classes = make_pool()
    ep = sample_episodes(ids, classes, way=4, shot=1, query=1, n=23, seed=0)
    chunks = list(iter_chunks(ep, 10))
    assert [start for start, _ in chunks] == [0, 10, 20]
    assert [c.n_episodes for _, c in chunks] == [10, 10, 3]
    joined = np.concatenate([c.query_ids for _, c in chunks])
    assert np.array_equal(joined, ep.query_ids)
    with pytest.raises(ValueError):
        next(iter_chunks(ep, 0))
