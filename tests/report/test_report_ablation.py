from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from fsar.report import Record
from fsar.report.ablation import ablation_rows, render_ablation
from fsar.report.pairs import ablation_from_dir
from fsar.report.provenance import ProvenanceError
from fsar.report.results import RecordError, write_record

DEFAULTS = {"losses": ["ce", "g", "t", "s"], "adapter": True, "gamma": 128.0}


Make = Callable[..., Record]


@pytest.fixture
def variant(record: Make) -> Make:
    """``variant(losses, adapter, accuracy, shot=1, gamma=128.0)``: an hcl record of that configuration."""

    def make(losses: list[str], adapter: bool, accuracy: float, shot: int = 1, gamma: float = 128.0) -> Record:
        config = {"losses": losses, "adapter": adapter, "gamma": gamma}
        changed = ",".join(f"{k}={'+'.join(v) if isinstance(v, list) else str(v).lower()}"
                           for k, v in sorted(config.items()) if DEFAULTS[k] != v)
        rec = record("hcl", accuracy=accuracy, ci95=1.0, shot=shot)
        params = {"config": config} | ({"variant": changed} if changed else {})
        return dataclasses.replace(rec, params=params)

    return make


def test_rows_are_variants_and_switch_lists_become_check_columns(record: Make, variant: Make) -> None:
    records = [variant(["ce", "g", "t", "s"], True, 60.0), variant(["ce"], True, 50.0),
               variant(["ce", "g"], False, 55.5), variant(["ce", "g", "t", "s"], True, 70.0, shot=5),
               record("otam", accuracy=40.0)]
    header, body, _ = ablation_rows(records, "hcl")
    assert header == ["variant", "adapter", "losses: ce", "losses: g", "losses: t", "losses: s",
                      "ssv2 5-way 1-shot", "Δ", "ssv2 5-way 5-shot", "Δ"]  # gamma never varies: no column
    assert body[0] == ["defaults", "✓", "✓", "✓", "✓", "✓", "60.00 ± 1.00", "", "70.00 ± 1.00", ""]
    rows = {row[0]: row for row in body}
    assert rows["losses=ce"][1:] == ["✓", "✓", "✗", "✗", "✗", "50.00 ± 1.00", "-10.00", "–", ""]
    assert rows["adapter=false,losses=ce+g"][1:7] == ["✗", "✓", "✓", "✗", "✗", "55.50 ± 1.00"]
    assert rows["adapter=false,losses=ce+g"][7] == "-4.50"


def test_formats_and_errors(tmp_path: Path, record: Make, variant: Make) -> None:
    records = [variant(["ce", "g", "t", "s"], True, 60.0), variant(["ce"], True, 50.0)]
    md = render_ablation(records, "hcl")
    assert md.splitlines()[0].startswith("| variant |") and "| defaults |" in md
    latex = render_ablation(records, "hcl", "latex")
    assert "\\checkmark" in latex and "$\\pm$" in latex and "\\toprule" in latex
    csv = render_ablation(records, "hcl", "csv")
    assert csv.splitlines()[0].startswith("variant,") and len(csv.splitlines()) == 3
    with pytest.raises(RecordError, match="no records of 'tap'"):
        render_ablation(records, "tap")
    for r in records:
        write_record(tmp_path, r)
    assert "hcl\n\n| variant" in ablation_from_dir(tmp_path, None)
    write_record(tmp_path / "single", record("otam"))
    with pytest.raises(RecordError, match="more than one variant"):
        ablation_from_dir(tmp_path / "single", None)


def test_delta_is_taken_within_the_same_streams(variant: Make) -> None:
    centred = [dataclasses.replace(r, params=r.params | {"center": True})
               for r in (variant(["ce", "g", "t", "s"], True, 60.0), variant(["ce"], True, 52.0))]
    raw = [variant(["ce", "g", "t", "s"], True, 30.0)]
    _, body, _ = ablation_rows(centred + raw, "hcl")
    rows = {row[0]: row for row in body}
    assert set(rows) == {"defaults", "defaults /c", "losses=ce /c"}
    assert rows["losses=ce /c"][-2:] == ["52.00 ± 1.00", "-8.00"]  # vs the centred default, not the raw one


def test_delta_is_taken_against_the_settings_every_row_shares(variant: Make) -> None:
    shared = [dataclasses.replace(r, params=r.params | {"variant": "gamma=64.0" + (f",{v}" if v else "")})
              for r, v in ((variant(["ce", "g", "t", "s"], True, 60.0, gamma=64.0), ""),
                           (variant(["ce"], True, 52.0, gamma=64.0), "losses=ce"),
                           (variant(["ce", "g"], True, 55.0, gamma=64.0), "losses=ce+g"))]
    _, body, _ = ablation_rows(shared, "hcl")
    rows = {row[0]: row for row in body}
    assert rows["gamma=64.0"][-2:] == ["60.00 ± 1.00", ""]
    assert rows["gamma=64.0,losses=ce"][-2:] == ["52.00 ± 1.00", "-8.00"]
    assert rows["gamma=64.0,losses=ce+g"][-2:] == ["55.00 ± 1.00", "-5.00"]
    _, body, _ = ablation_rows(shared[1:], "hcl")  # no row changes only the shared settings: no Δ
    assert all(row[-1] == "" for row in body)


