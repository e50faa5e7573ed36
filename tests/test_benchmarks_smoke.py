"""Each benchmark runs end to end at its tiny ``--quick`` size, so that none of them rots (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks import eval as eval_bench
from benchmarks import extract, handover, head_eval, kernels, startup, train_memory
from benchmarks import train as train_bench
from benchmarks._common import Table
from fsar.datasets.catalog import load_dataset


def _check(tables: list[Table]) -> None:
    assert tables
    for table in tables:
        assert table.rows
        text = table.markdown()
        assert text.startswith("### ") and text.count("\n|") >= 3


def test_kernels_quick() -> None:
    _check(kernels.tables(quick=True))


def test_eval_quick() -> None:
    tables = eval_bench.tables(quick=True)
    _check(tables)
    assert len(tables[0].rows) == 5  # otam, km x 1-shot, 5-shot, and otam with one OpenBLAS thread
    stage = next(t for t in tables if t.title.startswith("Similarity stage"))
    # 1-shot and 5-shot, through the table and through per-episode GEMMs, against the same run's large matmul
    assert [row[:2] for row in stage.rows] == [["1", "table"], ["1", "per-episode GEMMs"], ["5", "table"],
                                               ["5", "per-episode GEMMs"]]


def test_extract_quick() -> None:
    _check(extract.tables(quick=True))


def test_handover_quick() -> None:
    _check(handover.tables(quick=True))


def test_extract_rows_can_be_chosen() -> None:
    every = extract.cases(quick=False)
    assert {(c.backbone, c.input_size) for c in every} == {(b, size) for b, _ in extract.BACKBONES
                                                          for size in extract.INPUTS}
    chosen = extract.cases(quick=False, inputs=(112,), backbones=("resnet50",))
    assert chosen and {(c.backbone, c.input_size) for c in chosen} == {("resnet50", 112)}
    apart = [c for c in every if c.apart]  # one decode-apart row per backbone and input, at the fastest precision
    assert len(apart) == len(extract.BACKBONES) * len(extract.INPUTS) and all(c.workers == (1,) for c in apart)
    assert all(c.threads == max(1, extract.CORES - 1) for c in apart)


def test_extract_cases_are_sized_in_whole_chunks() -> None:
    chunk = extract.CHUNK_VIDEOS
    assert extract.videos_for(10.0, 5.0) == extract.MIN_VIDEOS  # a slow backbone still gets three chunks
    assert extract.videos_for(800.0, 5.0) == 512  # 500 videos in 5 s at 800 f/s, rounded up to 32 chunks
    assert extract.videos_for(800.0, 5.0) % chunk == 0


def test_extract_ceiling_counts_the_decoding_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "CORES", 2)
    # 800 frames alone in 2 s (400 f/s) using 4 CPU seconds: 5 ms of CPU a frame; decoding 8 ms a video = 1 ms a frame
    m = extract.Measured(frames=800, alone_fps=[400.0], alone_cpu_s=[4.0], full={}, load_s=0.0,
                         decode_s_per_video=0.008)
    assert m.ceiling_fps(apart=False) == pytest.approx(2 / (0.005 + 0.001))  # 333 f/s: the cores' CPU seconds
    assert m.ceiling_fps(apart=True) == pytest.approx(400.0)  # one core decodes 1000 f/s: the backbone limits
    slow = extract.Measured(frames=800, alone_fps=[400.0], alone_cpu_s=[4.0], full={}, load_s=0.0,
                            decode_s_per_video=0.08)
    assert slow.ceiling_fps(apart=True) == pytest.approx(100.0)  # 10 ms a frame on the decoder's core
    idle = extract.Measured(frames=800, alone_fps=[400.0], alone_cpu_s=[0.4], full={}, load_s=0.0,
                            decode_s_per_video=0.008)
    assert idle.ceiling_fps(apart=False) == pytest.approx(400.0)  # spare cores: never above the backbone alone


def test_extract_first_videos_lists_a_prefix_of_the_dataset(tmp_path: Path) -> None:
    root = extract.make_dataset(tmp_path / "data", 32, 7)
    every = load_dataset("synthetic", root).videos
    lists = extract.first_videos(root, 5, tmp_path / "lists")
    subset = load_dataset("synthetic", root, split_dir=lists).videos
    assert [v.id for v in subset] == [v.id for v in every[:5]] and len(every) >= 7


def test_startup_quick() -> None:
    tables = startup.tables(quick=True)
    _check(tables)
    assert [row[0] for row in tables[0].rows][-3:] == ["fsar --help", "fsar matchers", "fsar datasets"]


def test_train_quick() -> None:
    tables = train_bench.tables(quick=True)
    _check(tables)
    assert {"ita", "tap", "trx"} <= {row[0] for row in tables[0].rows}


def test_head_eval_quick() -> None:
    tables = head_eval.tables(quick=True)
    _check(tables)
    assert len(tables[0].rows) == 4 and "same argmax: True" in tables[0].markdown()


def test_train_memory_quick() -> None:
    tables = train_memory.tables(quick=True)
    _check(tables)
    assert [(row[0], row[3]) for row in tables[0].rows] == [(h, mode) for h in ("ita", "tsjm", "hcl")
                                                             for mode in ("stream", "memory")]
    assert [row[0] for row in tables[1].rows] == ["ita", "tsjm", "hcl"]  # each head evaluated
    assert [row[0] for row in tables[2].rows] == ["otam"]


def test_train_memory_cache_has_the_ssv2_full_ids(tmp_path: Path) -> None:
    from fsar.cache.store import open_cache

    lines = train_memory.split_lines()
    assert [len(lines[s]) for s in ("train", "val", "test")] == [67_013, 1_926, 2_857]
    cache = open_cache(train_memory.make_cache(tmp_path / "c.zarr", 4, limit=(2, 3)))
    assert cache.ids.tolist() == [v for s in ("train", "val", "test") for v in train_memory.split_lines((2, 3))[s]]
    assert cache.n_videos == 18 and cache.patches("rgb", [0]).shape == (1, 8, 16, 4)
    assert cache.frames("flow", [0]).shape == (1, 8, 4)


def test_main_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.md"
    bench.main(["--quick", "--only", "kernels", "--out", str(out)])
    assert "### Kernels" in out.read_text()
    assert "### Kernels" in capsys.readouterr().out
