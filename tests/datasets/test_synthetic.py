from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from fsar.cli import main
from fsar.datasets._render import MIRRORED, PRIMITIVES, render_video
from fsar.datasets.catalog import load_dataset
from fsar.datasets.synthetic import class_catalogue, class_splits, read_frames, synthesize, video_rng

CATALOGUE = {c.name: c for c in class_catalogue()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, classes=12, videos_per_class=2, size=64, seed=3, progress=False, workers=1)
    return out


def test_catalogue_has_singles_and_every_ordered_pair() -> None:
    assert len(CATALOGUE) == 100 and len(PRIMITIVES) == 10
    for name, cls in CATALOGUE.items():
        if len(cls.primitives) == 2:
            a, b = cls.primitives
            reverse = CATALOGUE[f"{b}_then_{a}"]  # "B then A" exists
            assert set(reverse.primitives) == set(cls.primitives) and reverse.primitives != cls.primitives
        else:
            assert name in PRIMITIVES
    assert all(MIRRORED[MIRRORED[p]] == p for p in MIRRORED)


def test_full_split_is_64_12_24_and_disjoint() -> None:
    splits = class_splits(100)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [64, 12, 24]
    names = [c.name for members in splits.values() for c in members]
    assert len(set(names)) == 100
    assert class_splits(100) == splits  # fixed, independent of any run


def test_layout_split_lists_and_classes_json(tiny: Path) -> None:
    meta = json.loads((tiny / "classes.json").read_text())
    by_split: dict[str, list[str]] = {}
    for entry in meta["classes"]:
        by_split.setdefault(entry["split"], []).append(entry["name"])
        assert entry["primitives"] == list(CATALOGUE[entry["name"]].primitives)
    assert sum(len(v) for v in by_split.values()) == 12 and set(by_split) == {"train", "val", "test"}
    for split, names in by_split.items():
        lines = (tiny / "splits" / f"{split}list.txt").read_text().splitlines()
        assert len(lines) == 2 * len(names)
        assert {line.split("/")[0] for line in lines} == set(names)
        for line in lines:
            cls, vid = line.split("/")
            assert (tiny / "videos" / cls / f"{vid}.mp4").is_file()
    listing = load_dataset("synthetic", tiny)  # the same code path as a real dataset in folders
    assert len(listing.videos) == 24 and not listing.missing


def test_decoded_videos_match_the_rendering(tiny: Path) -> None:
    meta = json.loads((tiny / "classes.json").read_text())
    name = meta["classes"][0]["name"]
    path = tiny / "videos" / name / f"{name}_001.mp4"
    rendered = render_video(CATALOGUE[name].primitives, 64, video_rng(3, CATALOGUE[name], 1)).frames
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(12) and stream.codec_context.name == "h264"
    decoded = read_frames(path)
    assert decoded.shape == rendered.shape
    assert np.abs(decoded.astype(int) - rendered.astype(int)).mean() < 6  # lossy, but the same video


