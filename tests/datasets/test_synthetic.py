"""The synthetic action dataset: catalogue, splits, files on disk, determinism and the motions themselves."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from fsar.datasets._render import MIRRORED, PRIMITIVES, render_video
from fsar.datasets.synthetic import (
    SPLITS,
    class_catalogue,
    class_splits,
    synthesize,
    video_rng,
    write_contact_sheet,
)


def _decode(path: Path) -> tuple[NDArray[np.uint8], Fraction | None]:
    """Every frame (T, H, W, 3) of a video, decoded with PyAV, and the stream's average rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames: NDArray[np.uint8] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream.average_rate


def _split_lists(root: Path) -> dict[str, list[str]]:
    out = {}
    for split in SPLITS:
        raw = (root / "splits" / f"{split}list.txt").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        out[split] = raw.decode().splitlines()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    summary = synthesize(root, classes=12, videos_per_class=2, size=64, seed=0, progress=False, workers=1)
    assert (summary.n_videos, summary.n_classes) == (24, 12)
    assert (summary.n_train_classes, summary.n_val_classes, summary.n_test_classes) == (8, 1, 3)
    return root


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 100 classes, one 32 px video each: the whole catalogue at the smallest cost."""
    root = tmp_path_factory.mktemp("synth") / "full"
    synthesize(root, classes=100, videos_per_class=1, size=32, seed=0, progress=False, workers=2)
    return root


def test_catalogue_has_singles_and_every_ordered_pair() -> None:
    catalogue = class_catalogue()
    names = [c.name for c in catalogue]
    assert len(names) == len(set(names)) == 100
    assert [c.primitives for c in catalogue[:10]] == [(p,) for p in PRIMITIVES]
    pairs = {c.primitives for c in catalogue[10:]}
    assert len(pairs) == 90 and all(len(p) == 2 and p[0] != p[1] for p in pairs)
    assert all(names[i] == names[i].lower() and " " not in names[i] for i in range(100))
    assert "move_left_then_grow" in names
    assert {MIRRORED[MIRRORED[p]] for p in MIRRORED} == set(MIRRORED) and len(MIRRORED) == 8


@pytest.mark.parametrize("classes", [3, 5, 12, 37, 100])
def test_class_splits_are_fixed_disjoint_and_non_empty(classes: int) -> None:
    splits = class_splits(classes)
    sizes = [len(splits[s]) for s in SPLITS]
    assert sum(sizes) == classes and min(sizes) >= 1
    names = [c.name for s in SPLITS for c in splits[s]]
    assert len(set(names)) == classes
    assert class_splits(classes) == splits
    if classes == 100:
        assert sizes == [64, 12, 24]
    if classes == 12:  # a subset is a prefix of one fixed order: smaller subsets nest in larger ones
        assert set(names) >= {c.name for s in SPLITS for c in class_splits(5)[s]}


def test_full_run_writes_the_64_12_24_split_and_reversed_pairs(full: Path) -> None:
    lists = _split_lists(full)
    assert [len(lists[s]) for s in SPLITS] == [64, 12, 24]
    meta = json.loads((full / "classes.json").read_text())
    by_name = {c["name"]: c for c in meta["classes"]}
    assert len(by_name) == 100
    for split in SPLITS:
        assert {line.split("/")[0] for line in lists[split]} == {
            n for n, c in by_name.items() if c["split"] == split
        }
    for name, entry in by_name.items():
        if len(entry["primitives"]) == 2:
            a, b = entry["primitives"]
            assert name == f"{a}_then_{b}"
            reverse = by_name[f"{b}_then_{a}"]  # the reversed class exists
            assert sorted(reverse["primitives"]) == sorted(entry["primitives"])
            assert reverse["primitives"] == [b, a]


def test_tiny_run_layout_counts_and_decoded_frames(tiny: Path) -> None:
    lists = _split_lists(tiny)
    lines = [line for s in SPLITS for line in lists[s]]
    assert len(lines) == len(set(lines)) == 24
    per_class: dict[str, list[str]] = {}
    for split in SPLITS:
        classes_here = {line.split("/")[0] for line in lists[split]}
        assert classes_here and all(c not in per_class for c in classes_here)  # exactly one split
        for line in lists[split]:
            cls, vid = line.split("/")
            per_class.setdefault(cls, []).append(vid)
    assert all(len(v) == 2 for v in per_class.values()) and len(per_class) == 12
    catalogue = {c.name: c for c in class_catalogue()}
    for cls, vids in per_class.items():
        assert sorted(p.stem for p in (tiny / "videos" / cls).iterdir()) == sorted(vids)
        frames, rate = _decode(tiny / "videos" / cls / f"{vids[0]}.mp4")
        rendered = render_video(catalogue[cls].primitives, 64, video_rng(0, catalogue[cls], 0))
        assert frames.shape == rendered.frames.shape and frames.shape[1:] == (64, 64, 3)
        assert rate == 12
        # lossy h264 + yuv420p: close to what was rendered, not equal
        assert np.abs(frames.astype(np.int16) - rendered.frames).mean() < 8


def test_same_seed_same_frames_different_seed_different(tiny: Path, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", classes=3, videos_per_class=1, size=64, seed=0, progress=False,
                       workers=1)
    other = synthesize(tmp_path / "other", classes=3, videos_per_class=1, size=64, seed=1, progress=False,
                       workers=1)
    for line in sum(_split_lists(again.out_dir).values(), []):
        rel = f"videos/{line.split('/')[0]}/{line.split('/')[1]}.mp4"
        a, _ = _decode(tiny / rel)  # the 3-class subset's videos are the same videos as in the 12-class run
        b, _ = _decode(again.out_dir / rel)
        c, _ = _decode(other.out_dir / rel)
        np.testing.assert_array_equal(a, b)
        assert a.shape != c.shape or not np.array_equal(a, c)


def _centroids(alpha: NDArray[np.float32]) -> NDArray[np.float64]:
    """Actor-mask centroids (T, 2) as (x, y) px, over frames where the actor is visible."""
    alpha = alpha[alpha.sum((1, 2)) > 0]
    grid = np.arange(alpha.shape[1])
    mass = alpha.sum((1, 2))
    return np.stack([(alpha.sum(1) * grid).sum(1) / mass, (alpha.sum(2) * grid).sum(1) / mass], 1)


def _turn(alpha: NDArray[np.float32]) -> float:
    """Total rotation (rad, positive = clockwise on screen) of the mask's principal axis."""
    alpha = alpha[alpha.sum((1, 2)) > 0]
    yy, xx = np.mgrid[0:alpha.shape[1], 0:alpha.shape[2]]
    mass = alpha.sum((1, 2))
    mx, my = (alpha * xx).sum((1, 2)) / mass, (alpha * yy).sum((1, 2)) / mass
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    mu20, mu02, mu11 = ((alpha * m).sum((1, 2)) for m in (dx * dx, dy * dy, dx * dy))
    theta = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)
    steps = (np.diff(theta) + np.pi / 2) % np.pi - np.pi / 2  # the axis is defined modulo pi
    return float(steps.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mirrored_primitives_move_in_opposite_directions(seed: int) -> None:
    def alpha(p: str) -> NDArray[np.float32]:
        return render_video((p,), 64, np.random.default_rng([seed, 7])).actor_alpha

    for plus, minus, axis in (("move_right", "move_left", 0), ("move_down", "move_up", 1)):
        d_plus = np.diff(_centroids(alpha(plus))[[0, -1], axis])[0]
        d_minus = np.diff(_centroids(alpha(minus))[[0, -1], axis])[0]
        assert d_plus > 0.25 * 64 and d_minus < -0.25 * 64  # a good fraction of the frame
    grow, shrink = alpha("grow").sum((1, 2)), alpha("shrink").sum((1, 2))
    assert grow[-1] > 2 * grow[0] and shrink[-1] < 0.5 * shrink[0]
    assert _turn(alpha("rotate_cw")) > np.deg2rad(60) and _turn(alpha("rotate_ccw")) < -np.deg2rad(60)
    blink = alpha("blink").sum((1, 2))
    assert (blink == 0).any() and blink[0] > 0 and blink[-1] > 0


def test_pair_performs_its_primitives_in_order() -> None:
    """move_left then move_down: x falls while y holds, then y rises while x holds."""
    rendered = render_video(("move_left", "move_down"), 64, np.random.default_rng(3))
    xy = _centroids(rendered.actor_alpha)
    t_mid = int(np.argmax(xy[:, 1] - xy[0, 1] > 2))  # first frame where the descent has begun
    assert xy[t_mid, 0] - xy[0, 0] < -0.25 * 64
    assert abs(xy[-1, 0] - xy[t_mid, 0]) < 2


def test_contact_sheet_and_rerun_into_same_dir(tiny: Path, tmp_path: Path) -> None:
    png = write_contact_sheet(tiny, tmp_path / "sheet.png", n_classes=2, n_frames=3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = tmp_path / "rerun"
    synthesize(root, classes=3, videos_per_class=2, size=32, progress=False, workers=1)
    synthesize(root, classes=3, videos_per_class=1, size=32, progress=False, workers=1)
    assert len(list((root / "videos").rglob("*.mp4"))) == 3  # the earlier run's videos are gone


@pytest.mark.parametrize(
    "kwargs",
    [{"classes": 101}, {"classes": 2}, {"videos_per_class": 0}, {"size": 63}, {"size": 16}, {"fps": 0},
     {"seed": -1}, {"workers": 0}],
)
def test_bad_arguments_raise(kwargs: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synthesize(tmp_path / "x", progress=False, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()  # nothing written before the check


def test_refuses_a_non_empty_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        synthesize(tmp_path, classes=3, videos_per_class=1, size=32, progress=False)
    with pytest.raises(ValueError):
        render_video(("jump",), 32, np.random.default_rng(0))
