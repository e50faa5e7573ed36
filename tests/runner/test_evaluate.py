from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fsar.cache.store import CacheError, open_cache
from fsar.episodes import EpisodeError, sample_episodes, save_episodes
from fsar.matchers.registry import get
from fsar.runner.evaluate import EvalRun, evaluate, summary_line
from fsar.runner.features import center_in_time

Builder = Callable[..., Path]


def test_chunked_evaluation_equals_one_episode_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          toy_cache: Builder, write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr", noise=2.0)
    ep_path = write_list(tmp_path, cache_path)
    monkeypatch.setattr("fsar.runner.scoring.PAIRS_PER_CHUNK", 150)  # several chunks
    record = evaluate(EvalRun("otam"), cache_path, ep_path, progress=False)
    # Oracle: score each episode alone through the registered function, reading features by id.
    cache = open_cache(cache_path)
    from fsar.episodes import load_episodes

    episodes = load_episodes(ep_path)
    score = get("otam").obj
    for e in range(episodes.n_episodes):
        q = cache.frames("rgb", cache.rows_for(episodes.query_ids[e].ravel()))[None]
        s = cache.frames("rgb", cache.rows_for(episodes.support_ids[e].ravel()))[None]
        labels = np.repeat(np.arange(episodes.way), episodes.shot)[None]
        pred = score(q, s, labels, episodes.way)[0].argmax(-1)
        np.testing.assert_array_equal(record.correct[e], pred == np.repeat(np.arange(episodes.way), 2))
    assert 20 < record.accuracy < 100  # noisy enough not to be trivial
    assert "otam" in summary_line(record) and "40 episodes" in summary_line(record)


