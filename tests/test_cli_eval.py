from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from fsar.cli import main
from fsar.episodes import load_episodes

Builder = Callable[..., Path]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_eval_pipeline_in_a_workspace(tmp_path: Path, toy_cache: Builder) -> None:
    ws = tmp_path / "ws"
    toy_cache(ws / "caches" / "toy-none-none.zarr", patches=2, noise=1.0)
    code, out = run("episodes", "--workspace", str(ws), "--shot", "2", "--protocol", "custom", "--n", "30",
                    "--out", str(tmp_path / "a.npz"))
    assert code == 0 and "wrote 30 5-way 2-shot" in out
    code, _ = run("episodes", "--workspace", str(ws), "--shot", "2", "--protocol", "custom", "--n", "30",
                  "--out", str(tmp_path / "b.npz"))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

    code, out = run("eval", "--workspace", str(ws), "--matcher", "all", "--shots", "1,2", "--protocol", "m3net",
                    "--quiet")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert sum("5-way 1-shot" in line for line in lines) == sum("5-way 2-shot" in line for line in lines) >= 7
    assert "6,000 episodes" in out
    # The fixed list is made once and reused.
    listed = sorted((ws / "episodes").glob("*.npz"))
    assert len(listed) == 2 and load_episodes(listed[0]).n_episodes == 6000
    code, out = run("compare", "otam", "proto", "--workspace", str(ws), "--shot", "1")
    assert code == 0 and "otam vs proto" in out and "McNemar" in out
    code, out = run("table", "--workspace", str(ws), "--format", "md")
    assert code == 0 and "| otam" in out and "**" in out
    code, out = run("plot", "--workspace", str(ws), "--kind", "shot", "--out", str(tmp_path / "p.png"))
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 1000


def test_eval_json_and_explicit_episodes(tmp_path: Path, toy_cache: Builder) -> None:
    cache = toy_cache(tmp_path / "c.zarr")
    code, _ = run("episodes", "--cache", str(cache), "--way", "3", "--protocol", "custom", "--n", "12",
                  "--out", str(tmp_path / "e.npz"))
    assert code == 0
    code, out = run("eval", "--matcher", "km", "--cache", str(cache), "--episodes", str(tmp_path / "e.npz"),
                    "--json", "--quiet", "--out", str(tmp_path / "res"))
    assert code == 0
    record = json.loads(out)
    assert record["matcher"] == "km" and record["way"] == 3


def test_eval_errors_say_what_to_do(tmp_path: Path, toy_cache: Builder) -> None:
    code, out = run("eval", "--workspace", str(tmp_path / "empty"), "--matcher", "otam")
    assert code == 1 and "fsar extract" in out
    cache = toy_cache(tmp_path / "c.zarr")
    code, out = run("eval", "--cache", str(cache), "--matcher", "otam", "--modality", "flow")
    assert code == 1 and "no 'flow' features" in out
    code, out = run("compare", "otam", "km", "--results", str(tmp_path / "none"))
    assert code == 1 and "fsar eval" in out


def test_an_unknown_matcher_is_refused_before_anything_loads(tmp_path: Path) -> None:
    for name, hint in (("OTAM", "did you mean 'otam'?"), ("otam,dtw", "known matchers: all, bimhm")):
        # The cache does not exist: the matcher name is checked first.
        result = CliRunner().invoke(main, ["eval", "--matcher", name, "--cache", str(tmp_path / "none.zarr")])
        assert result.exit_code == 1 and result.exception is not None
        assert f"unknown matcher {name!r}" in result.output and hint in result.output
        assert "Traceback" not in result.output and "no feature cache" not in result.output