def test_same_seed_same_frames_other_seed_other_frames(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthesize(again, classes=12, videos_per_class=2, size=64, seed=3, progress=False, workers=2)
    other = tmp_path / "other"
    synthesize(other, classes=12, videos_per_class=2, size=64, seed=4, progress=False, workers=1)
    for video in sorted((tiny / "videos").rglob("*.mp4"))[:4]:
        rel = video.relative_to(tiny)
        assert video.read_bytes() == (again / rel).read_bytes()  # byte-identical files, any worker count
        np.testing.assert_array_equal(read_frames(video), read_frames(again / rel))
        a, b = read_frames(video), read_frames(other / rel)
        assert a.shape != b.shape or not np.array_equal(a, b)


def _centroids(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mass = alpha.sum(axis=(1, 2))
    ys, xs = np.mgrid[0 : alpha.shape[1], 0 : alpha.shape[2]]
    return (alpha * xs).sum(axis=(1, 2)) / mass, (alpha * ys).sum(axis=(1, 2)) / mass, mass


def _orientation(alpha: np.ndarray) -> np.ndarray:
    """Unwrapped principal-axis angle of the actor mask per frame (image coordinates)."""
    x, y, mass = _centroids(alpha)
    ys, xs = np.mgrid[0 : alpha.shape[1], 0 : alpha.shape[2]]
    dx, dy = xs[None] - x[:, None, None], ys[None] - y[:, None, None]
    mu20, mu02, mu11 = ((alpha * d).sum(axis=(1, 2)) / mass for d in (dx * dx, dy * dy, dx * dy))
    return np.unwrap(np.arctan2(2 * mu11, mu20 - mu02)) / 2


@pytest.mark.parametrize("k", range(3))
def test_mirrored_primitives_move_in_opposite_directions(k: int) -> None:
    """Measured on the rendered actor mask, independently of the renderer's parameters."""

    def mask(name: str) -> np.ndarray:
        return render_video((name,), 128, video_rng(0, CATALOGUE[name], k)).actor_alpha

    x = {n: _centroids(mask(n))[0] for n in ("move_left", "move_right")}
    assert x["move_left"][-1] - x["move_left"][0] < -25 < 25 < x["move_right"][-1] - x["move_right"][0]
    y = {n: _centroids(mask(n))[1] for n in ("move_up", "move_down")}
    assert y["move_up"][-1] - y["move_up"][0] < -25 < 25 < y["move_down"][-1] - y["move_down"][0]
    area = {n: _centroids(mask(n))[2] for n in ("grow", "shrink")}
    assert area["grow"][-1] > 2 * area["grow"][0] and area["shrink"][-1] < area["shrink"][0] / 2
    turn = {n: _orientation(mask(n)) for n in ("rotate_cw", "rotate_ccw")}
    assert turn["rotate_cw"][-1] - turn["rotate_cw"][0] > 1.0 > -1.0 > turn["rotate_ccw"][-1] - turn["rotate_ccw"][0]


def test_blink_and_colour_change_are_visible() -> None:
    alpha = render_video(("blink",), 64, video_rng(0, CATALOGUE["blink"], 0)).actor_alpha
    mass = alpha.sum(axis=(1, 2))
    assert (mass == 0).any() and (mass > 0).sum() > len(mass) // 2
    rendered = render_video(("change_colour",), 64, video_rng(0, CATALOGUE["change_colour"], 0))
    inside = rendered.actor_alpha > 0.99
    first, last = (rendered.frames[t][inside[t]].mean(axis=0) for t in (0, -1))
    assert np.abs(first - last).max() > 40


def test_a_then_b_is_b_after_a() -> None:
    """In 'move_left then move_up' the x motion ends before the y motion starts; reversed, the opposite."""
    for name, first_axis in (("move_left_then_move_up", 0), ("move_up_then_move_left", 1)):
        x, y, _ = _centroids(render_video(CATALOGUE[name].primitives, 128, video_rng(0, CATALOGUE[name], 0))
                             .actor_alpha)
        moved = [np.abs(a - a[0]) > 8 for a in (x, y)]  # beyond the camera jitter
        onset = [int(np.argmax(m)) for m in moved]
        assert onset[first_axis] < onset[1 - first_axis]


def test_cli_writes_videos_and_preview(tmp_path: Path) -> None:
    out, png = tmp_path / "ds", tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["synth", "--out", str(out), "--classes", "12", "--videos-per-class", "2",
                                       "--size", "64", "--preview", str(png)])
    assert result.exit_code == 0, result.output
    assert "wrote 24 videos of 12 classes" in result.output
    assert len(list((out / "videos").rglob("*.mp4"))) == 24 and png.stat().st_size > 10_000


@pytest.mark.parametrize("kwargs", [{"classes": 101}, {"classes": 2}, {"videos_per_class": 0}, {"size": 63},
                                    {"fps": 0}])
def test_bad_arguments_are_value_errors(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        synthesize(tmp_path / "x", progress=False, **kwargs)  # type: ignore[arg-type]


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        synthesize(tmp_path, classes=3, videos_per_class=1, size=32, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
