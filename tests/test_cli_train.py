from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fsar.cli import main
from fsar.matchers.checkpoint import load_checkpoint
from tests.matchers.test_train import nuisance_cache


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_train_then_eval_with_the_checkpoint(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    nuisance_cache(ws / "caches" / "toy-none-none.zarr")
    code, out = run("train", "--workspace", str(ws), "--matcher", "ita", "--way", "3", "--query", "2",
                    "--episodes-per-epoch", "24", "--epochs", "2", "--lr", "0.01", "--optimizer", "adam",
                    "-p", "hidden=16", "-p", "loss=ce", "--val-episodes", "20", "--device", "cpu", "--quiet")
    assert code == 0, out
    assert "epoch 2/2" in out and "best: epoch" in out
    ckpt_path = ws / "checkpoints" / "toy-none-ita-1shot.pt"
    assert ckpt_path.is_file() and ckpt_path.with_suffix(".png").is_file()
    assert Path(str(ckpt_path) + ".last").is_file()
    assert load_checkpoint(ckpt_path).config["loss"] == "ce"
    # The fixed val list lives in the workspace and is reused by the next run.
    assert len(list((ws / "episodes").glob("*val*.npz"))) == 1

    code, out = run("train", "--workspace", str(ws), "--matcher", "ita", "--way", "3", "--query", "2",
                    "--episodes-per-epoch", "24", "--epochs", "2", "--lr", "0.01", "--optimizer", "adam",
                    "-p", "hidden=16", "-p", "loss=ce", "--val-episodes", "20", "--device", "cpu", "--quiet")
    assert code == 0 and "resuming ita after epoch 2" in out and "epoch 1/2" not in out

    code, out = run("eval", "--workspace", str(ws), "--matcher", "ita", "--checkpoint", str(ckpt_path),
                    "--protocol", "m3net", "--quiet")
    assert code == 0, out
    assert "ita" in out and "6,000 episodes" in out
    code, out = run("table", "--workspace", str(ws))
    assert code == 0 and "ita[hidden=16,loss=ce]" in out


def test_train_cli_errors_and_parameter_listing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    nuisance_cache(ws / "caches" / "toy-none-none.zarr")
    code, out = run("train", "--matcher", "ita", "--list-params")
    assert code == 0 and "gamma = 128.0" in out and "hidden = 512" in out and "paper:" in out
    code, out = run("train", "--workspace", str(ws), "--matcher", "ita", "-p", "gamma")
    assert code == 2 and "expected name=value" in out
    code, out = run("train", "--workspace", str(ws), "--matcher", "ita", "-p", "nope=1")
    assert code == 1 and "unknown parameter(s) nope" in out
    code, out = run("train", "--workspace", str(ws), "--matcher", "otam")
    assert code == 2 and "Invalid value for '--matcher'" in out
    code, out = run("eval", "--workspace", str(ws), "--matcher", "ita", "--protocol", "m3net", "--quiet")
    assert code == 1 and "is learned: train it with `fsar train --matcher ita`" in out
    code, out = run("eval", "--workspace", str(ws), "--matcher", "ita", "--checkpoint", str(tmp_path / "no.pt"),
                    "--protocol", "m3net", "--quiet")
    assert code == 1 and "no checkpoint at" in out