def test_an_empty_default_list_is_not_shown_as_all_off(record: Make) -> None:
    # M3Net's predict=() (the default) means every view; predict=im restricts it; encoders= (set, empty) is all off.
    def m3(predict: list[str], encoders: list[str], changed: str, accuracy: float):
        rec = record("m3net", accuracy=accuracy, ci95=1.0)
        params = {"config": {"predict": predict, "encoders": encoders}} | ({"variant": changed} if changed else {})
        return dataclasses.replace(rec, params=params)

    records = [m3([], ["ifce", "ivce"], "", 55.0), m3(["im"], ["ifce", "ivce"], "predict=im", 56.0),
               m3([], [], "encoders=", 22.0)]
    header, body, _ = ablation_rows(records, "m3net")
    assert header[1:4] == ["encoders: ifce", "encoders: ivce", "predict: im"]
    rows = {row[0]: row[1:4] for row in body}
    assert rows["defaults"] == ["✓", "✓", "–"]
    assert rows["predict=im"] == ["✓", "✓", "✓"]
    assert rows["encoders="] == ["✗", "✗", "–"]


def hcl_run(record: Make, variant: str, accuracy: float, **kw: object) -> Record:
    """An hcl record of ``variant`` (``""``: the defaults); ``kw`` goes to the record builder."""
    rec = record("hcl", accuracy=accuracy, ci95=1.0, **kw)
    config = {"losses": ["ce"] if variant else ["ce", "g", "t", "s"]}
    return dataclasses.replace(rec, params={"config": config} | ({"variant": variant} if variant else {}))


def test_records_of_different_provenance_get_their_own_columns(record: Make) -> None:
    # Seed 1's default beside seed 0's variant would give a Δ between different episode lists.
    seed0 = [hcl_run(record, "", 60.0, provenance={"seed": 0}),
             hcl_run(record, "losses=ce", 50.0, provenance={"seed": 0})]
    seed1 = [hcl_run(record, "", 70.0, episodes_sha256="1" * 64, provenance={"seed": 1})]
    header, body, _ = ablation_rows(seed0 + seed1, "hcl")
    assert "ssv2 (seed 0) 5-way 1-shot" in header and "ssv2 (seed 1) 5-way 1-shot" in header
    rows = {row[0]: row for row in body}
    assert rows["losses=ce"][-4:] == ["50.00 ± 1.00", "-10.00", "–", ""]
    assert rows["defaults"][-4:] == ["60.00 ± 1.00", "", "70.00 ± 1.00", ""]


def test_hash_only_differences_are_refused_naming_the_caches(record: Make) -> None:
    a = dataclasses.replace(hcl_run(record, "", 60.0, cache_sha256="a" * 64), cache_path="caches/ssv2.zarr")
    b = dataclasses.replace(hcl_run(record, "losses=ce", 50.0, cache_sha256="b" * 64), cache_path="caches/ssv2-b.zarr")
    with pytest.raises(ProvenanceError, match=r"aaaaaaaaaaaa = caches/ssv2.zarr \(hcl\).*ssv2-b.zarr.*--filter cache="):
        ablation_rows([a, b], "hcl")


def test_partial_pools_are_marked_refused_by_strict_and_filters_apply(tmp_path: Path, record: Make) -> None:
    partial = {"pool_videos": 50, "listed_videos": 2857, "pool_classes": 5, "listed_classes": 24, "seed": 0}
    runs = [hcl_run(record, "", 60.0, provenance=partial), hcl_run(record, "losses=ce", 50.0, provenance=partial),
            hcl_run(record, "losses=ce", 49.0, provenance=partial, created="2023-01-01T00:00:00+00:00")]
    md = render_ablation(runs, "hcl")
    assert "60.00 ± 1.00†" in md and "† pool: 50 of 2,857 test videos, 5 of 24 classes" in md
    assert "1 older run of the same variant and setting superseded" in md
    assert "# † pool: 50 of 2,857" in render_ablation(runs, "hcl", "csv")
    assert "$^\\dagger$" in render_ablation(runs, "hcl", "latex")
    with pytest.raises(RecordError, match="--strict.*hcl"):
        render_ablation(runs, "hcl", strict=True)
    for r in runs:
        write_record(tmp_path, r)
    with pytest.raises(RecordError, match="--strict"):
        ablation_from_dir(tmp_path, "hcl", strict=True)
    with pytest.raises(RecordError, match="passes --filter"):
        ablation_from_dir(tmp_path, "hcl", filters=["seed=1"])
    assert "defaults" in ablation_from_dir(tmp_path, "hcl", filters=["seed=0"])
