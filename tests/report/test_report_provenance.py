"""Provenance: records of different caches, seeds or pools never share a table cell or a comparison."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fsar.report import Record, RecordError, load_record, render_table, write_record
from fsar.report.pairs import compare_latest, table_from_dir
from fsar.report.provenance import ProvenanceError

Make = Callable[..., Record]
NEW = "2024-06-01T00:00:00+00:00"
OLD = "2024-01-01T00:00:00+00:00"
FULL = {"pool_videos": 2857, "listed_videos": 2857, "pool_classes": 24, "listed_classes": 24}
PARTIAL = {"pool_videos": 50, "listed_videos": 2857, "pool_classes": 5, "listed_classes": 24}


def test_old_records_without_provenance_still_load(tmp_path: Path, record: Make) -> None:
    path = write_record(tmp_path, record("otam", provenance={"seed": 3, "backbone": "resnet50", "known": True}))
    back = load_record(path)
    assert back.provenance["seed"] == 3 and back.provenance["backbone"] == "resnet50" and back.provenance["known"]
    obj = json.loads(path.read_text())
    del obj["provenance"]  # as written before records stored it
    path.write_text(json.dumps(obj))
    old = load_record(path)
    assert old.provenance["known"] is False and old.provenance["seed"] is None
    assert old.provenance["cache_sha256"] == "c" * 64 and old.provenance["dataset"] == "ssv2"


def test_split_sets_get_their_own_columns(record: Make) -> None:
    small = record("otam", accuracy=90.0, ci95=0.1, created=NEW, cache_sha256="a" * 64,
                   provenance={"split_set": "small"})
    full = record("dtw", accuracy=40.0, ci95=0.1, cache_sha256="b" * 64, provenance={"split_set": "full"})
    table = render_table([small, full])
    assert "ssv2 (small) 5-way 1-shot" in table and "ssv2 (full) 5-way 1-shot" in table
    assert "| otam | – | **90.00 ± 0.10** |" in table  # not in the full column beside dtw


def test_backbone_and_seed_differences_are_labelled(record: Make) -> None:
    r18 = record("otam", cache_sha256="a" * 64, provenance={"backbone": "resnet18", "weights": "random"})
    eff = record("dtw", cache_sha256="b" * 64, provenance={"backbone": "efficientnet_b0", "weights": "imagenet"})
    table = render_table([r18, eff])
    assert "ssv2 (efficientnet_b0, weights imagenet)" in table and "ssv2 (resnet18, weights random)" in table
    seed0 = record("otam", episodes_sha256="1" * 64, provenance={"seed": 0})
    seed1 = record("proto", episodes_sha256="2" * 64, provenance={"seed": 1})
    table = render_table([seed0, seed1])
    assert "ssv2 (seed 0) 5-way 1-shot" in table and "ssv2 (seed 1) 5-way 1-shot" in table


def test_only_hashes_differ_is_refused_with_the_filter_to_use(tmp_path: Path, record: Make) -> None:
    a = record("otam", cache_sha256="a" * 64)
    b = record("dtw", cache_sha256="b" * 64)
    with pytest.raises(ProvenanceError, match="cache_sha256.*--filter cache=PREFIX"):
        render_table([a, b])
    other_list = record("proto", episodes_sha256="f" * 64, cache_sha256="a" * 64)
    with pytest.raises(ProvenanceError, match="--filter episodes=PREFIX"):
        render_table([a, other_list])
    write_record(tmp_path, a)
    write_record(tmp_path, b)
    assert "| otam |" in table_from_dir(tmp_path, filters=["cache=aaaa"])
    assert "dtw" not in table_from_dir(tmp_path, filters=["cache=aaaa"])
    with pytest.raises(RecordError, match="no result record"):
        table_from_dir(tmp_path, filters=["seed=9"])


def test_partial_pools_are_marked_and_refused_by_strict(record: Make) -> None:
    part = record("otam", accuracy=80.0, ci95=0.5, provenance=PARTIAL | {"split": "test"})
    full = record("dtw", accuracy=50.0, ci95=0.5, cache_sha256="b" * 64, provenance=FULL)
    table = render_table([part])
    assert "80.00 ± 0.50**†" in table
    assert "† pool: 50 of 2,857 test videos, 5 of 24 classes — not the full benchmark" in table
    assert "†" not in render_table([full])
    with pytest.raises(RecordError, match="--strict.*otam"):
        render_table([part], strict=True)
    assert "pool: 50 of 2,857" in render_table([part], "csv")


def test_superseded_runs_are_counted(record: Make) -> None:
    runs = [record("otam", accuracy=60.0, created=OLD), record("otam", accuracy=61.0, created=NEW),
            record("otam", accuracy=59.0, created="2024-03-01T00:00:00+00:00")]
    table = render_table(runs)
    assert "61.00" in table and "2 older runs of the same matcher and setting superseded" in table


def test_compare_refuses_different_caches(tmp_path: Path, record: Make) -> None:
    write_record(tmp_path, record("otam", cache_sha256="a" * 64))
    write_record(tmp_path, record("dtw", cache_sha256="b" * 64))
    with pytest.raises(RecordError, match="different settings.*cache_sha256 aaaa.*--allow-different"):
        compare_latest(tmp_path, "otam", "dtw")
    lines = compare_latest(tmp_path, "otam", "dtw", allow_different=True)
    assert len(lines) == 1 and "different: cache_sha256" in lines[0] and "otam vs dtw" in lines[0]
    write_record(tmp_path, record("dtw", cache_sha256="a" * 64, created=NEW))
    assert "different" not in compare_latest(tmp_path, "otam", "dtw")[0]


def test_one_matcher_on_two_caches_is_compared_side_by_side(tmp_path: Path, record: Make) -> None:
    """ImageNet features against a fine-tuned backbone's: the same matcher, two caches, one episode list."""
    wrong, right = np.zeros((20, 5), bool), np.ones((20, 5), bool)
    right[:10, 0] = False  # 90 of 100 queries right, against none
    imagenet = dataclasses.replace(record("otam", wrong, cache_sha256="a" * 64), cache_path="caches/in.zarr")
    tuned = dataclasses.replace(record("otam", right, cache_sha256="b" * 64), cache_path="caches/ft.zarr")
    write_record(tmp_path, imagenet)
    write_record(tmp_path, tuned)
    write_record(tmp_path, record("dtw", cache_sha256="a" * 64))
    with pytest.raises(RecordError, match="with itself.*--a KEY=VALUE"):
        compare_latest(tmp_path, "otam", "otam")
    with pytest.raises(RecordError, match="different settings.*caches/ft.zarr.*--allow-different"):
        compare_latest(tmp_path, "otam", "otam", a_filters=["cache=bbbb"], b_filters=["cache=aaaa"])
    lines = compare_latest(tmp_path, "otam", "otam", a_filters=["cache=bbbb"], b_filters=["cache=aaaa"],
                           allow_different=True)
    assert len(lines) == 1 and "otam vs otam" in lines[0] and "caches/ft.zarr" in lines[0]
    assert "+90.00" in lines[0]  # A (fine-tuned) minus B (ImageNet)
    # a side filter leaves the other matcher's runs alone
    assert "otam vs dtw" in compare_latest(tmp_path, "otam", "dtw", a_filters=["cache=aaaa"])[0]


def test_refusals_name_the_caches_and_lists_not_only_hashes(tmp_path: Path, record: Make) -> None:
    a = dataclasses.replace(record("otam", cache_sha256="a" * 64), cache_path="caches/ssv2.zarr")
    b = dataclasses.replace(record("dtw", cache_sha256="b" * 64), cache_path="caches/ssv2-rerun.zarr")
    with pytest.raises(ProvenanceError, match=r"= caches/ssv2.zarr \(otam\).*= caches/ssv2-rerun.zarr \(dtw\)"):
        render_table([a, b])
    write_record(tmp_path, a)
    write_record(tmp_path, b)
    with pytest.raises(RecordError, match=r"aaaaaaaaaaaa \(caches/ssv2.zarr\) vs bbbbbbbbbbbb \(caches/ssv2-rerun"):
        compare_latest(tmp_path, "otam", "dtw")
