"""Extraction under faults: kills at any instant, a second writer, I/O errors, a cache that gains a modality.

Every case ends either in a cache equal to an uninterrupted run's, or in a one-line error that says what to do;
never in a traceback or a store that the same command cannot resume.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fsar.cache.create import create_cache
from fsar.cache.lock import LockedError, write_lock
from fsar.cache.store import open_cache
from fsar.datasets.synthetic import synthesize
from fsar.extract.run import ExtractConfig, ExtractError, run_extraction

SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, classes=12, videos_per_class=2, size=SIZE, seed=7, progress=False)
    return root


def config(root: Path, **kw: object) -> ExtractConfig:
    base = ExtractConfig(dataset="synthetic", root=root, backbone="efficientnet_lite0", short_side=SIZE,
                         input_size=SIZE, precision="fp32", workers=0, chunk_videos=2, modalities=("rgb",))
    return replace(base, **kw)  # type: ignore[arg-type]


def cli(root: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fsar", "extract", "--dataset", "synthetic", "--backbone", "efficientnet_lite0",
            "--short-side", str(SIZE), "--input-size", str(SIZE), "--precision", "fp32", "--quiet", "--workers", "0",
            "--chunk-videos", "2", "--root", str(root), "--out", str(out), *args]


def test_a_kill_while_the_store_is_created_leaves_nothing_to_delete(dataset: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.zarr"
    run_extraction(config(dataset), whole, progress=False)
    out = tmp_path / "c.zarr"
    proc = subprocess.Popen(cli(dataset, out), start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() or list(tmp_path.glob(".c.zarr.creating-*"))):
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)  # as soon as the store starts to exist, under whatever name
    proc.wait()
    assert not out.exists() or open_cache(out)  # never a half-made store at the path
    subprocess.run(cli(dataset, out), check=True, capture_output=True)  # the same command
    assert not list(tmp_path.glob(".c.zarr.creating-*"))  # the abandoned creation was removed
    np.testing.assert_array_equal(open_cache(out).frames("rgb"), open_cache(whole).frames("rgb"))


def test_kills_at_seeded_random_instants_then_resume_equal_an_uninterrupted_run(dataset: Path,
                                                                                 tmp_path: Path) -> None:
    whole = tmp_path / "whole.zarr"
    run_extraction(config(dataset), whole, progress=False)
    out = tmp_path / "c.zarr"
    rng = np.random.default_rng(11)
    for delay in rng.uniform(0.5, 6.0, size=2):
        proc = subprocess.Popen(cli(dataset, out), start_new_session=True)
        time.sleep(float(delay))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run(cli(dataset, out), check=True, capture_output=True)
    np.testing.assert_array_equal(open_cache(out).frames("rgb"), open_cache(whole).frames("rgb"))
    assert open_cache(out).done("rgb").all()


def test_a_second_writer_is_refused_at_once_with_the_holders_pid(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    run_extraction(config(dataset, splits=("test",)), out, progress=False)
    with write_lock(out):  # as a first `fsar extract` without --shard would hold it
        started = time.monotonic()
        with pytest.raises(LockedError, match=f"being written by pid {os.getpid()}"):
            run_extraction(config(dataset, splits=("test",)), out, progress=False)
        assert time.monotonic() - started < 30


def test_shards_lock_their_own_part(tmp_path: Path) -> None:
    store = tmp_path / "s"
    store.mkdir()
    with write_lock(store, (0, 2)):
        with write_lock(store, (1, 2)):  # another shard runs beside it
            pass
        with pytest.raises(LockedError, match=r"shard 0/2 .* pid"):
            with write_lock(store, (0, 2)):
                pass
        with pytest.raises(LockedError, match=rf"pid {os.getpid()} \(fsar-shard-0-of-2\)"):
            with write_lock(store):  # a whole-store writer never runs beside shards
                pass
    with write_lock(store):  # released when its holder is done
        pass


def test_an_unwritable_store_is_one_line_that_says_what_to_do(dataset: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import zarr

    def denied(*args: object, **kw: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(zarr, "open_group", denied)  # root ignores file modes: deny where zarr creates the store
    with pytest.raises(ExtractError, match=r"Permission denied .*choose a writable --out.*run the same command"):
        run_extraction(config(dataset, splits=("test",)), tmp_path / "ro" / "c.zarr", progress=False)


@pytest.mark.parametrize("max_bytes", [600, 6_000])  # fails making the store / writing a feature chunk
def test_a_file_size_limit_is_one_line_and_the_run_resumes(dataset: Path, tmp_path: Path, max_bytes: int) -> None:
    out = tmp_path / "c.zarr"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))  # `ulimit -f`

    failed = subprocess.run(cli(dataset, out), capture_output=True, text=True, preexec_fn=limit)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert "File too large" in failed.stderr and "run the same command again" in failed.stderr, failed.stderr
    subprocess.run(cli(dataset, out), check=True, capture_output=True)
    assert open_cache(out).done("rgb").all()


def test_flow_can_be_added_to_an_rgb_cache(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    run_extraction(config(dataset, splits=("test",)), out, progress=False)
    rgb = open_cache(out).frames("rgb")
    run_extraction(config(dataset, splits=("test",), modalities=("rgb", "flow")), out, progress=False)
    cache = open_cache(out)
    assert cache.modalities == ("rgb", "flow") and cache.done("flow").all()
    assert cache.spec.flow_method == "farneback"
    np.testing.assert_array_equal(cache.frames("rgb"), rgb)  # rgb untouched


def test_a_creation_that_fails_leaves_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsar.cache import create
    from fsar.cache.schema import CacheSpec

    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=4, frames=2)
    table = (["a", "b"], [0, 1], ["test", "test"], ["x", "y"])

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # stands for a kill before the attributes are written

    monkeypatch.setattr(create, "_write_spec", killed)
    with pytest.raises(KeyboardInterrupt):
        create_cache(tmp_path / "c.zarr", spec, *table)
    monkeypatch.undo()
    assert not (tmp_path / "c.zarr").exists()
    assert open_cache(create_cache(tmp_path / "c.zarr", spec, *table).path).n_videos == 2


def test_a_cache_grows_as_a_partial_download_completes(dataset: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fsar.cache.schema import Status
    from fsar.cli import main
    from fsar.episodes.pool import split_pool

    whole = tmp_path / "whole.zarr"
    run_extraction(config(dataset), whole, progress=False)
    root = tmp_path / "partial"
    shutil.copytree(dataset, root)
    later = sorted((root / "videos").rglob("*.mp4"))[3:7]  # four videos not downloaded yet
    parked = tmp_path / "parked"
    parked.mkdir()
    for video in later:
        video.rename(parked / video.name)
    out = tmp_path / "c.zarr"
    first = run_extraction(config(root), out, progress=False)
    assert first.missing == 4
    cache = open_cache(out)
    stems = sorted(v.stem for v in later)
    assert np.array_equal(cache.ids, open_cache(whole).ids)  # every line of the split lists is a row from the start
    assert sorted(cache.ids[cache.status("rgb") == Status.MISSING].tolist()) == stems
    listed = CliRunner().invoke(main, ["cache", "missing", str(out)])
    assert listed.exit_code == 0 and sorted(line.split()[-1] for line in listed.output.splitlines()) == stems
    assert "4 missing" in CliRunner().invoke(main, ["cache", "info", str(out)]).output
    assert not set(stems) & set(split_pool(cache, "train")[0] + split_pool(cache, "test")[0])
    for video in later:  # the download completes; the same command adds them to the same store
        (parked / video.name).rename(video)
    second = run_extraction(config(root), out, progress=False)
    assert second.missing == 0 and second.extracted >= 4
    grown, reference = open_cache(out), open_cache(whole)
    assert grown.done("rgb").all() and grown.content_hash() == reference.content_hash()
    np.testing.assert_array_equal(grown.frames("rgb"), reference.frames("rgb"))


def test_a_symlink_loop_is_recorded_with_its_reason(tmp_path: Path) -> None:
    from fsar.cache.schema import Status
    from fsar.extract.source import SourceConfig, load_video
    from fsar.extract.transforms import CropConfig

    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    item = load_video(0, "loop", loop, SourceConfig(frames=2, views=1, modalities=("rgb",),
                                                      crop=CropConfig(resize_short=SIZE, crop=SIZE)))
    assert item.status == Status.UNREADABLE and "Too many levels of symbolic links" in item.error
