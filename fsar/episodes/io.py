"""The episode-list file: a deterministic ``.npz``.

The file is a standard NumPy ``.npz`` (``np.load`` reads it) written byte-for-byte reproducibly:
members in fixed order, uncompressed (deflate output differs between zlib builds), fixed zip
timestamps and attributes, little-endian ``.npy`` version 1.0 members. Members:

- ``meta``: uint8, UTF-8 JSON with sorted keys: ``format`` = ``"fsar-episodes"``, ``format_version``,
  dataset, split, way, shot, query, seed, protocol, pool_sha256, n_runs, excluded_missing, n_episodes.
- ``ids``: (N,) ``<U`` sorted video ids used; ``classes``: (C,) ``<U`` sorted class names used.
- ``support_idx`` (E, way, shot), ``query_idx`` (E, way, query), ``class_idx`` (E, way): ``<i4``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fsar._io import atomic_write
from fsar.episodes.episode_list import FORMAT_VERSION, EpisodeError, EpisodeList

FORMAT_NAME = "fsar-episodes"
_ARRAYS = ("ids", "classes", "support_idx", "query_idx", "class_idx")
_META = ("dataset", "split", "way", "shot", "query", "seed", "protocol", "pool_sha256", "n_runs",
         "excluded_missing")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _npy_bytes(arr: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def _little_endian(arr: NDArray[Any]) -> NDArray[Any]:
    if arr.dtype.kind == "U":
        return arr.astype(f"<U{max(arr.dtype.itemsize // 4, 1)}")
    return arr.astype("<i4")


def episodes_to_bytes(ep: EpisodeList) -> bytes:
    """The file content of ``ep`` (see the module docstring)."""
    meta: dict[str, Any] = {k: getattr(ep, k) for k in _META}
    meta.update(format=FORMAT_NAME, format_version=ep.format_version, n_episodes=ep.n_episodes)
    members: list[tuple[str, NDArray[Any]]] = [
        ("meta", np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8))
    ]
    members += [(name, _little_endian(getattr(ep, name))) for name in _ARRAYS]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in members:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, _npy_bytes(arr))
    return buf.getvalue()


def save_episodes(ep: EpisodeList, path: str | os.PathLike[str]) -> Path:
    """Write ``ep`` to ``path`` (atomically; parent folders are created). Returns the path."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(episodes_to_bytes(ep)))


def _read_members(path: Path) -> dict[str, NDArray[Any]]:
    not_list = f"{path} is not an fsar episode list; create one with `fsar episodes`"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != {"meta", *_ARRAYS}:
                raise EpisodeError(f"{not_list} (members: {sorted(npz.files)})")
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise EpisodeError(f"episode list {path} does not exist; create it with `fsar episodes`") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, EpisodeError):
            raise
        raise EpisodeError(f"{not_list} ({exc})") from None


def load_episodes(path: str | os.PathLike[str]) -> EpisodeList:
    """Read an episode list written by :func:`save_episodes`.

    Raises :class:`EpisodeError` if the file is missing, is not an episode list or has another format
    version.
    """
    path = Path(path)
    arrays = _read_members(path)
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EpisodeError(f"{path}: unreadable episode-list metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise EpisodeError(f"{path} is not an fsar episode list; create one with `fsar episodes`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise EpisodeError(
            f"{path} is an episode list of format version {meta.get('format_version')}, this fsar reads "
            f"version {FORMAT_VERSION}; recreate it with `fsar episodes` (same seed)."
        )
    fields = {k: meta[k] for k in _META}
    return EpisodeList(
        ids=arrays["ids"].astype(str),
        classes=arrays["classes"].astype(str),
        support_idx=arrays["support_idx"].astype(np.int32),
        query_idx=arrays["query_idx"].astype(np.int32),
        class_idx=arrays["class_idx"].astype(np.int32),
        **fields,
    )
