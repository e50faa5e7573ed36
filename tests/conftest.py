"""Builders shared by the test packages: toy datasets, toy feature caches, episode lists, result records, the
small store of the cache tests, the CLI runner, and the synthetic videos (real encoders) of the decoding tests.

Each builder is a plain function (``build_*``) handed to tests by a session fixture of the same name
without the prefix, so a test asks for ``toy_cache`` and calls it with the settings it needs::

    def test_x(tmp_path: Path, toy_cache: Callable[..., Path]) -> None:
        cache_path = toy_cache(tmp_path / "c.zarr", noise=2.0)

Every builder draws from its own seeded generator: the same call gives the same data in any test order.
Test modules that need a builder at module level (constants, parametrisation) import it from here; no test
module imports another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from numpy.typing import NDArray

from fsar.cache.create import create_cache
from fsar.cache.schema import CacheSpec
from fsar.cache.store import open_cache
from fsar.cli import main
from fsar.episodes import save_episodes
from fsar.episodes.pool import episodes_for
from fsar.extract.sampling import sample_indices
from fsar.extract.transforms import CropConfig, preprocess_view
from fsar.report import Record, make_record

VideoTable = tuple[list[str], list[int], list[str], list[str]]

# Layout of the toy cache (toy_cache): T frames of D features, PER_CLASS videos per class.
TOY_FRAMES, TOY_DIM, TOY_PER_CLASS = 4, 16, 6
TOY_SPLITS = {"train": 2, "val": 4, "test": 5}

# Layout of the nuisance cache (nuisance_cache): enough train classes to train a head on.
NUISANCE_SPLITS = {"train": 30, "val": 4, "test": 5}
NUISANCE_SIGNAL = 4  # the first dims carry the class; the others a per-video offset


def build_video_table(split_classes: dict[str, int], per_class: int, class_infix: str = "") -> VideoTable:
    """(ids, labels, splits, class names) of a toy dataset: class ``<split><infix><c>``, videos ``<class>_<k>``."""
    ids: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    names: list[str] = []
    for split, n_classes in split_classes.items():
        for _ in range(n_classes):
            names.append(f"{split}{class_infix}{len(names)}")
            for k in range(per_class):
                ids.append(f"{names[-1]}_{k}")
                labels.append(len(names) - 1)
                splits.append(split)
    return ids, labels, splits, names


def build_toy_cache(path: Path, modalities: tuple[str, ...] = ("rgb",), patches: int = 0, noise: float = 0.6) -> Path:
    """Each class is a fixed random sequence of T frames; videos are noisy copies of it.

    Layout: TOY_SPLITS classes with TOY_PER_CLASS videos each, [TOY_FRAMES, TOY_DIM] features per video
    (``patches`` > 0 adds patches x patches copies of each frame as its patch grid).
    """
    rng = np.random.default_rng(0)
    t, d = TOY_FRAMES, TOY_DIM
    ids, labels, splits, names = build_video_table(TOY_SPLITS, TOY_PER_CLASS)
    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=d, frames=t,
                     patches=patches, modalities=modalities, chunk_videos=8)
    cache = create_cache(path, spec, ids, labels, splits, names)
    centres = rng.standard_normal((len(names), t, d))
    for m in modalities:
        feats = centres[labels] + noise * rng.standard_normal((len(ids), t, d))
        for start, stop in cache.chunk_ranges():
            n = stop - start
            block = feats[start:stop, None]
            pat = np.repeat(block[:, :, :, None], patches * patches, axis=3) if patches else None
            cache.write_chunk(m, start, block, np.zeros(n, np.int8), [""] * n, np.full(n, t, np.int32), pat)
    return path


def build_episode_list(tmp_path: Path, cache_path: Path, n: int = 40, shot: int = 2, way: int = 5) -> Path:
    """A seeded list of ``n`` test episodes (2 queries per class) of the cache, saved as ``tmp_path/ep.npz``."""
    cache = open_cache(cache_path)
    episodes = episodes_for(cache, split="test", way=way, shot=shot, query=2, n=n, seed=3, protocol="custom")
    return save_episodes(episodes, tmp_path / "ep.npz")


def build_split_lists(folder: Path, lists: dict[str, list[str]]) -> Path:
    """User split lists ``<folder>/<split>list.txt``, one ``class/video`` line each; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in lists.items():
        (folder / f"{split}list.txt").write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
    return folder


