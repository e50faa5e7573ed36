"""Maps of anonymised class names to real ones: the file format, the derivation from shared video ids (on tiny
lists made here), and what the shipped SSv2 lists allow."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from fsar.cli.class_names import class_names_cmd
from fsar.datasets._splitfiles import package_lines
from fsar.datasets.class_names import (
    ClassNamesError,
    derive_class_names,
    is_anonymised,
    match_class_names,
    official_ssv2_labels,
    parse_class_names,
    read_class_names,
    write_class_names,
)

# Anonymised lists (class, video id) and labelled lists (real name, video id) sharing some ids.
ANONYMISED = [("train0", "1"), ("train0", "2"), ("train1", "3"), ("train1", "4"), ("test0", "5"), ("test0", "6")]
LABELLED = [("Pouring something into something", "1"), ("Tearing something", "4"), ("Pushing something", "6"),
            ("Pushing something", "99")]


def test_every_class_matched_unambiguously_gives_the_map() -> None:
    assert derive_class_names(ANONYMISED, LABELLED) == {
        "train0": "Pouring something into something", "train1": "Tearing something", "test0": "Pushing something"}
    # The same label written another way (case, punctuation) is one name; the first spelling is kept.
    again = [*LABELLED, ("pouring_something  into something", "2")]
    assert derive_class_names(ANONYMISED, again)["train0"] == "Pouring something into something"


def test_a_class_whose_videos_carry_several_names_is_refused() -> None:
    mixed = [*LABELLED, ("Tearing something", "2")]  # train0 has a Pouring and a Tearing video
    match = match_class_names(ANONYMISED, mixed)
    assert match.ambiguous == {"train0": ("Pouring something into something", "Tearing something")}
    assert not match.complete
    with pytest.raises(ClassNamesError, match=r"only 2 of 3 .*train0: Pouring something into something / Tearing"):
        derive_class_names(ANONYMISED, mixed)
    # A video two sources name differently is ambiguous too.
    second_source = [("Spilling something", "6")]
    with pytest.raises(ClassNamesError, match="test0: Pushing something / Spilling something"):
        derive_class_names(ANONYMISED, [*LABELLED, *second_source])


def test_a_class_without_a_labelled_video_is_refused() -> None:
    partial = LABELLED[:2]  # no video of test0 is labelled
    assert match_class_names(ANONYMISED, partial).unmatched == ("test0",)
    with pytest.raises(ClassNamesError, match=r"only 2 of 3 classes.*1 share no labelled video \(test0\)"):
        derive_class_names(ANONYMISED, partial)


def test_two_classes_with_one_real_name_are_refused() -> None:
    same = [*LABELLED[1:3], ("Tearing something", "1")]  # train0 and train1 both "Tearing something"
    assert match_class_names(ANONYMISED, same).shared == {"Tearing something": ("train0", "train1")}
    with pytest.raises(ClassNamesError, match="train0 & train1 -> Tearing something"):
        derive_class_names(ANONYMISED, same)


def test_anonymised_names_are_split_indices_only() -> None:
    assert all(map(is_anonymised, ["train0", "test18", "val11", "Train3", "test_2"]))
    assert not any(map(is_anonymised, ["Pouring something", "train_class_0", "trainee1", "test", "3"]))


def test_map_files_round_trip_and_record_their_bytes(tmp_path: Path) -> None:
    names = {"train10": "Putting something, something and something on the table", "train2": "Tearing something"}
    path = write_class_names(names, tmp_path / "map.csv", header=["from a test"])
    text = path.read_text()
    assert text.splitlines() == ["# from a test", "train2,Tearing something",
                                 "train10,Putting something, something and something on the table"]
    read = read_class_names(path)
    assert read.names == names and read.path == str(path)
    assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_map_files_take_tabs_quotes_comments_and_refuse_bad_lines(tmp_path: Path) -> None:
    text = '\ufeff# header\n\ntest0\tPushing something\n train1 , "Tearing something, slowly" \n'
    assert parse_class_names(text) == {"test0": "Pushing something", "train1": "Tearing something, slowly"}
    for bad, why in (("train0 Pushing\n", r"m.txt:1: expected 'NAME,REAL NAME'"),
                     ("train0,A\ntrain0,B\n", r"m.txt:2: 'train0' is mapped twice"),
                     ("train0,A\ntrain1,A\n", r"m.txt:2: 'train0' and 'train1' both map to 'A'"),
                     ("train0,\n", "m.txt:1: expected"), ("# nothing\n", "maps no class")):
        (tmp_path / "m.txt").write_text(bad)
        with pytest.raises(ClassNamesError, match=why):
            read_class_names(tmp_path / "m.txt")
    with pytest.raises(ClassNamesError, match="cannot read the class-name map"):
        read_class_names(tmp_path / "missing.txt")


def _write_labels(folder: Path, train: list[dict[str, str]], validation: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "validation.json").write_text(json.dumps(validation))
    return folder


def test_official_labels_give_the_template_text(tmp_path: Path) -> None:
    _write_labels(tmp_path / "labels", [{"id": "5", "label": "pushing a cup", "template": "Pushing [something]"}],
                  [{"id": "7", "template": "Tearing [something] into two pieces"}, {"id": "8"}])
    expected = [("Pushing something", "5"), ("Tearing something into two pieces", "7")]
    assert official_ssv2_labels(tmp_path / "labels") == expected
    assert official_ssv2_labels(tmp_path) == expected  # the dataset root above labels/
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassNamesError, match="no video labels"):
        official_ssv2_labels(tmp_path / "empty")


# ----------------------------------------------------------------------------- the shipped SSv2 lists
def _shipped() -> tuple[list[tuple[str, str]], dict[str, str]]:
    full = [line for lines in package_lines("ssv2_OTAM").values() for line in lines]
    small = {vid: cls for lines in package_lines("ssv2_CMN").values() for cls, vid in lines}
    return full, small


def test_the_shipped_lists_name_36_of_the_100_ssv2_full_classes() -> None:
    full, small = _shipped()
    seen: dict[str, set[str]] = defaultdict(set)  # written out with plain dicts: what each class's videos say
    for cls, vid in full:
        seen[cls] |= {small[vid]} if vid in small else set()
    expected = {cls: names.pop() for cls, names in seen.items() if len(names) == 1}
    assert len(seen) == 100 and len(expected) == 36 and all(len(n) <= 1 for n in seen.values())
    match = match_class_names(full, [(cls, vid) for vid, cls in small.items()])
    assert match.names == expected and len(match.unmatched) == 64 and not match.ambiguous and not match.shared


def test_the_command_refuses_the_shipped_lists_alone_and_writes_a_complete_map(tmp_path: Path) -> None:
    out = tmp_path / "ssv2_full.csv"
    result = CliRunner().invoke(class_names_cmd, ["--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert "only 36 of 100 classes" in result.output and "pass --labels" in result.output
    # Official-style labels for one video of each class the CMN lists leave out complete the map.
    full, small = _shipped()
    first: dict[str, str] = {}
    for cls, vid in full:
        first.setdefault(cls, vid)
    named = {cls for cls, vid in full if vid in small}
    extra = [{"id": first[c], "template": f"Doing [something] number {c}"} for c in sorted(set(first) - named)]
    _write_labels(tmp_path / "ssv2" / "labels", extra[:40], extra[40:])
    result = CliRunner().invoke(class_names_cmd, ["--out", str(out), "--labels", str(tmp_path / "ssv2")])
    assert result.exit_code == 0, result.output
    names = read_class_names(out).names
    assert len(names) == 100 and names["test0"] == "Doing something number test0"
    assert names == derive_class_names(full, [*((c, v) for v, c in small.items()),
                                              *((e["template"].replace("[", "").replace("]", ""), e["id"])
                                                for e in extra)])
