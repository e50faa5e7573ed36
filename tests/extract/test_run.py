from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fsar.cache.schema import Status
from fsar.cache.store import CacheError, open_cache
from fsar.cli import main
from fsar.datasets.synthetic import synthesize
from fsar.extract.backbone import Backbone, load_backbone
from fsar.extract.decode import count_frames, read_frames
from fsar.extract.ring import FrameRing, Layout
from fsar.extract.ring import available as ring_available
from fsar.extract.run import (
    ExtractConfig,
    ExtractError,
    ExtractSummary,
    resolve_workers,
    run_extraction,
    torchrun_shard,
)
from fsar.extract.sampling import sample_indices
from fsar.extract.source import VideoItem
from fsar.extract.transforms import CropConfig, preprocess_view
from tests.conftest import SYNTHETIC, expected_view, full_decode, synthetic_frames, write_video

SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, classes=12, videos_per_class=2, size=SIZE, seed=5, progress=False)
    return root


def config(root: Path, **kw: object) -> ExtractConfig:
    base = ExtractConfig(dataset="synthetic", root=root, backbone="efficientnet_lite0", short_side=SIZE,
                         input_size=SIZE, precision="fp32", workers=0, chunk_videos=4, patches=2)
    return replace(base, **kw)  # type: ignore[arg-type]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fsar", "extract", "--dataset", "synthetic", "--backbone", "efficientnet_lite0",
            "--short-side", str(SIZE), "--input-size", str(SIZE), "--precision", "fp32", "--quiet", *args]


