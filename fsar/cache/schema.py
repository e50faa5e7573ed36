"""The on-disk layout of a feature cache: the only place that knows array names, dtypes and chunks.

One Zarr v3 store per (dataset, backbone, weights, preprocessing)::

    attrs                    {"fsar_cache": CacheSpec as JSON}
    videos/id       [N] str  the split-file ids (episode lists refer to videos by these)
    videos/label    [N] i4   class index into classes/name
    videos/split    [N] i1   0 train, 1 val, 2 test
    videos/n_frames [N] i4   decoded frame count (0 until extracted)
    classes/name    [C] str
    <m>/frames      [N, V, T, D]    f    per-frame pooled features, view 0 = deterministic test view
    <m>/patches     [N, V, T, P, D] f    optional n x n adaptive-pooled map, P = n * n
    <m>/done        [N] bool  the chunk holding this video was committed
    <m>/status      [N] i1    Status
    <m>/error       [N] str   why a video failed ("" when ok)

with ``<m>`` in :data:`MODALITIES` and ``f`` the spec's ``feature_dtype`` (float16, or float32 for
features imported from a float32 dump; caches written before the field existed are float16). Every
array is chunked along N in blocks of ``CacheSpec.chunk_videos`` whole videos, so writers owning
disjoint chunk-aligned row ranges never touch the same file. No sharding codec is used: a shard
shared by two writers loses rows silently.

Integrity (``CacheSpec.integrity`` >= 1): every chunk ends in a CRC-32C checksum, so a damaged chunk is
an error on read, and every chunk is written even when it holds only fill values, so a chunk file that
is absent is a lost chunk, never "all zeros". Caches written before (integrity 0) are read without
these checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum
from typing import Any, NamedTuple

SCHEMA_VERSION = 1
ATTRS_KEY = "fsar_cache"
# 1: CRC-32C on every chunk and every chunk written (module docstring); 0: neither.
INTEGRITY = 1

MODALITIES = ("rgb", "flow")
SPLITS = ("train", "val", "test")
FEATURE_DTYPE = "float16"  # of extracted features, and of every cache written before feature_dtype existed
FEATURE_DTYPES = ("float16", "float32")
DEFAULT_CHUNK_VIDEOS = 16


class Status(IntEnum):
    """Per-video extraction outcome; failures are recorded, never silently dropped."""

    OK = 0
    UNREADABLE = 1
    PADDED = 2  # fewer decodable frames than T: frames repeated to fill the segments
    MISSING = 3  # in the split list, not (yet) under the dataset root: never done; a later run adds it


@dataclass(frozen=True)
class CacheSpec:
    """Everything that makes two caches comparable; stored as the store's attributes.

    Preprocessing travels with the features (like a model's pretrained config), so a reader
    never guesses how they were made.
    """

    dataset: str
    backbone: str
    weights: str
    weights_sha256: str
    feature_dim: int
    frames: int = 8
    views: int = 1
    patches: int = 0  # n of the n x n patch grid; 0 = no patch arrays
    modalities: tuple[str, ...] = ("rgb",)
    input_size: int = 224
    short_side: int = 256
    # input_size = short_side = 0 with mean = std = (): preprocessing unknown (features imported from a dump).
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    sampling: str = "tsn-segment-centres"
    flow_method: str = ""
    split_set: str = ""
    # The backbone's compute precision (fp32, bf16, fp16): it changes the features' values, so a store
    # never mixes two. "" = not recorded (an imported dump, or a cache written before it was recorded).
    precision: str = ""
    chunk_videos: int = DEFAULT_CHUNK_VIDEOS
    # dtype of the feature arrays: a store never mixes two (values a dtype cannot hold would be lost).
    feature_dtype: str = FEATURE_DTYPE
    schema_version: int = SCHEMA_VERSION
    fsar_version: str = ""
    integrity: int = 0
    created: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        for name in ("feature_dim", "frames", "views", "chunk_videos"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("patches", "input_size", "short_side"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: not used or unknown), got {getattr(self, name)}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have one value per channel, got {self.mean} and {self.std}")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ValueError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {self.feature_dtype!r}")

    @property
    def preprocessing_known(self) -> bool:
        """False for features imported from a dump: how their frames were sampled and normalised is not known."""
        return self.sampling != "imported" and self.input_size > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheSpec:
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        for key in ("modalities", "mean", "std"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)

    def identity(self) -> dict[str, Any]:
        """The fields that must match for features to be appended to an existing store.

        ``feature_dtype`` is left out when it is float16, the dtype of every cache written before the field
        existed, so that their identity (and content hash, which checkpoints and result records name) is
        unchanged; compare identities over the keys of both (a float32 one has the key, a float16 one not).
        """
        data: dict[str, Any] = json.loads(json.dumps(self.to_json()))  # tuples and lists compare alike
        for volatile in ("created", "fsar_version", "modalities", "integrity"):
            data.pop(volatile)
        if data["feature_dtype"] == FEATURE_DTYPE:
            data.pop("feature_dtype")
        return data

    def identity_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True)


# Array paths. Only this module spells them.
VIDEO_ID = "videos/id"
VIDEO_LABEL = "videos/label"
VIDEO_SPLIT = "videos/split"
VIDEO_N_FRAMES = "videos/n_frames"
CLASS_NAME = "classes/name"


def frames_path(modality: str) -> str:
    return f"{modality}/frames"


def patches_path(modality: str) -> str:
    return f"{modality}/patches"


def done_path(modality: str) -> str:
    return f"{modality}/done"


def status_path(modality: str) -> str:
    return f"{modality}/status"


def error_path(modality: str) -> str:
    return f"{modality}/error"


class FeatureArray(NamedTuple):
    """A feature array's layout: ``chunks`` is the unit of writing (``chunk_videos`` videos, one file, a Zarr
    shard), ``inner`` the unit of reading within it (one video, an inner chunk with its own checksum)."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    inner: tuple[int, ...]


def feature_shapes(spec: CacheSpec, n_videos: int) -> dict[str, FeatureArray]:
    """(shape, chunks, dtype, inner) of each feature array for one modality, keyed by 'frames'/'patches'.

    Feature arrays are sharded: a training step reads single videos spread over the whole split, and a video of
    an unsharded chunk costs decoding all ``chunk_videos`` of them. Caches made before sharding read the same
    (their arrays say their own layout)."""
    c = spec.chunk_videos
    videos: list[tuple[str, tuple[int, ...]]] = [("frames", (spec.views, spec.frames, spec.feature_dim))]
    if spec.patches:
        videos.append(("patches", (spec.views, spec.frames, spec.patches * spec.patches, spec.feature_dim)))
    return {kind: FeatureArray((n_videos, *video), (c, *video), spec.feature_dtype, (1, *video))
            for kind, video in videos}


def compressors() -> tuple[Any, ...]:
    """Codecs after serialisation of every array of a new cache: Zstandard, then a CRC-32C of the result."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(level=0), Crc32cCodec())


def chunk_key(zarray: Any, chunk: int) -> str:
    """Store key of chunk ``chunk`` along the videos (every other axis is one chunk) of an array."""
    return f"{zarray.path}/{zarray.metadata.encode_chunk_key((chunk,) + (0,) * (zarray.ndim - 1))}"
