from __future__ import annotations

from pathlib import Path

from fsar import __version__
from fsar.cache.create import create_cache
from fsar.matchers.registry import load_all
from tests.conftest import SmallStore, build_cli_run

run = build_cli_run


def test_help_and_version() -> None:
    code, out = run("--help")
    assert code == 0 and "synth" in out and "matchers" in out
    code, out = run("--version")
    assert code == 0 and __version__ in out


def test_matchers_lists_the_registry() -> None:
    code, out = run("matchers")
    assert code == 0
    for name, info in load_all().items():
        line = next(row for row in out.splitlines() if row.split()[0] == name)
        assert info.kind in line
    assert "patches" in next(row for row in out.splitlines() if row.startswith("zoom"))


def test_datasets_lists_split_sizes() -> None:
    code, out = run("datasets")
    assert code == 0
    assert "ssv2" in out and "67013 videos" in out and "kinetics100" in out


def test_cache_info_verify_and_h5(tmp_path: Path, small_store: SmallStore) -> None:
    spec = small_store.spec(patches=0)
    path = tmp_path / "c.zarr"
    cache = create_cache(path, spec, *small_store.table)
    code, out = run("cache", "verify", str(path))
    assert code == 1 and "incomplete" in out
    small_store.fill(path, spec, cache.chunk_ranges())
    code, out = run("cache", "verify", str(path))
    assert code == 0 and "ok" in out
    code, out = run("cache", "info", str(path))
    assert code == 0 and "11/11 extracted" in out
    code, out = run("cache", "export-h5", str(path), str(tmp_path / "f.h5"), "--split", "test")
    assert code == 0 and "wrote 3 videos" in out
    code, out = run("cache", "import-h5", str(tmp_path / "f.h5"), str(tmp_path / "back.zarr"))
    assert code == 0 and "imported 3 videos" in out


def test_missing_cache_is_a_clear_error(tmp_path: Path) -> None:
    code, out = run("cache", "info", str(tmp_path / "nope.zarr"))
    assert code == 1
    assert "no feature cache" in out and "fsar extract" in out


def test_synth_cli_writes_a_dataset_the_catalog_reads(tmp_path: Path) -> None:
    from fsar.datasets.catalog import load_dataset
    from fsar.datasets.synthetic import synthesize

    out, png = tmp_path / "ds", tmp_path / "sheet.png"
    code, text = run("synth", "--out", str(out), "--classes", "12", "--videos-per-class", "2", "--size", "64",
                     "--preview", str(png))
    assert code == 0 and "wrote 24 videos of 12 classes" in text and png.stat().st_size > 10_000
    listing = load_dataset("synthetic", out)  # the code path of any dataset laid out in folders
    assert len(listing.videos) == 24 and not listing.missing
    again = tmp_path / "again"
    synthesize(again, classes=12, videos_per_class=2, size=64, progress=False, workers=2)
    for video in sorted((out / "videos").rglob("*.mp4")):  # byte-identical whatever the worker count
        assert video.read_bytes() == (again / video.relative_to(out)).read_bytes()
    code, text = run("synth", "--out", str(tmp_path / "bad"), "--classes", "101")
    assert code == 2 and "101" in text