def test_separable_features_are_solved(tmp_path: Path, toy_cache: Builder, write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr", noise=0.1)
    ep_path = write_list(tmp_path, cache_path)
    for name in ("proto", "otam", "km", "dtw"):
        assert evaluate(EvalRun(name), cache_path, ep_path, progress=False).accuracy == 100.0


def test_two_streams_weights_chosen_on_val(tmp_path: Path, toy_cache: Builder, write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr", modalities=("rgb", "flow"), noise=1.5)
    ep_path = write_list(tmp_path, cache_path)
    record = evaluate(EvalRun("jmm", modality="rgb+flow", val_episodes=50), cache_path, ep_path, progress=False)
    assert set(record.params["weights"]) == {"rgb-otam", "rgb-km", "flow-otam", "flow-km"}
    given = {"rgb-otam": 1.0, "rgb-km": 0.0, "flow-otam": 0.0, "flow-km": 0.0}
    fixed = evaluate(EvalRun("jmm", modality="rgb+flow", weights=given), cache_path, ep_path, progress=False)
    alone = evaluate(EvalRun("otam"), cache_path, ep_path, progress=False)
    np.testing.assert_array_equal(fixed.correct, alone.correct)


def test_weights_that_drop_a_component_are_recorded_labelled_and_warned(tmp_path: Path, toy_cache: Builder,
                                                                       write_list: Builder) -> None:
    from fsar.report.pairs import label
    from fsar.runner.evaluate import fusion_warning

    cache_path = toy_cache(tmp_path / "c.zarr", modalities=("rgb", "flow"), noise=1.5)
    ep_path = write_list(tmp_path, cache_path)
    no_km = evaluate(EvalRun("jmm", modality="rgb+flow", weights={"rgb-otam": 1.0, "flow-otam": 0.5}),
                     cache_path, ep_path, progress=False)
    assert no_km.params["weights"] == {"flow-km": 0.0, "flow-otam": 0.5, "rgb-km": 0.0, "rgb-otam": 1.0}
    assert no_km.params["weights_from"] == "given"
    assert label(no_km) == "jmm@rgb+flow [km 0]" and "[rgb+flow] [km 0] 5-way" in summary_line(no_km)
    assert "leave out km 0, so this is not jmm as published" in str(fusion_warning(no_km))
    paper = evaluate(EvalRun("jmm", modality="rgb+flow", weights="paper"), cache_path, ep_path, progress=False)
    assert paper.params["weights"] == dict.fromkeys(["flow-km", "flow-otam", "rgb-km", "rgb-otam"], 1.0)
    assert paper.params["weights_from"] == "paper" and label(paper) == "jmm@rgb+flow"
    assert fusion_warning(paper) is None


def test_bad_inputs_are_clear(tmp_path: Path, toy_cache: Builder, write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    ep_path = write_list(tmp_path, cache_path)
    with pytest.raises(CacheError, match="flow"):
        evaluate(EvalRun("otam", modality="flow"), cache_path, ep_path, progress=False)
    with pytest.raises(CacheError, match="patches"):
        evaluate(EvalRun("zoom"), cache_path, ep_path, progress=False)
    foreign = sample_episodes(
        [f"x{i}" for i in range(20)], ["a"] * 10 + ["b"] * 10, way=2, shot=1, query=1, n=3, seed=0
    )
    save_episodes(foreign, tmp_path / "foreign.npz")
    with pytest.raises(EpisodeError, match="not in the cache"):
        evaluate(EvalRun("otam"), cache_path, tmp_path / "foreign.npz", progress=False)


def test_centring_removes_a_per_video_appearance_offset(tmp_path: Path, toy_cache: Builder,
                                                        write_list: Builder) -> None:
    """Classes differ only in how features change over time; each video adds a large constant offset."""
    cache_path = toy_cache(tmp_path / "c.zarr", noise=0.05)
    cache = open_cache(cache_path, mode="a")
    rng = np.random.default_rng(1)
    feats = cache.frames("rgb").astype(np.float32)
    frames, dim = cache.spec.frames, cache.spec.feature_dim
    feats += 8.0 * rng.standard_normal((cache.n_videos, 1, dim))  # appearance: constant within a video
    for start, stop in cache.chunk_ranges():
        n = stop - start
        cache.write_chunk("rgb", start, feats[start:stop, None], np.zeros(n, np.int8), [""] * n,
                          np.full(n, frames, np.int32))
    ep_path = write_list(tmp_path, cache_path, n=60)
    raw = evaluate(EvalRun("otam"), cache_path, ep_path, progress=False)
    centred = evaluate(EvalRun("otam", center=True), cache_path, ep_path, progress=False)
    assert raw.accuracy < 60 and centred.accuracy > 95
    assert centred.params["center"] is True and "centred" in summary_line(centred)
    x = np.arange(12, dtype=np.float16).reshape(1, 3, 4)
    np.testing.assert_array_equal(center_in_time(x)[0, :, 0], np.array([-4, 0, 4], np.float16))


def test_single_stream_jmm_is_the_equal_weight_fusion(tmp_path: Path, toy_cache: Builder,
                                                      write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr", noise=2.0)
    ep_path = write_list(tmp_path, cache_path)
    record = evaluate(EvalRun("jmm"), cache_path, ep_path, progress=False)
    assert record.params["weights"] == {"rgb-km": 1.0, "rgb-otam": 1.0}
    assert record.params["weights_from"] == "equal"
    from fsar.episodes import load_episodes

    episodes = load_episodes(ep_path)
    cache = open_cache(cache_path)
    e, t, d = episodes.n_episodes, cache.spec.frames, cache.spec.feature_dim
    q = cache.frames("rgb", cache.rows_for(episodes.query_ids.ravel())).astype(np.float32).reshape(e, 10, t, d)
    s = cache.frames("rgb", cache.rows_for(episodes.support_ids.ravel())).astype(np.float32).reshape(e, 10, t, d)
    labels = np.broadcast_to(np.repeat(np.arange(5), 2), (episodes.n_episodes, 10))
    expected = get("jmm").obj(q, s, labels, 5).argmax(-1) == np.repeat(np.arange(5), 2)
    np.testing.assert_array_equal(record.correct, expected)


def test_all_matchers_read_each_feature_set_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 toy_cache: Builder, write_list: Builder) -> None:
    import fsar.runner.evaluate as ev
    import fsar.runner.features as features
    from fsar.report.results import load_records

    cache_path = toy_cache(tmp_path / "c.zarr", patches=2)
    episodes = write_list(tmp_path, cache_path, n=12, shot=1)
    reads: list[tuple[tuple[str, ...], bool, bool]] = []
    load = features.load_features

    def counting(cache, episodes, modalities, patches, center=False):  # type: ignore[no-untyped-def]
        reads.append((modalities, patches, center))
        return load(cache, episodes, modalities, patches, center)

    monkeypatch.setattr(features, "load_features", counting)
    plan = ev.EvalPlan("all", cache_path, (1,), 5, tmp_path, episodes=episodes, out=tmp_path / "res", center=True)
    lines = list(ev.run_plan(plan, progress=False))
    names, _ = ev.runnable_matchers(open_cache(cache_path), "rgb")
    assert len(lines) == len(names) > 2
    assert sorted(reads) == [(("rgb",), False, True), (("rgb",), True, True)]  # frames once, patches once
    for record in load_records(tmp_path / "res"):  # shared arrays give what a lone run gives
        alone = evaluate(EvalRun(record.matcher, center=True), cache_path, episodes, progress=False)
        assert np.array_equal(alone.correct, record.correct)


def test_nothing_a_chunk_allocates_outlives_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              toy_cache: Builder, write_list: Builder) -> None:
    # A chunk's scores kept until the end (the matcher's own arrays, or even copies of them) land on the heap
    # among the next chunk's temporaries and fragment it (the peak RSS of 100,000 episodes varied 0.8-4.4 GB
    # between runs): the array memory numpy holds when a chunk starts must not grow with the chunks before it.
    import tracemalloc

    import fsar.runner.features as features
    import fsar.runner.scoring as scoring
    from fsar.episodes import load_episodes

    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = load_episodes(write_list(tmp_path, cache_path, n=40, shot=1))
    monkeypatch.setattr(scoring, "PAIRS_PER_CHUNK", 200)  # several chunks
    loaded = features.load_features(open_cache(cache_path), episodes, ("rgb",), False)
    numpy_arrays = tracemalloc.DomainFilter(inclusive=True, domain=389047)  # numpy's data buffers
    held: list[int] = []  # bytes of numpy arrays alive at the start of each chunk

    def fn(query, support, labels, way):  # type: ignore[no-untyped-def]
        snapshot = tracemalloc.take_snapshot().filter_traces([numpy_arrays])
        held.append(sum(stat.size for stat in snapshot.statistics("filename")))
        return {"a": query["rgb"].mean(axis=(2, 3))[:, :, None] + np.arange(way)}

    tracemalloc.start()
    try:
        scores = scoring.score_all(fn, loaded, episodes, progress=False, desc="a")["a"]
    finally:
        tracemalloc.stop()
    per_chunk = scores.nbytes / len(held)
    assert len(held) > 4 and max(held[1:]) - held[1] < per_chunk / 2, (per_chunk, held)
    query = features.Gatherer(loaded).episode_inputs(episodes)[0]["rgb"]
    np.testing.assert_allclose(scores, query.mean(axis=(2, 3))[:, :, None] + np.arange(episodes.way), rtol=1e-6)


@pytest.mark.parametrize("fault", ["fewer rows", "component dropped", "component added"])
def test_a_chunk_whose_scores_do_not_cover_it_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         toy_cache: Builder, write_list: Builder, fault: str) -> None:
    # Scores are written into arrays allocated for the whole list: a row no chunk filled would be read as a
    # score that was never computed. Every chunk must give every component for each of its episodes.
    import fsar.runner.features as features
    import fsar.runner.scoring as scoring
    from fsar.episodes import load_episodes

    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = load_episodes(write_list(tmp_path, cache_path, n=40, shot=1))
    monkeypatch.setattr(scoring, "PAIRS_PER_CHUNK", 200)  # several chunks
    loaded = features.load_features(open_cache(cache_path), episodes, ("rgb",), False)
    calls = [0]

    def fn(query, support, labels, way):  # type: ignore[no-untyped-def]
        calls[0] += 1
        scores = np.zeros((len(labels), query["rgb"].shape[1], way), dtype=np.float32)
        later = calls[0] > 1
        if fault == "fewer rows" and later:
            return {"a": scores[:-1], "b": scores[:-1]}
        if fault == "component dropped" and later:
            return {"a": scores}
        if fault == "component added" and later:
            return {"a": scores, "b": scores, "c": scores}
        return {"a": scores, "b": scores}

    with pytest.raises(ValueError, match="episodes"):
        scoring.score_all(fn, loaded, episodes, progress=False, desc="a")


def test_record_carries_its_provenance(tmp_path: Path, toy_cache: Builder, write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr", noise=0.5)
    ep_path = write_list(tmp_path, cache_path)
    record = evaluate(EvalRun("otam", center=True), cache_path, ep_path, progress=False)
    prov, cache = record.provenance, open_cache(cache_path)
    from fsar.episodes import load_episodes

    episodes = load_episodes(ep_path)
    assert prov["known"] is True and prov["cache_sha256"] == cache.content_hash() == record.cache_sha256
    assert (prov["backbone"], prov["weights"], prov["patches"], prov["views"]) == ("none", "none", 0, 1)
    assert prov["feature_dtype"] == cache.spec.feature_dtype and prov["split_set"] == cache.spec.split_set
    assert (prov["seed"], prov["protocol"], prov["pool_sha256"]) == (3, "custom", episodes.pool_sha256)
    assert prov["episodes_sha256"] == record.episodes_sha256 and prov["center"] is True
    assert (prov["pool_videos"], prov["listed_videos"], prov["pool_classes"], prov["listed_classes"]) == (30, 30, 5, 5)
