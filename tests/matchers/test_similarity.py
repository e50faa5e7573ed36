"""The frame cosines gathered from per-video tables (evaluation's path) against a plain per-pair reference."""

from __future__ import annotations

import numpy as np
import pytest

import fsar.matchers.similarity as similarity
from fsar.episodes import EpisodeList, sample_episodes
from fsar.matchers.registry import get, load_all
from fsar.runner import scoring
from fsar.runner.features import LoadedFeatures, center_in_time

# Every parameter-free matcher on frames; proto and bimhm read the features themselves (means, prototypes).
MATCHERS = ("otam", "otam_soft", "dtw", "km", "chamfer", "jmm", "bimhm", "proto")


def _reference_cosines(query: np.ndarray, support: np.ndarray) -> np.ndarray:
    """[E, Q, T1, D] x [E, S, T2, D] -> [E, Q, S, T1, T2]: numpy cosine of each frame pair, one at a time."""
    q, s = np.asarray(query, np.float64), np.asarray(support, np.float64)
    out = np.zeros((q.shape[0], q.shape[1], s.shape[1], q.shape[2], s.shape[2]), dtype=np.float32)
    for index in np.ndindex(*out.shape):
        e, i, j, a, b = index
        u, v = q[e, i, a], s[e, j, b]
        out[index] = u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12)
    return out


def _list_and_features(t: int, center: bool, seed: int) -> tuple[EpisodeList, LoadedFeatures]:
    rng = np.random.default_rng(seed)
    ids = [f"c{c}_{k}" for c in range(4) for k in range(4)]
    classes = [f"c{c}" for c in range(4) for _ in range(4)]
    episodes = sample_episodes(ids, classes, way=3, shot=2, query=1, n=12, seed=seed, dataset="toy")
    feats = rng.normal(size=(len(episodes.ids), t, 5)).astype(np.float16)
    if center:
        feats = center_in_time(feats)
    return episodes, LoadedFeatures({"rgb": feats.astype(np.float32)})


@pytest.mark.parametrize("use_table", [True, False])
@pytest.mark.parametrize(("t", "center"), [(4, False), (4, True), (1, False)])
def test_gathered_cosines_equal_the_per_pair_reference(use_table: bool, t: int, center: bool) -> None:
    episodes, loaded = _list_and_features(t, center, seed=1)
    videos = loaded.features["rgb"]
    frames = similarity.VideoFrames(videos, pairs=10**6, table_bytes=None if use_table else 0)
    assert frames.use_table == use_table
    rng = np.random.default_rng(2)
    qr, sr = rng.integers(0, len(videos), (3, 2)), rng.integers(0, len(videos), (3, 5))
    query, support = videos[qr], videos[sr]
    with similarity.indexed_frames() as index:
        index.add(query, frames, qr)
        index.add(support, frames, sr)
        gathered = similarity.frame_similarity(query, support)
        costs = similarity.pair_scores(query, support, lambda c: c.reshape(len(c), -1), cost=True)
    expected = _reference_cosines(query, support)
    np.testing.assert_allclose(gathered, expected, atol=2e-6)
    np.testing.assert_allclose(costs.reshape(expected.shape), 1 - expected, atol=2e-6)


def test_sliced_gathers_into_reused_buffers_equal_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the table, episodes go through the GEMM in slices (here one or two episodes each), gathered into
    # buffers kept across calls: a later, larger call must regrow them, a smaller one must not read stale rows.
    _, loaded = _list_and_features(4, False, seed=3)
    videos = loaded.features["rgb"]
    frames = similarity.VideoFrames(videos, pairs=10**6, table_bytes=0)
    rng = np.random.default_rng(4)
    for e, gather_bytes in ((2, 1), (5, 2 * 7 * videos[0].size * 4), (1, 1), (4, 2**30)):
        monkeypatch.setattr(similarity, "GATHER_BYTES", gather_bytes)
        qr, sr = rng.integers(0, len(videos), (e, 2)), rng.integers(0, len(videos), (e, 5))
        expected = _reference_cosines(videos[qr], videos[sr])
        np.testing.assert_allclose(frames.blocks(qr, sr, cost=False), expected, atol=2e-6)
        np.testing.assert_allclose(frames.blocks(qr, sr, cost=True), 1 - expected, atol=2e-6)


@pytest.mark.parametrize("name", MATCHERS)
@pytest.mark.parametrize("use_table", [True, False])
@pytest.mark.parametrize(("t", "center"), [(4, False), (4, True), (1, False)])
def test_evaluation_scores_equal_the_per_pair_reference(monkeypatch: pytest.MonkeyPatch, name: str, use_table: bool,
                                                        t: int, center: bool) -> None:
    episodes, loaded = _list_and_features(t, center, seed=3)
    monkeypatch.setattr(similarity, "TABLE_BYTES", 2**30 if use_table else 0)
    monkeypatch.setattr(scoring, "PAIRS_PER_CHUNK", 30)  # several chunks
    score = get(name).obj

    def fn(query, support, labels, way):  # type: ignore[no-untyped-def]
        return {name: score(query["rgb"], support["rgb"], labels, way)}

    scores = scoring.score_all(fn, loaded, episodes, progress=False, desc=name,
                               frame_cosines_only=get(name).frame_cosines_only)[name]
    monkeypatch.setattr(similarity, "frame_similarity", _reference_cosines)
    e = episodes.n_episodes
    query = loaded.features["rgb"][episodes.query_idx.reshape(e, -1)]
    support = loaded.features["rgb"][episodes.support_idx.reshape(e, -1)]
    labels = np.broadcast_to(np.repeat(np.arange(episodes.way), episodes.shot), (e, episodes.way * episodes.shot))
    expected = score(query, support, labels, episodes.way)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=2e-5)
    assert (scores.argmax(-1) == expected.argmax(-1)).all()


COSINES_ONLY = sorted(n for n, info in load_all().items() if info.frame_cosines_only)


@pytest.mark.parametrize("name", COSINES_ONLY)
def test_matchers_declared_cosines_only_score_the_same_without_their_features(name: str) -> None:
    assert COSINES_ONLY == ["chamfer", "dtw", "jmm", "km", "otam", "otam_soft"]
    episodes, loaded = _list_and_features(4, False, seed=4)
    score = get(name).obj

    def fn(q, s, lab, way):  # type: ignore[no-untyped-def]
        return {name: score(q["rgb"], s["rgb"], lab, way)}

    blind = scoring._ChunkScorer(fn, loaded, 10**6, frame_cosines_only=True)
    seeing = scoring._ChunkScorer(fn, loaded, 10**6, frame_cosines_only=False)
    assert not blind.reads and seeing.reads
    np.testing.assert_array_equal(blind(episodes.slice(0, 4))[name], seeing(episodes.slice(0, 4))[name])


def test_a_matcher_wrongly_declared_cosines_only_is_refused() -> None:
    episodes, loaded = _list_and_features(4, False, seed=4)
    proto = get("proto").obj  # reads the features: mean over frames, prototypes
    scorer = scoring._ChunkScorer(lambda q, s, lab, way: {"proto": proto(q["rgb"], s["rgb"], lab, way)}, loaded,
                                  10**6, frame_cosines_only=True)
    with pytest.raises((RuntimeError, ValueError), match="frame_cosines_only|finite|NaN"):
        scorer(episodes.slice(0, 4))
