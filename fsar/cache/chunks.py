"""Rows of a cache's arrays read straight from the chunk files of a local store.

Every array of a cache is chunked along its first axis (videos) only, and its chunks are encoded as
little-endian bytes (variable-length UTF-8 for strings), then (new caches) Zstandard and a CRC-32C of the result
(:func:`schema.compressors`).
Zarr schedules each chunk of a read as tasks of its event loop and thread pool, about half a millisecond per
chunk whatever its size: an SSv2-full-sized cache has 4,488 chunks per array, so reading the per-video ``done``
flags, or one video from each of a few hundred chunks (a window of training episodes), costs far more in
scheduling than in decoding, and competes with the training step for the cores. For such arrays in a local
store, :func:`read_rows` reads the chunk files itself, with the same checks (the stored CRC-32C, the decoded
size) and the same codec, in the calling thread; any other array or store is read through Zarr. Either way a
chunk that is not in the store reads as the array's fill value, as Zarr reads it: callers that must not accept
that check :meth:`FeatureCache.missing_chunks` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# One selection on the axes after the first: an index (that axis is dropped) or indices (kept), e.g. a view.
Inner = int | NDArray[np.int64]


class ChunkReader:
    """Whole chunks of one array (chunked along axis 0 only) decoded from its files in a local store."""

    def __init__(self, zarray: Any, folder: Path, strings: bool, compressed: bool, checksummed: bool) -> None:
        from numcodecs import VLenUTF8, Zstd

        self.zarray, self.folder = zarray, folder
        self.compressed, self.checksummed = compressed, checksummed
        self.chunk_shape: tuple[int, ...] = tuple(zarray.chunks)
        self.size = int(np.prod(self.chunk_shape))
        # Strings decode to Python str objects; numbers to their little-endian dtype.
        self.strings: Any = VLenUTF8() if strings else None
        self.dtype = np.dtype(object) if strings else np.dtype(zarray.dtype).newbyteorder("<")
        self.fill_value = zarray.metadata.fill_value
        self._zstd = Zstd()

    @classmethod
    def of(cls, zarray: Any) -> ChunkReader | None:
        """A reader for ``zarray``, or None when it is not one this module decodes (then read through Zarr)."""
        from zarr.codecs import BytesCodec, Crc32cCodec, VLenUTF8Codec, ZstdCodec
        from zarr.storage import LocalStore

        metadata = zarray.metadata
        if getattr(metadata, "zarr_format", None) != 3 or not isinstance(zarray.store, LocalStore):
            return None
        if any(c < s for c, s in zip(zarray.chunks[1:], zarray.shape[1:], strict=True)):
            return None
        codecs = list(metadata.codecs)
        strings = bool(codecs) and isinstance(codecs[0], VLenUTF8Codec)
        numbers = bool(codecs) and isinstance(codecs[0], BytesCodec) and np.dtype(zarray.dtype).kind in "biuf" \
            and str(getattr(codecs[0].endian, "value", "little")) == "little"
        if not (strings or numbers):
            return None
        rest = codecs[1:]
        compressed = bool(rest) and isinstance(rest[0], ZstdCodec) and not rest[0].checksum
        rest = rest[1:] if compressed else rest
        checksummed = bool(rest) and isinstance(rest[0], Crc32cCodec)
        if rest[1 if checksummed else 0:]:
            return None
        return cls(zarray, Path(zarray.store.root) / zarray.path, strings, compressed, checksummed)

    def chunk(self, k: int) -> NDArray[Any]:
        """Chunk ``k`` along axis 0, whole (an edge chunk is stored at full size); ValueError or RuntimeError when
        its bytes fail their checksum or do not decode, as Zarr raises them."""
        key = self.zarray.metadata.encode_chunk_key((k,) + (0,) * (len(self.chunk_shape) - 1))
        try:
            data = (self.folder / key).read_bytes()
        except FileNotFoundError:
            return np.full(self.chunk_shape, self.fill_value, dtype=self.dtype)
        if self.checksummed:
            import google_crc32c

            data, stored = data[:-4], data[-4:]
            if google_crc32c.value(data).to_bytes(4, "little") != stored:
                raise ValueError(f"Stored and computed checksum do not match in chunk {key}")
        if self.compressed:
            data = self._zstd.decode(data)
        if self.strings is not None:
            items = self.strings.decode(data)
            if len(items) != self.size:
                raise ValueError(f"chunk {key} decodes to {len(items)} strings, not the {self.size} of its shape")
            return np.asarray(items, dtype=object).reshape(self.chunk_shape)
        if len(data) != self.dtype.itemsize * self.size:
            raise ValueError(f"chunk {key} decodes to {len(data)} bytes, not the "
                             f"{self.dtype.itemsize * self.size} of its shape")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.chunk_shape)

    def rows(self, rows: NDArray[np.int64], inner: Inner | None = None) -> NDArray[Any]:
        """``zarray[rows]`` (then ``[:, inner]``), each chunk decoded once; rows in any order, repeats allowed."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.zarray.shape[0]):
            raise IndexError(f"rows out of range for an array of {self.zarray.shape[0]}")
        select = (slice(None),) if inner is None else (slice(None), inner)
        shape = np.empty((1, *self.chunk_shape[1:]), dtype=np.int8)[select].shape[1:]
        out = np.empty((len(rows), *shape), dtype=object if self.strings is not None else np.dtype(self.zarray.dtype))
        order = np.argsort(rows, kind="stable")
        chunk_of = rows[order] // self.chunk_shape[0]
        for part in np.split(order, np.flatnonzero(np.diff(chunk_of)) + 1):
            if not len(part):
                continue
            k = int(rows[part[0]] // self.chunk_shape[0])
            out[part] = self.chunk(k)[rows[part] - k * self.chunk_shape[0]][select]
        return out


def read_rows(zarray: Any, rows: NDArray[np.int64], inner: Inner | None = None) -> NDArray[Any]:
    """``zarray``'s ``rows`` (and ``inner`` of the next axis, orthogonally), from the chunk files when
    :meth:`ChunkReader.of` can read them, else through Zarr."""
    reader = ChunkReader.of(zarray)
    if reader is not None:
        return reader.rows(rows, inner)
    selection = (np.asarray(rows, dtype=np.int64),) if inner is None else (np.asarray(rows, dtype=np.int64), inner)
    return np.asarray(zarray.get_orthogonal_selection(selection))


def read_all(zarray: Any) -> NDArray[Any]:
    """The whole array (a per-video table such as ``done``): from the chunk files when possible."""
    reader = ChunkReader.of(zarray)
    if reader is None:
        return np.asarray(zarray[:])
    return reader.rows(np.arange(zarray.shape[0]))
