from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from fsar.cli import main
from fsar.runner.checkpoint import load_checkpoint

Builder = Callable[..., Path]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_train_then_eval_with_the_checkpoint(tmp_path: Path, nuisance_cache: Builder) -> None:
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


def test_train_cli_errors_and_parameter_listing(tmp_path: Path, nuisance_cache: Builder) -> None:
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


def test_eval_time_parameters_of_a_checkpoint(tmp_path: Path, toy_cache: Builder, write_list: Builder) -> None:
    import dataclasses

    import torch

    from fsar.report.results import load_records
    from fsar.runner.checkpoint import save_checkpoint
    from fsar.runner.train import TrainConfig, train

    cache = toy_cache(tmp_path / "toy.zarr", patches=2)
    torch.manual_seed(0)
    config = TrainConfig(matcher="m3net", shots=1, way=2, query=1, episodes_per_epoch=4, epochs=1, seed=0,
                         device="cpu", params={"cm_dim": "8", "patch_grid": "2"})
    train(config, cache, tmp_path / "m3.pt", val_episodes=4, val_path=tmp_path / "val.npz", progress=False,
          echo=lambda *_: None)
    episodes = write_list(tmp_path, cache, n=30, shot=1)
    # Oracle: the same weights saved with predict=im in their config.
    ckpt = load_checkpoint(tmp_path / "m3.pt")
    save_checkpoint(dataclasses.replace(ckpt, config=ckpt.config | {"predict": ["im"]}), tmp_path / "im.pt")
    for name, extra in (("m3.pt", ["-p", "predict=im"]), ("im.pt", []), ("m3.pt", [])):
        code, out = run("eval", "--cache", str(cache), "--matcher", "m3net", "--checkpoint", str(tmp_path / name),
                        "--episodes", str(episodes), "--out", str(tmp_path / f"r-{name}-{len(extra)}"),
                        "--quiet", "--device", "cpu", *extra)
        assert code == 0, out
    by_eval, by_file, fused = (load_records(tmp_path / d)[0] for d in ("r-m3.pt-2", "r-im.pt-0", "r-m3.pt-0"))
    assert by_eval.params["variant"] == by_file.params["variant"] == "cm_dim=8,patch_grid=2,predict=im"
    assert (by_eval.correct == by_file.correct).all()
    assert by_eval.params["config"]["predict"] == ["im"] and fused.params["config"]["predict"] == []

    base = ["eval", "--cache", str(cache), "--episodes", str(episodes), "--quiet", "--out", str(tmp_path / "x")]
    code, out = run(*base, "--matcher", "m3net", "--checkpoint", str(tmp_path / "m3.pt"), "-p", "views=im")
    assert code == 1 and "views are fixed by training" in out and "evaluation may set: predict" in out
    code, out = run(*base, "--matcher", "m3net", "--checkpoint", str(tmp_path / "m3.pt"), "-p", "predict=xx")
    assert code == 1 and "view 'xx'" in out
    code, out = run(*base, "--matcher", "m3net", "--checkpoint", str(tmp_path / "m3.pt"), "-p", "predict=im@ivce")
    assert code == 1 and "must be a subset of views" in out
    code, out = run(*base, "--matcher", "otam", "-p", "predict=im")
    assert code == 1 and "parameter-free" in out
