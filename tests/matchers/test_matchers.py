"""Each parameter-free matcher against a direct, per-pair computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fsar.matchers import bimhm, chamfer, dtw, fusion, jmm, km, otam, proto, zoom
from fsar.matchers.similarity import check_episode, class_prototypes, frame_similarity, shot_mean

from .oracles import dtw_reference, otam_reference, zoom_reference


def _episode(seed: int, e: int = 2, q: int = 3, way: int = 3, shot: int = 2, t: int = 5, d: int = 6):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(e, q, t, d)).astype(np.float32)
    support = rng.normal(size=(e, way * shot, t, d)).astype(np.float32)
    labels = np.stack([rng.permutation(np.repeat(np.arange(way), shot)) for _ in range(e)])
    return query, support, labels, way


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def _per_pair(query, support, labels, way, pair_fn) -> np.ndarray:
    e, nq = query.shape[:2]
    out = np.zeros((e, nq, way))
    for i in range(e):
        for j in range(nq):
            for c in range(way):
                out[i, j, c] = np.mean([pair_fn(query[i, j], support[i, s]) for s in np.flatnonzero(labels[i] == c)])
    return out


def test_proto() -> None:
    query, support, labels, way = _episode(0)
    expected = np.zeros((2, 3, way))
    for i in range(2):
        protos = np.stack([support[i, labels[i] == c].mean(axis=(0, 1)) for c in range(way)])
        expected[i] = _cos(query[i].mean(axis=1), protos)
    np.testing.assert_allclose(proto.score(query, support, labels, way), expected, rtol=1e-5, atol=1e-6)


def test_dtw_and_otam_average_the_shots() -> None:
    query, support, labels, way = _episode(1)
    np.testing.assert_allclose(
        dtw.score(query, support, labels, way),
        _per_pair(query, support, labels, way, lambda a, b: -dtw_reference(1 - _cos(a, b))),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        otam.score(query, support, labels, way),
        _per_pair(
            query, support, labels, way, lambda a, b: -otam_reference(1 - _cos(a, b)) - otam_reference(1 - _cos(b, a))
        ),
        rtol=1e-5,
    )


def test_km_against_scipy() -> None:
    def matched(a: np.ndarray, b: np.ndarray) -> float:
        sim = _cos(a, b)
        return float(sim[linear_sum_assignment(sim, maximize=True)].sum())

    query, support, labels, way = _episode(2)
    expected = _per_pair(query, support, labels, way, matched)
    np.testing.assert_allclose(km.score(query, support, labels, way), expected, rtol=1e-5)


def test_chamfer_and_bimhm() -> None:
    query, support, labels, way = _episode(3)

    def cham(a: np.ndarray, b: np.ndarray) -> float:
        sim = _cos(a, b)
        return 0.5 * (sim.max(axis=1).mean() + sim.max(axis=0).mean())

    expected = _per_pair(query, support, labels, way, cham)
    np.testing.assert_allclose(chamfer.score(query, support, labels, way), expected, rtol=1e-5)
    got = bimhm.score(query, support, labels, way)
    for i in range(2):
        for c in range(way):
            sequence = support[i, labels[i] == c].mean(axis=0)  # frame-by-frame class average
            for j in range(3):
                cost = 1 - _cos(sequence, query[i, j])
                assert got[i, j, c] == pytest.approx(-(cost.min(1).sum() + cost.min(0).sum()), rel=1e-5)


def test_jmm_components_fusion_and_multimodal() -> None:
    query, support, labels, way = _episode(4)
    flow_q, flow_s, _, _ = _episode(5)
    parts = jmm.component_scores({"rgb": query, "flow": flow_q}, {"rgb": support, "flow": flow_s}, labels, way)
    assert sorted(parts) == ["flow-km", "flow-otam", "rgb-km", "rgb-otam"]
    np.testing.assert_allclose(parts["rgb-otam"], otam.score(query, support, labels, way), rtol=1e-6)
    np.testing.assert_allclose(parts["flow-km"], km.score(flow_q, flow_s, labels, way), rtol=1e-6)
    z = fusion.episode_zscore(parts["rgb-km"])
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=(1, 2)), 1, atol=1e-5)
    # Scale of one stream must not matter after per-episode z-normalisation.
    scaled = dict(parts, **{"rgb-otam": 1000 * parts["rgb-otam"] + 7})
    np.testing.assert_allclose(fusion.fuse(scaled), fusion.fuse(parts), atol=1e-4)
    weights = {"rgb-otam": 1.0, "rgb-km": 0.5, "flow-otam": 0.25}
    expected = sum(w * fusion.episode_zscore(parts[k]) for k, w in weights.items())
    fused = jmm.score_multimodal(
        {"rgb": query, "flow": flow_q}, {"rgb": support, "flow": flow_s}, labels, way, weights=weights
    )
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    single = jmm.score(query, support, labels, way)
    np.testing.assert_allclose(single, fusion.fuse({k: parts[k] for k in ("rgb-otam", "rgb-km")}), atol=1e-6)
    with pytest.raises(ValueError, match="unknown components"):
        fusion.fuse(parts, {"depth-km": 1.0})
    with pytest.raises(ValueError):
        jmm.component_scores({"rgb": query}, {"flow": flow_s}, labels, way)
    assert (fusion.episode_zscore(np.ones((1, 2, 3))) == 0).all()


@pytest.mark.parametrize(("t", "p", "n_clips", "n_patches"), [(5, 4, 3, 5), (4, 2, 10, 10), (1, 3, 10, 10)])
def test_zoom_against_explicit_clip_embeddings(t: int, p: int, n_clips: int, n_patches: int) -> None:
    rng = np.random.default_rng(t * 10 + p)
    way, shot = 2, 2
    query = rng.normal(size=(2, 2, t, p, 5)).astype(np.float32)
    support = rng.normal(size=(2, way * shot, t, p, 5)).astype(np.float32)
    labels = np.array([[0, 1, 1, 0], [1, 0, 0, 1]])
    got = zoom.score(query, support, labels, way, n_clips=n_clips, n_patches=n_patches)
    length = min(2, t)
    nc = min(n_clips, len(zoom.ordered_clips(t, length)))
    npat = min(n_patches, length * p)
    expected = _per_pair(query, support, labels, way, lambda a, b: zoom_reference(a, b, nc, npat, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_helpers() -> None:
    query, support, labels, way = _episode(6)
    sim = frame_similarity(query, support)
    assert sim.shape == (2, 3, 6, 5, 5) and sim.dtype == np.float32
    np.testing.assert_allclose(sim[1, 2, 4], _cos(query[1, 2], support[1, 4]), rtol=1e-5, atol=1e-6)
    pair = np.random.default_rng(0).normal(size=(2, 3, 6))
    means = shot_mean(pair, labels, way)
    assert means[1, 0, 2] == pytest.approx(pair[1, 0, labels[1] == 2].mean(), rel=1e-5)
    protos = class_prototypes(support, labels, way)
    np.testing.assert_allclose(protos[0, 1], support[0, labels[0] == 1].mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="every class"):
        check_episode(query, support, np.zeros_like(labels), way)
    with pytest.raises(ValueError):
        check_episode(query, support, labels + 1, way)
    with pytest.raises(ValueError):
        check_episode(query[..., :3], support, labels, way)
    bad = query.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_episode(bad, support, labels, way)


def test_dropped_components_are_named_compactly() -> None:
    from fsar.matchers.fusion import dropped_label

    jmm = {"rgb-otam": 1.0, "rgb-km": 0.0, "flow-otam": 0.5, "flow-km": 0.0}
    assert dropped_label(jmm) == "km 0"  # every stream's km: the row is OTAM on two streams
    assert dropped_label(jmm | {"rgb-km": 0.5}) == "flow-km 0"
    assert dropped_label({"rgb-otam": 1.0, "flow-otam": 0.0}) == "flow 0"  # a stream left out
    assert dropped_label({"rgb-otam": 1.0, "rgb-km": 1.0, "flow-otam": 0.0, "flow-km": 0.0}) == "flow 0"
    assert dropped_label({"rgb-otam": 1.0, "rgb-km": 0.0}) == "km 0"
    assert dropped_label({"rgb-otam": 1.0, "rgb-km": 0.5}) == "" and dropped_label(None) == ""
