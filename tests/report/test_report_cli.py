"""The table / compare commands: --filter, --strict, --allow-different and the workspace's tables/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from fsar.cli import main
from fsar.report import Record, write_record

PARTIAL = {"pool_videos": 50, "listed_videos": 2857, "pool_classes": 5, "listed_classes": 24, "split": "test"}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_table_and_compare_options(tmp_path: Path, record: Callable[..., Record]) -> None:
    ws = tmp_path / "ws"
    results = ws / "results"
    write_record(results, record("otam", cache_sha256="a" * 64, provenance=PARTIAL))
    write_record(results, record("dtw", cache_sha256="b" * 64, provenance=PARTIAL))
    code, out = run("table", "--workspace", str(ws))
    assert code == 1 and "--filter cache=PREFIX" in out
    code, out = run("table", "--workspace", str(ws), "--filter", "cache=a")
    assert code == 0 and "†" in out and "dtw" not in out
    assert "not the full benchmark" in (ws / "tables" / "results.md").read_text()
    code, out = run("table", "--workspace", str(ws), "--filter", "cache=a", "--strict")
    assert code == 1 and "partial pool" in out and "otam" in out
    code, out = run("compare", "otam", "dtw", "--workspace", str(ws))
    assert code == 1 and "--allow-different" in out
    code, out = run("compare", "otam", "dtw", "--workspace", str(ws), "--allow-different")
    assert code == 0 and "otam vs dtw" in out and "different: cache_sha256" in out