def build_nuisance_cache(path: Path, *, views: int = 2, dim: int = 16, modalities: tuple[str, ...] = ("rgb",),
                         seed: int = 0, frames: int = 4, per_class: int = 6,
                         split_classes: dict[str, int] = NUISANCE_SPLITS) -> Path:
    """Classes live in the first NUISANCE_SIGNAL dims; a large per-video offset fills the rest.

    Cosine similarity of raw features is dominated by the offset (near chance); a head that learns to
    weight the signal dims separates the classes. Views are fresh noise around the same video.
    """
    rng = np.random.default_rng(seed)
    signal = NUISANCE_SIGNAL
    ids, labels, splits, names = build_video_table(split_classes, per_class)
    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=dim,
                     frames=frames, views=views, modalities=modalities, chunk_videos=8)
    cache = create_cache(path, spec, ids, labels, splits, names)
    centres = np.zeros((len(names), frames, dim))
    centres[..., :signal] = 1.5 * rng.standard_normal((len(names), frames, signal))
    offsets = np.zeros((len(ids), 1, 1, dim))
    offsets[..., signal:] = 3.0 * rng.standard_normal((len(ids), 1, 1, dim - signal))
    for m in modalities:
        feats = centres[labels][:, None] + offsets + 0.5 * rng.standard_normal((len(ids), views, frames, dim))
        for start, stop in cache.chunk_ranges():
            n = stop - start
            cache.write_chunk(m, start, feats[start:stop], np.zeros(n, np.int8), [""] * n,
                              np.full(n, frames, np.int32))
    return path


