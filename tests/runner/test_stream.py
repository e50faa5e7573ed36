"""Training data streamed from the cache: the same episodes, views and weights as in memory, bounded windows,
reading errors raised in the training loop, damaged caches refused before training."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fsar.cache import schema
from fsar.cache.create import create_cache
from fsar.cache.schema import CacheSpec
from fsar.cache.store import CacheError, open_cache
from fsar.runner import stream
from fsar.runner.stream import (
    Draw,
    MemoryFeatures,
    StreamedFeatures,
    balanced_draw,
    open_features,
    plan_epoch,
    prefetched,
    train_pool,
)
from fsar.runner.train import TrainConfig, last_path, train

T, D, GRID, PER_CLASS, VIEWS = 4, 8, 2, 4, 3
SPLITS = {"train": 8, "val": 3, "test": 3}
HCL = {"text_encoder": "none", "heads": "2", "mlp_ratio": "1", "batch_classes": "4"}


def patch_cache(path: Path, video_table: Callable[..., Any], modalities: tuple[str, ...] = ("rgb",)) -> Path:
    """Random frame and patch features of 3 views (chunks of 8 videos): any head trains on it a few steps."""
    rng = np.random.default_rng(0)
    ids, labels, splits, names = video_table(SPLITS, PER_CLASS)
    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=D, frames=T,
                     views=VIEWS, patches=GRID, modalities=modalities, chunk_videos=8)
    cache = create_cache(path, spec, ids, labels, splits, names)
    for m in modalities:
        patches = rng.standard_normal((len(ids), VIEWS, T, GRID * GRID, D)) + np.asarray(labels)[:, None, None, None,
                                                                                                  None] % 3
        for start, stop in cache.chunk_ranges():
            n = stop - start
            cache.write_chunk(m, start, patches[start:stop].mean(axis=3), np.zeros(n, np.int8), [""] * n,
                              np.full(n, T, np.int32), patches[start:stop])
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, video_table: Callable[..., Any]) -> Path:
    return patch_cache(tmp_path_factory.mktemp("stream") / "toy.zarr", video_table)


def _config(matcher: str, **changes: Any) -> TrainConfig:
    params = HCL if matcher == "hcl" else {"hidden": "16"} if matcher == "ita" else {}
    base = TrainConfig(matcher=matcher, shots=1, way=3, query=2, episodes_per_epoch=6, epochs=2, lr=1e-2,
                       optimizer="adam", params=params, seed=3, device="cpu")
    return dataclasses.replace(base, **changes)


def _quiet(_: str) -> None:
    pass


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(("matcher", "center"), [("ita", False), ("ita", True), ("hcl", False)])
def test_streamed_training_gives_the_in_memory_weights(toy: Path, tmp_path: Path, matcher: str,
                                                       center: bool) -> None:
    config = _config(matcher, center=center)
    held = train(config, toy, tmp_path / "m.pt", val_episodes=4, progress=False, echo=_quiet, stream=False)
    streamed = train(config, toy, tmp_path / "s.pt", val_episodes=4, progress=False, echo=_quiet, stream=True)
    _assert_same_weights(held.state_dict, streamed.state_dict)
    assert [h["loss"] for h in held.history] == [h["loss"] for h in streamed.history]
    last_m, last_s = (open_last(tmp_path / name) for name in ("m.pt", "s.pt"))
    _assert_same_weights(last_m, last_s)


def open_last(out: Path) -> dict[str, torch.Tensor]:
    from fsar.runner.checkpoint import load_checkpoint

    resume = load_checkpoint(last_path(out)).resume
    assert resume is not None
    return dict(resume["weights"])


def test_a_streamed_resume_equals_one_run_in_memory(toy: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight.pt"
    train(_config("ita"), toy, straight, val_episodes=4, progress=False, echo=_quiet, stream=False)
    interrupted = tmp_path / "resumed.pt"
    train(_config("ita", epochs=1), toy, interrupted, val_episodes=4, progress=False, echo=_quiet, stream=True)
    train(_config("ita"), toy, interrupted, val_episodes=4, resume=True, progress=False, echo=_quiet, stream=True)
    _assert_same_weights(open_last(straight), open_last(interrupted))


def test_views_and_balanced_batches_read_the_same_features_both_ways(toy: Path) -> None:
    cache = open_cache(toy)
    pool = train_pool(cache, "rgb")
    assert pool.views == (1, 2)  # view 0 (the test view) is never trained on
    held = MemoryFeatures(cache, pool, ("rgb",), patches=True, center=False)
    assert held.features["rgb"].shape == (SPLITS["train"] * PER_CLASS, 2, T, GRID * GRID, D)
    np.testing.assert_array_equal(held.features["rgb"][:, 1], cache.patches("rgb", pool.rows, view=2))
    draw, labels, names = balanced_draw(pool, np.random.default_rng(0), classes=5, per_class=3)
    assert torch.equal(labels, torch.arange(5).repeat_interleave(3))
    picked = np.asarray(pool.classes)[draw.rows].reshape(5, 3)
    assert all(len(set(group)) == 1 for group in picked) and len({g[0] for g in picked}) == 5
    assert list(names) == [group[0] for group in picked]
    streamed = StreamedFeatures(cache, pool, ("rgb",), patches=True, center=False)
    (a,), (b,) = held.gather([draw]), streamed.gather([draw])
    # As stored (the training loop converts them to float32 on its device).
    assert a["rgb"].numpy().dtype == cache.spec.feature_dtype and a["rgb"].shape == (15, T, GRID * GRID, D)
    expected = np.stack([cache.patches("rgb", pool.rows[[r]], view=pool.views[v])[0]
                         for r, v in zip(draw.rows, draw.views, strict=True)])
    np.testing.assert_array_equal(a["rgb"].numpy(), expected)
    assert torch.equal(a["rgb"], b["rgb"])


def test_the_split_size_chooses_memory_or_streaming(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = open_cache(toy)
    pool = train_pool(cache, "rgb")
    assert stream.split_bytes(cache, pool, ("rgb",), True) == len(pool.ids) * 2 * T * GRID * GRID * D * 2
    assert isinstance(open_features(cache, pool, ("rgb",), True, False), MemoryFeatures)
    monkeypatch.setattr(stream, "IN_MEMORY_BYTES", stream.split_bytes(cache, pool, ("rgb",), True) - 1)
    assert isinstance(open_features(cache, pool, ("rgb",), True, False), StreamedFeatures)
    assert isinstance(open_features(cache, pool, ("rgb",), True, False, stream=False), MemoryFeatures)


def test_windows_bound_what_is_read_ahead(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stream.window_steps(30, 1 << 20) == 8  # 30 MiB a step: 8 steps make 240 MiB
    assert stream.window_steps(30, 1 << 30) == 1 and stream.window_steps(1, 1) == stream.MAX_WINDOW
    cache = open_cache(toy)
    pool = train_pool(cache, "rgb")
    features = StreamedFeatures(cache, pool, ("rgb",), patches=False, center=False)
    reads: list[int] = []
    gather = features.gather

    def counting(draws: list[Draw]) -> list[dict[str, torch.Tensor]]:
        reads.append(len(draws))
        return gather(draws)

    monkeypatch.setattr(features, "gather", counting)
    plans = list(plan_epoch(pool, _config("ita", episodes_per_epoch=10), 1, 1, None))
    steps = prefetched(iter(plans), features, window=3)
    first = next(steps)
    assert sum(reads) <= 2 * 3 * 2  # at most two windows of (query, support) draws read ahead of the first step
    rest = list(steps)
    assert len(rest) == 9 and reads == [6, 6, 6, 2]
    assert first.query["rgb"].shape == (1, 3 * 2, T, D) and first.support["rgb"].shape == (1, 3, T, D)


def test_an_error_while_reading_is_raised_in_the_loop_and_leaving_early_stops_the_reader(toy: Path) -> None:
    cache = open_cache(toy)
    pool = train_pool(cache, "rgb")
    plans = list(plan_epoch(pool, _config("ita", episodes_per_epoch=10), 1, 1, None))

    class Failing:
        def gather(self, draws: list[Draw]) -> list[dict[str, torch.Tensor]]:
            raise CacheError("chunk 3 is damaged")

    with pytest.raises(CacheError, match="chunk 3 is damaged"):
        next(prefetched(plans, Failing(), window=2))
    features = MemoryFeatures(cache, pool, ("rgb",), patches=False, center=False)
    steps: Iterator[Any] = prefetched(plans, features, window=1)
    next(steps)
    steps.close()  # the generator's finally stops and joins the reading thread
    assert not any(t.name == "fsar-train-prefetch" and t.is_alive() for t in __import__("threading").enumerate())


def test_streaming_refuses_a_cache_missing_videos_or_chunks_before_training(
        tmp_path: Path, video_table: Callable[..., Any]) -> None:
    path = patch_cache(tmp_path / "two.zarr", video_table, modalities=("rgb", "flow"))
    cache = open_cache(path, mode="a")
    pool = train_pool(cache, "rgb")
    cache.mark_not_done("flow", [int(pool.rows[5])])
    with pytest.raises(CacheError, match="no flow features.*yet"):
        StreamedFeatures(open_cache(path), pool, ("rgb", "flow"), patches=True, center=False)
    array = cache.group[schema.patches_path("rgb")]
    (tmp_path / "two.zarr" / schema.chunk_key(array, 1)).unlink()
    with pytest.raises(CacheError, match=r"chunk\(s\) \[1\].*missing"):
        StreamedFeatures(open_cache(path), pool, ("rgb",), patches=True, center=False)
