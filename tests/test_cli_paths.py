"""The default artefact names the commands use, all built in fsar.workspace, are exactly the documented ones."""

from __future__ import annotations

from pathlib import Path

from fsar.workspace import (
    DemoLayout,
    checkpoint_path,
    episodes_path,
    finetuned_path,
    result_file_name,
    results_dir,
    tables_dir,
    val_episodes_path,
)

WS = Path("ws")


def test_checkpoint_names() -> None:
    assert checkpoint_path(WS, "ssv2", "resnet50", "ita", 1) == WS / "checkpoints" / "ssv2-resnet50-ita-1shot.pt"
    assert finetuned_path(WS, "ssv2", "resnet50", "rgb") == WS / "checkpoints" / "ssv2-resnet50-finetuned.pt"
    assert finetuned_path(WS, "ssv2", "resnet50", "flow") == WS / "checkpoints" / "ssv2-resnet50-flow-finetuned.pt"


def test_list_result_and_table_homes() -> None:
    val = val_episodes_path(WS, "ssv2", 5, 1, 300, 0)
    assert val == WS / "episodes" / "ssv2-val-5way-1shot-1q-train-val300-seed0.npz"
    val = val_episodes_path(WS, "ssv2", 5, 1, 300, 0, "small")
    assert val == WS / "episodes" / "ssv2-small-val-5way-1shot-1q-train-val300-seed0.npz"
    test = episodes_path(WS, dataset="ssv2", split_set="full", split="test", way=5, shot=1, query=1, protocol="otam",
                         seed=1)
    assert test == WS / "episodes" / "ssv2-full-test-5way-1shot-1q-otam-seed1.npz"
    assert results_dir(WS) == WS / "results" and tables_dir(WS) == WS / "tables"
    name = result_file_name("2024-05-01T12:30:05+00:00", "ita[loss=ce]", "ssv2", "test", 5, 1, "otam", "0123abcd")
    assert name == "20240501T123005-ita_loss_ce_-ssv2-test-5w1s-otam-0123abcd.json"


def test_demo_layout() -> None:
    demo = DemoLayout(WS)
    assert demo.data == WS / "data" / "synthetic" and demo.results == WS / "results" / "demo"
    assert demo.checkpoint("ita", 5) == WS / "checkpoints" / "demo-ita-5shot.pt"
    assert (demo.contact_sheet, demo.plot, demo.report) == (
        WS / "tables" / "synthetic-classes.png", WS / "tables" / "demo-accuracy.png", WS / "tables" / "demo.md")
