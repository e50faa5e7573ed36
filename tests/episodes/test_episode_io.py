"""Episode-list files: byte identity, round trip, clear errors for foreign files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fsar.episodes import EpisodeError, EpisodeList, load_episodes, sample_episodes, save_episodes
from fsar.episodes.io import episodes_to_bytes


def _episodes(seed: int = 0, excluded: int = 0) -> EpisodeList:
    ids = [f"vid{i:03d}" for i in range(60)]
    classes = [f"cls{i % 6}" for i in range(60)]
    return sample_episodes(ids, classes, way=5, shot=2, query=2, n=40, seed=seed, dataset="toy",
                           split="test", excluded_missing=excluded)


def test_two_writes_are_byte_identical(tmp_path: Path) -> None:
    a = save_episodes(_episodes(), tmp_path / "a.npz")
    b = save_episodes(_episodes(), tmp_path / "sub" / "b.npz")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != episodes_to_bytes(_episodes(seed=1))
    with zipfile.ZipFile(a) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_round_trip(tmp_path: Path) -> None:
    ep = _episodes(excluded=3)
    back = load_episodes(save_episodes(ep, tmp_path / "ep.npz"))
    for name in ("support_ids", "query_ids", "class_names"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ep, name))
    for name in ("dataset", "split", "way", "shot", "query", "seed", "protocol", "pool_sha256", "n_runs",
                 "excluded_missing", "format_version"):
        assert getattr(back, name) == getattr(ep, name), name
    assert episodes_to_bytes(back) == episodes_to_bytes(ep)
    with np.load(tmp_path / "ep.npz") as npz:  # a plain npz for other tools
        assert json.loads(npz["meta"].tobytes())["format"] == "fsar-episodes"


def test_foreign_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(EpisodeError, match="does not exist"):
        load_episodes(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(EpisodeError, match="not an fsar episode list"):
        load_episodes(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(EpisodeError, match="not an fsar episode list"):
        load_episodes(tmp_path / "other.npz")


def test_other_format_version(tmp_path: Path) -> None:
    path = save_episodes(_episodes(), tmp_path / "ep.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["format_version"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(EpisodeError, match="format version 99"):
        load_episodes(tmp_path / "v99.npz")
