"""Result records: round trip, bit packing, directory loading, errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fsar.report import (
    Record,
    RecordError,
    file_sha256,
    latest,
    load_record,
    load_records,
    make_record,
    write_record,
)

Make = Callable[..., Record]


def test_make_record_fields(record: Make) -> None:
    correct = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=bool)
    rec = record("km", correct)
    assert rec.accuracy == pytest.approx(90.0)
    assert rec.ci95 == pytest.approx(1.96 * 10.0 / np.sqrt(2))
    assert rec.ci_over == "episodes"
    np.testing.assert_array_equal(rec.correct_counts, [4, 5])
    assert rec.pairs_per_s == pytest.approx(2 * 5 * 5 / 2.0)  # E * Q * way * shot / seconds
    with pytest.raises(RecordError, match="way\\*query"):
        make_record(matcher="x", params={}, dataset="d", split="test", way=5, shot=1, query=2,
                    protocol="custom", cache_path="c", cache_sha256="", episodes_path="e",
                    episodes_sha256="", correct=correct, seconds=1.0)


def test_round_trip(tmp_path: Path, record: Make) -> None:
    correct = np.random.default_rng(2).random((37, 15)) < 0.6  # 555 bits: not a multiple of 8
    rec = dataclasses.replace(record("otam", correct, query=3), checkpoint="ck/otam.pt",
                              extra={"note": "x"}, params={"lam": np.float32(0.5), "p": Path("a")})
    path = write_record(tmp_path / "results", rec)
    assert path.suffix == ".json" and "otam-ssv2-test-5w1s-custom" in path.name
    back = load_record(path)
    np.testing.assert_array_equal(back.correct, rec.correct)
    for f in dataclasses.fields(rec):
        if f.name not in ("correct", "params"):
            assert getattr(back, f.name) == getattr(rec, f.name), f.name
    assert back.params == {"lam": 0.5, "p": "a"}
    obj = json.loads(path.read_text())
    assert obj["format"] == "fsar-result" and obj["correct"]["encoding"] == "packbits-base64"


def test_load_records_orders_skips_and_fails_clearly(tmp_path: Path, record: Make) -> None:
    new = record("km", created="2024-05-02T00:00:00+00:00")
    old = record("km", created="2024-05-01T00:00:00+00:00")
    write_record(tmp_path, new)
    write_record(tmp_path, old)
    (tmp_path / "notes.json").write_text('{"something": "else"}')
    records = load_records(tmp_path)
    assert [r.created for r in records] == [old.created, new.created]
    assert latest(records, lambda r: r.matcher)["km"].created == new.created
    (tmp_path / "broken.json").write_text('{"format": "fsar-result", "format_version": 1}')
    with pytest.raises(RecordError, match="broken.json: malformed"):
        load_records(tmp_path)
    (tmp_path / "broken.json").write_text('{"format": "fsar-result", "format_version": 7}')
    with pytest.raises(RecordError, match="version 7"):
        load_records(tmp_path)


def test_file_sha256(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