def build_record(
    matcher: str,
    correct: NDArray[np.bool_] | None = None,
    *,
    dataset: str = "ssv2",
    way: int = 5,
    shot: int = 1,
    query: int = 1,
    accuracy: float | None = None,
    ci95: float | None = None,
    created: str = "2024-01-01T00:00:00+00:00",
    episodes_sha256: str = "e" * 64,
    cache_sha256: str = "c" * 64,
    provenance: dict[str, object] | None = None,
) -> Record:
    """A result record with fixed metadata; ``accuracy``/``ci95`` override the computed values.

    ``provenance`` (fsar.report.provenance.FIELDS) overrides what the other arguments give.

    Without ``correct``: 20 episodes of seeded coin flips.
    """
    if correct is None:
        correct = np.random.default_rng(0).random((20, way * query)) < 0.5
    rec = make_record(
        matcher=matcher, params={"lam": 0.1}, dataset=dataset, split="test", way=way, shot=shot,
        query=query, protocol="custom", cache_path="caches/x.zarr", cache_sha256=cache_sha256,
        episodes_path="episodes/x.npz", episodes_sha256=episodes_sha256, correct=correct, seconds=2.0,
        provenance=provenance,
    )
    changes: dict[str, object] = {"created": created}
    if accuracy is not None:
        changes["accuracy"] = accuracy
    if ci95 is not None:
        changes["ci95"] = ci95
    return dataclasses.replace(rec, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def video_table() -> Callable[..., VideoTable]:
    """:func:`build_video_table`."""
    return build_video_table


@pytest.fixture(scope="session")
def toy_cache() -> Callable[..., Path]:
    """:func:`build_toy_cache`."""
    return build_toy_cache


@pytest.fixture(scope="session")
def write_list() -> Callable[..., Path]:
    """:func:`build_episode_list`."""
    return build_episode_list


@pytest.fixture(scope="session")
def nuisance_cache() -> Callable[..., Path]:
    """:func:`build_nuisance_cache`."""
    return build_nuisance_cache


@pytest.fixture(scope="session")
def record() -> Callable[..., Record]:
    """:func:`build_record`."""
    return build_record


# The small store of the cache tests (small_store): 11 videos of 4 classes over the three splits, chunks of 4.
SMALL_TABLE: VideoTable = (
    [f"v{i:02d}" for i in range(11)],
    [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3],
    ["train"] * 6 + ["val"] * 2 + ["test"] * 3,
    ["a", "b", "c", "d"],
)


def build_small_spec(**kw: object) -> CacheSpec:
    """The spec of the small store (2 views, 2x2 patches, D = 5, T = 3); ``kw`` overrides fields."""
    base: dict[str, object] = dict(dataset="toy", backbone="net", weights="w.pth", weights_sha256="0" * 64,
                                   feature_dim=5, frames=3, views=2, patches=2, chunk_videos=4)
    base.update(kw)
    return CacheSpec(**base)  # type: ignore[arg-type]


def build_small_features(rows: range, spec: CacheSpec, seed: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Seeded random (frames [n, V, T, D], patches [n, V, T, P, D]) of ``rows``."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    frames = rng.standard_normal((n, spec.views, spec.frames, spec.feature_dim)).astype(np.float32)
    patches = rng.standard_normal((n, spec.views, spec.frames, spec.patches**2, spec.feature_dim))
    return frames, patches.astype(np.float32)


def build_small_fill(path: Path, spec: CacheSpec, ranges: list[tuple[int, int]]) -> None:
    """Commit the chunks ``ranges`` of the store at ``path`` with :func:`build_small_features` (seed = start)."""
    cache = open_cache(path, mode="a")
    for start, stop in ranges:
        frames, patches = build_small_features(range(start, stop), spec, seed=start)
        m = stop - start
        cache.write_chunk("rgb", start, frames, np.zeros(m, np.int8), [""] * m, np.full(m, 30, np.int32), patches)


def build_cli_run(*args: str) -> tuple[int, str]:
    """``fsar ARGS`` in this process: (exit code, output); exceptions other than user errors propagate."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@dataclasses.dataclass(frozen=True)
class SmallStore:
    """What the cache tests build the small store from (the fixture ``small_store``)."""

    table: VideoTable = SMALL_TABLE
    spec: Callable[..., CacheSpec] = build_small_spec
    features: Callable[..., tuple[NDArray[np.float32], NDArray[np.float32]]] = build_small_features
    fill: Callable[..., None] = build_small_fill


@pytest.fixture(scope="session")
def small_store() -> SmallStore:
    """:class:`SmallStore`."""
    return SmallStore()


@pytest.fixture(scope="session")
def cli_run() -> Callable[..., tuple[int, str]]:
    """:func:`build_cli_run`."""
    return build_cli_run


# Videos of the decoding and extraction tests: synthetic frames written with real encoders, and the oracles.
N_FRAMES = 40
# (file name, container codec, encoder options)
SYNTHETIC = [
    ("h264.mp4", "libx264", {"g": "8", "bf": "2", "preset": "ultrafast"}),
    ("vp8.webm", "libvpx", {"g": "10", "deadline": "realtime", "cpu-used": "8"}),
    ("vp9.webm", "libvpx-vp9", {"g": "10", "deadline": "realtime", "cpu-used": "8"}),
    ("mpeg4.avi", "mpeg4", {"g": "12"}),
]


def synthetic_frames(n: int = N_FRAMES, h: int = 64, w: int = 96) -> NDArray[np.uint8]:
    """Smooth moving gradients plus a bright square whose position encodes the frame number."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        frames[t, ..., 0] = (xx * 2 + t * 5) % 256
        frames[t, ..., 1] = (yy * 3 + t * 3) % 256
        frames[t, ..., 2] = 80
        r, c = 8 * ((t // 8) % 6), 8 * (t % 8)
        frames[t, r : r + 8, c + 16 : c + 24] = 255
    return frames


def write_video(path: Path, frames: NDArray[np.uint8], codec: str, options: dict[str, str]) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def full_decode(path: Path, keep: set[int] | None = None) -> dict[int, NDArray]:
    """The oracle: decode every frame from the start; keep all (or those in ``keep``)."""
    out = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if keep is None or i in keep:
                out[i] = frame.to_ndarray(format="rgb24")
    return out


def expected_view(reference: dict[int, NDArray], n_frames: int, crop: CropConfig) -> NDArray:
    """The oracle of a video's test view: its sampled frames from a full decode, preprocessed."""
    indices = sample_indices(n_frames, num_segments=8).indices
    return preprocess_view(np.stack([reference[int(i)] for i in indices]), view=0, config=crop)
