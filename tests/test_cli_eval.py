from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from fsar.cli import main
from fsar.episodes import load_episodes
from fsar.report.results import file_sha256

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

    code, out = run("eval", "--workspace", str(ws), "--matcher", "all", "--shots", "1,2", "--protocol", "otam",
                    "--quiet")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert sum("5-way 1-shot" in line for line in lines) == sum("5-way 2-shot" in line for line in lines) >= 7
    assert "10,000 episodes" in out
    # The fixed list is made once and reused.
    listed = sorted((ws / "episodes").glob("*.npz"))
    assert len(listed) == 2 and load_episodes(listed[0]).n_episodes == 10_000
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


def test_workspace_lists_are_named_by_their_seed_and_never_reused_across_seeds(tmp_path: Path,
                                                                               toy_cache: Builder) -> None:
    ws = tmp_path / "ws"
    toy_cache(ws / "caches" / "toy-none-none.zarr")
    common = ("--workspace", str(ws), "--protocol", "m3net")
    assert run("episodes", *common, "--seed", "0")[0] == 0
    first = sorted((ws / "episodes").glob("*.npz"))
    assert run("episodes", *common, "--seed", "1")[0] == 0
    both = sorted((ws / "episodes").glob("*.npz"))
    assert len(first) == 1 and len(both) == 2 and first[0] in both  # seed 1 did not overwrite seed 0's list
    assert [load_episodes(p).seed for p in both] == [0, 1]
    scores = []
    for seed in ("0", "1"):  # eval finds the list `fsar episodes` wrote for its seed
        code, out = run("eval", "--workspace", str(ws), "--matcher", "otam", "--protocol", "m3net", "--seed", seed,
                        "--quiet", "--json")
        assert code == 0, out
        scores.append(json.loads(out)["episodes_sha256"])
    assert scores == [file_sha256(p) for p in both]  # eval --seed 1 scores seed 1's list, not seed 0's
    assert len(sorted((ws / "episodes").glob("*.npz"))) == 2


def test_a_stale_workspace_list_is_refused(tmp_path: Path, toy_cache: Builder) -> None:
    from fsar.cache import schema
    from fsar.cache.store import open_cache

    ws = tmp_path / "ws"
    cache_path = toy_cache(ws / "caches" / "toy-none-none.zarr")
    args = ("eval", "--workspace", str(ws), "--matcher", "otam", "--protocol", "m3net", "--quiet")
    assert run(*args)[0] == 0
    cache = open_cache(cache_path, mode="a")  # four test videos become unreadable after the list was drawn
    cache.group[schema.status_path("rgb")][60:64] = 1
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1 and "was drawn from another pool" in result.output
    assert "Delete the list" in result.output


def test_options_that_contradict_a_given_list_are_an_error(tmp_path: Path, toy_cache: Builder,
                                                           write_list: Builder) -> None:
    cache_path = toy_cache(tmp_path / "c.zarr")
    episodes = write_list(tmp_path, cache_path, n=10, shot=2)
    base = ("eval", "--matcher", "otam", "--cache", str(cache_path), "--episodes", str(episodes), "--quiet",
            "--out", str(tmp_path / "res"))
    for extra, message in ((("--shots", "5"), "--shots 5 (the list is 2-shot)"),
                           (("--shots", "1,2"), "--shots 1,2"), (("--way", "3"), "--way 3 (the list is 5-way)")):
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    assert run(*base, "--shots", "2")[0] == 0  # agreeing with the list is fine


def test_a_partial_pool_is_flagged(tmp_path: Path, toy_cache: Builder) -> None:
    from fsar.cache import schema
    from fsar.cache.store import open_cache

    cache_path = toy_cache(tmp_path / "c.zarr")
    code, out = run("episodes", "--cache", str(cache_path), "--protocol", "custom", "--n", "10", "--out",
                    str(tmp_path / "a.npz"))
    assert code == 0 and "pool: 30 of 30 test videos, 5 of 5 classes — the full split list" in out
    cache = open_cache(cache_path, mode="a")
    cache.group[schema.done_path("rgb")][56:64] = False  # extraction of these videos has not finished
    code, out = run("eval", "--cache", str(cache_path), "--matcher", "otam", "--protocol", "otam", "--quiet",
                    "--workspace", str(tmp_path / "ws"))
    assert code == 0 and "pool: 22 of 30 test videos, 5 of 5 classes — not the full benchmark" in out


def test_reports_never_merge_runs_of_different_caches_or_seeds(tmp_path: Path, toy_cache: Builder) -> None:
    import zarr

    from fsar.cache import schema

    clean = toy_cache(tmp_path / "clean" / "toy.zarr", noise=0.6)
    noisy = toy_cache(tmp_path / "noisy" / "toy.zarr", noise=1.5)
    group = zarr.open_group(noisy, mode="r+")  # two weight files both called "none": only their hashes differ
    group.attrs[schema.ATTRS_KEY] = group.attrs[schema.ATTRS_KEY] | {"weights_sha256": "ab" * 32}

    def evaluate(matcher: str, cache: Path, seed: str, results: str) -> None:
        code, out = run("eval", "--matcher", matcher, "--cache", str(cache), "--protocol", "m3net",
                        "--seed", seed, "--quiet", "--workspace", str(tmp_path / f"ws-{cache.parent.name}"),
                        "--out", str(tmp_path / results))
        assert code == 0, out

    evaluate("otam", clean, "0", "caches")
    evaluate("dtw", noisy, "0", "caches")
    for args in (("table",), ("compare", "otam", "dtw")):  # one cell or one comparison would mix two caches
        result = CliRunner().invoke(main, [*args, "--results", str(tmp_path / "caches"), "--workspace",
                                           str(tmp_path / "ws")])
        assert result.exit_code == 1, result.output
        assert "clean/toy.zarr" in result.output and "noisy/toy.zarr" in result.output
    evaluate("otam", clean, "0", "seeds")
    evaluate("proto", clean, "1", "seeds")
    code, out = run("table", "--results", str(tmp_path / "seeds"), "--workspace", str(tmp_path / "ws"))
    assert code == 0 and "toy (seed 0) 5-way 1-shot" in out and "toy (seed 1) 5-way 1-shot" in out


def test_a_fusion_that_drops_a_component_is_warned_and_labelled(tmp_path: Path, toy_cache: Builder) -> None:
    cache = toy_cache(tmp_path / "c.zarr", modalities=("rgb", "flow"), noise=1.5)
    args = ["eval", "--matcher", "jmm", "--modality", "rgb+flow", "--cache", str(cache), "--protocol", "m3net",
            "--quiet", "--workspace", str(tmp_path / "ws")]
    result = CliRunner().invoke(main, [*args, "--weights", "rgb-otam=1,flow-otam=1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"]["weights"]["rgb-km"] == 0.0  # stdout: JSON only
    assert "warning: jmm [rgb+flow]" in result.stderr and "leave out km 0" in result.stderr
    code, out = run(*args, "--weights", "paper")
    assert code == 0 and "warning" not in out
    code, out = run("table", "--workspace", str(tmp_path / "ws"))
    assert "| jmm@rgb+flow [km 0] |" in out and "| jmm@rgb+flow |" in out