def test_cached_features_equal_a_direct_backbone_call(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    summary = run_extraction(config(dataset, modalities=("rgb",)), out, progress=False)
    cache = open_cache(out)
    # one commit time per chunk of 4 videos, in order, within the run
    assert len(summary.committed_s) == -(-cache.n_videos // 4)
    assert 0 < summary.committed_s[0] and np.all(np.diff(summary.committed_s) >= 0)
    assert summary.committed_s[-1] <= summary.seconds
    backbone = load_backbone("efficientnet_lite0", "imagenet", "cpu")
    for row in (0, 7, cache.n_videos - 1):
        vid = cache.ids[row]
        cls = cache.class_names[cache.labels[row]]
        path = dataset / "videos" / cls / f"{vid}.mp4"
        idx = sample_indices(count_frames(path), num_segments=8).indices
        frames = preprocess_view(read_frames(path, idx), view=0, config=CropConfig(SIZE, SIZE))
        pooled, grid = backbone.extract(frames, patches=2, precision="fp32")
        np.testing.assert_allclose(cache.frames("rgb", np.array([row]))[0], pooled, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(cache.patches("rgb", np.array([row]))[0], grid, rtol=2e-3, atol=2e-3)
    assert cache.done("rgb").all() and (cache.status("rgb") == Status.OK).all()


def test_features_are_collected_by_the_writer_thread(dataset: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The main process never waits for the backbone's results (on CUDA: the GPU runs while it prepares the
    next chunk): every ``.cpu()`` of a feature tensor is made by the writer thread, and the cache is unchanged."""
    plain = tmp_path / "plain.zarr"
    run_extraction(config(dataset, modalities=("rgb",)), plain, progress=False)
    collected_by: list[str] = []

    class Queued:
        def __init__(self, tensor: torch.Tensor) -> None:
            self.tensor = tensor

        def cpu(self) -> torch.Tensor:
            collected_by.append(threading.current_thread().name)
            return self.tensor

    features = Backbone.features

    def queued_features(self: Backbone, *args: object, **kwargs: object) -> tuple[Queued, Queued | None]:
        pooled, grid = features(self, *args, **kwargs)  # type: ignore[arg-type]
        return Queued(pooled), (Queued(grid) if grid is not None else None)

    monkeypatch.setattr(Backbone, "features", queued_features)
    out = tmp_path / "c.zarr"
    run_extraction(config(dataset, modalities=("rgb",)), out, progress=False)
    a, b = open_cache(plain), open_cache(out)
    assert len(collected_by) == 2 * -(-b.n_videos // 4)  # pooled and patches of every chunk
    assert all(name.startswith("fsar-write") for name in collected_by), collected_by
    rows = np.arange(b.n_videos)
    np.testing.assert_array_equal(b.frames("rgb", rows), a.frames("rgb", rows))
    np.testing.assert_array_equal(b.patches("rgb", rows), a.patches("rgb", rows))


@pytest.mark.skipif(not ring_available(), reason="the ring needs fork (Linux)")
def test_decoding_workers_hand_their_frames_over_through_the_ring(dataset: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With two decoding processes every video's frames come through shared memory, not the pipe, and the
    cache equals the one a run without workers makes (same frames, same order)."""
    plain = tmp_path / "plain.zarr"
    run_extraction(config(dataset, modalities=("rgb", "flow")), plain, progress=False)
    through_ring: list[bool] = []
    take = FrameRing.take

    def spied_take(self: FrameRing, index: int, item: VideoItem, layout: Layout | None) -> VideoItem:
        through_ring.append(layout is not None)
        return take(self, index, item, layout)

    monkeypatch.setattr(FrameRing, "take", spied_take)
    out = tmp_path / "c.zarr"
    run_extraction(config(dataset, modalities=("rgb", "flow"), workers=2), out, progress=False)
    a, b = open_cache(plain), open_cache(out)
    assert through_ring == [True] * b.n_videos
    rows = np.arange(b.n_videos)
    for modality in ("rgb", "flow"):
        np.testing.assert_array_equal(b.frames(modality, rows), a.frames(modality, rows), err_msg=modality)
        np.testing.assert_array_equal(b.patches(modality, rows), a.patches(modality, rows), err_msg=modality)


def test_every_container_and_a_frame_folder_through_the_run(tmp_path: Path) -> None:
    """h264 mp4 (B-frames), VP8 and VP9 webm, MPEG-4 avi and a png frame folder shorter than T, in one
    ``folder`` dataset: the cache holds the backbone's features of the oracle's frames (full decode,
    sampled, preprocessed), the frame counts, and the short video marked padded."""
    data, lists = tmp_path / "data", tmp_path / "lists"
    lengths = [40, 33, 27, 20]
    oracle: dict[str, dict[int, np.ndarray]] = {}
    lines = []
    for (name, codec, options), n in zip(SYNTHETIC, lengths, strict=True):
        stem = name.replace(".", "_")
        path = data / stem / f"{stem}{Path(name).suffix}"
        path.parent.mkdir(parents=True)
        write_video(path, np.roll(synthetic_frames(n), 8 * len(lines), axis=2), codec, options)
        oracle[stem] = full_decode(path)
        lines.append(f"{stem}/{stem}")
    folder = data / "png" / "png"
    folder.mkdir(parents=True)
    pngs = synthetic_frames(5)
    for t, frame in enumerate(pngs):
        cv2.imwrite(str(folder / f"img_{t + 1}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    oracle["png"] = dict(enumerate(pngs))  # lossless
    lines.append("png/png")
    lists.mkdir()
    (lists / "testlist.txt").write_text("".join(f"{line}\n" for line in lines))

    out = tmp_path / "c.zarr"
    summary = run_extraction(config(data, dataset="folder", split_dir=lists, workers=1, patches=0), out,
                             progress=False)
    assert (summary.extracted, summary.failures, summary.padded) == (5, {}, 1)
    cache = open_cache(out)
    backbone = load_backbone("efficientnet_lite0", "imagenet", "cpu")
    statuses = dict(zip(cache.ids, cache.status("rgb"), strict=True))
    counts = dict(zip(cache.ids, cache.n_frames(), strict=True))
    for vid, reference in oracle.items():
        pooled, _ = backbone.extract(expected_view(reference, len(reference), CropConfig(SIZE, SIZE)),
                                     precision="fp32")
        row = cache.rows_for([vid])
        np.testing.assert_allclose(cache.frames("rgb", row)[0], pooled, rtol=2e-3, atol=2e-3, err_msg=vid)
        assert counts[vid] == len(reference)
        assert statuses[vid] == (Status.PADDED if vid == "png" else Status.OK)


def test_broken_videos_are_recorded_and_the_rest_kept(dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(dataset), str(root)], check=True)
    videos = sorted((root / "videos").rglob("*.mp4"))
    data = videos[0].read_bytes()
    videos[0].write_bytes(data[: len(data) // 3])  # truncated
    videos[1].write_bytes(b"this is not a video" * 100)  # garbage
    videos[2].unlink()  # the catalog lists it as missing: a row of the cache, recorded as missing, not done
    summary = run_extraction(config(root, modalities=("rgb", "flow")), tmp_path / "c.zarr", progress=False)
    cache = open_cache(tmp_path / "c.zarr")
    failed = cache.errors("rgb")
    assert {videos[0].stem, videos[1].stem} <= set(failed)
    assert set(summary.failures) == set(failed) and summary.missing == 1
    missing = cache.ids == videos[2].stem
    assert (cache.status("rgb")[missing] == Status.MISSING).all() and not cache.done("rgb")[missing].any()
    ok = cache.usable("rgb")
    assert cache.done("rgb")[~missing].all() and ok.sum() == cache.n_videos - len(failed) - 1
    assert np.abs(cache.frames("rgb", np.flatnonzero(ok)).astype(np.float32)).sum(axis=(1, 2)).min() > 0


def test_sigkill_then_resume_equals_uninterrupted(dataset: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.zarr"
    subprocess.run(cli("--root", str(dataset), "--out", str(whole), "--chunk-videos", "2", "--workers", "0"),
                   check=True)
    resumed = tmp_path / "resumed.zarr"
    args = cli("--root", str(dataset), "--out", str(resumed), "--chunk-videos", "2", "--workers", "0")
    proc = subprocess.Popen(args, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if open_cache(resumed).done("rgb").any():
                break
        except (CacheError, KeyError, FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_cache(resumed).done("rgb")
    assert 0 < partial.sum() < len(partial), "the run was not interrupted mid-way"
    done = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    assert f"{int(partial.sum())} already done" in done
    a, b = open_cache(whole), open_cache(resumed)
    np.testing.assert_array_equal(a.frames("rgb"), b.frames("rgb"))
    assert b.done("rgb").all()


def test_two_shard_processes_equal_one_writer(dataset: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.zarr"
    run_extraction(config(dataset, chunk_videos=2, patches=0), one, progress=False)
    two = tmp_path / "two.zarr"
    procs = [subprocess.Popen(cli("--root", str(dataset), "--out", str(two), "--chunk-videos", "2",
                                  "--workers", "0", "--shard", f"{i}/2")) for i in (1, 0)]
    assert [p.wait(300) for p in procs] == [0, 0]
    a, b = open_cache(one), open_cache(two)
    np.testing.assert_array_equal(a.frames("rgb"), b.frames("rgb"))
    assert b.done("rgb").all()


def test_other_backbone_or_preprocessing_is_refused(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    run_extraction(config(dataset, splits=("test",), patches=0), out, progress=False)
    with pytest.raises(CacheError, match="input_size"):
        run_extraction(config(dataset, splits=("test",), patches=0, input_size=32), out, progress=False)
    with pytest.raises(CacheError, match="weights"):
        run_extraction(config(dataset, splits=("test",), patches=0, weights="none"), out, progress=False)


def test_another_precision_is_refused(dataset: Path, tmp_path: Path) -> None:
    # bf16 features differ from fp32 ones: a run killed under one precision is never resumed under another
    # (as `auto` would do on a CPU that picks differently).
    out = tmp_path / "c.zarr"
    run_extraction(config(dataset, splits=("test",), patches=0, precision="bf16"), out, progress=False)
    assert open_cache(out).spec.precision == "bf16"
    with pytest.raises(CacheError, match="precision: cache has 'bf16', this run 'fp32'"):
        run_extraction(config(dataset, splits=("test",), patches=0, precision="fp32"), out, progress=False)


def test_torchrun_environment_gives_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert torchrun_shard() is None
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert torchrun_shard() == (2, 4)


def test_auto_workers_follow_the_device_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_workers(3, cuda) == 3 and resolve_workers(0, cpu) == 0  # a count is taken as given
    assert resolve_workers("auto", cpu) == 2  # the backbone's threads hold the cores
    for cores, local, expected in ((16, None, 15), (16, "4", 3), (2, None, 1), (64, None, 16), (4, "8", 1)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        if local is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
        assert resolve_workers("auto", cuda) == expected, (cores, local)


def test_the_workers_option_takes_a_count_or_auto(dataset: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def record(config: ExtractConfig, out: Path, progress: bool = True) -> ExtractSummary:
        seen.append(config.workers)
        return ExtractSummary(out=str(out))

    monkeypatch.setattr("fsar.extract.run.run_extraction", record)
    base = ["extract", "--dataset", "synthetic", "--root", str(dataset), "--out", str(tmp_path / "c.zarr")]
    for given in ([], ["--workers", "auto"], ["--workers", "3"], ["--workers", "0"]):
        assert CliRunner().invoke(main, base + given).exit_code == 0
    assert seen == ["auto", "auto", 3, 0]
    result = CliRunner().invoke(main, [*base, "--workers", "two"])
    assert result.exit_code == 2 and "or 'auto'" in result.output


def test_an_interrupted_run_commits_the_chunks_it_computed(dataset: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after 2.5 chunks: the writer thread still commits the 2 whole chunks; a rerun completes the
    cache with the same arrays as an uninterrupted run."""
    from fsar.extract import run as run_module

    items = run_module.decoded_videos

    def interrupted(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        for k, item in enumerate(items(*args, **kw)):  # type: ignore[arg-type]
            if k == 10:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(run_module, "decoded_videos", interrupted)
    out = tmp_path / "c.zarr"
    with pytest.raises(KeyboardInterrupt):
        run_extraction(config(dataset), out, progress=False)
    np.testing.assert_array_equal(open_cache(out).done("rgb"), np.arange(24) < 8)
    monkeypatch.setattr(run_module, "decoded_videos", items)
    summary = run_extraction(config(dataset), out, progress=False)
    assert (summary.extracted, summary.skipped_done) == (16, 8)
    whole = tmp_path / "whole.zarr"
    run_extraction(config(dataset), whole, progress=False)
    np.testing.assert_array_equal(open_cache(out).frames("rgb", np.arange(24)),
                                  open_cache(whole).frames("rgb", np.arange(24)))


def test_a_write_error_stops_the_run_with_its_message(dataset: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from fsar.cache.store import FeatureCache

    def full_disk(self: FeatureCache, *args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FeatureCache, "write_chunk", full_disk)
    with pytest.raises(ExtractError, match="No space left on device; free disk space.*run the same command again"):
        run_extraction(config(dataset), tmp_path / "c.zarr", progress=False)
