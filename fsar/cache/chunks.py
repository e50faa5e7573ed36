"""Rows of a cache's arrays read straight from the chunk files of a local store.

Every array of a cache is chunked along its first axis (videos) only. Its chunks are encoded as little-endian
bytes (variable-length UTF-8 for strings), then (new caches) Zstandard and a CRC-32C of the result
(:func:`schema.compressors`); the feature arrays of new caches are sharded: a file holds ``chunk_videos``
videos, each video an inner chunk of its own, so one video is read without decoding its neighbours.
Zarr schedules each chunk of a read as tasks of its event loop and thread pool, about half a millisecond per
chunk whatever its size: an SSv2-full-sized cache has 4,488 files per array, so reading the per-video ``done``
flags, or one video from each of a few hundred files (a window of training episodes), costs far more in
scheduling than in decoding, and competes with the training step for the cores. For such arrays in a local
store, :func:`read_rows` reads the files itself, with the same checks (the stored CRC-32Cs, the decoded sizes)
and the same codec (decoded by ``zstandard`` with one reused context: numcodecs sets one up for every call,
which for a 4 KB video cost three times the decoding), in the calling thread; any other array or store is
read through Zarr. Either way a chunk that is not in the store reads as the array's fill value, as Zarr reads
it: callers that must not accept that check :meth:`FeatureCache.missing_chunks` first.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# One selection on the axes after the first: an index (that axis is dropped) or indices (kept), e.g. a view.
Inner = int | NDArray[np.int64]
EMPTY = 2**64 - 1  # offset and length of an inner chunk that a shard does not hold (read as fill values)


@dataclass(frozen=True)
class Chain:
    """A chain of codecs this module decodes: bytes or strings, then optionally Zstandard and a CRC-32C."""

    strings: bool
    compressed: bool
    checksummed: bool

    @classmethod
    def of(cls, codecs: Any, dtype: Any) -> Chain | None:
        from zarr.codecs import Crc32cCodec, VLenUTF8Codec, ZstdCodec

        codecs = list(codecs)
        strings = bool(codecs) and isinstance(codecs[0], VLenUTF8Codec)
        numbers = bool(codecs) and _little_bytes(codecs[0]) and np.dtype(dtype).kind in "biuf"
        if not (strings or numbers):
            return None
        rest = codecs[1:]
        compressed = bool(rest) and isinstance(rest[0], ZstdCodec) and not rest[0].checksum
        rest = rest[1:] if compressed else rest
        checksummed = bool(rest) and isinstance(rest[0], Crc32cCodec)
        return None if rest[1 if checksummed else 0:] else cls(strings, compressed, checksummed)


def _little_bytes(codec: Any) -> bool:
    """Whether ``codec`` is Zarr's bytes codec writing little-endian (or single-byte) values."""
    from zarr.codecs import BytesCodec

    return isinstance(codec, BytesCodec) and str(getattr(codec.endian, "value", "little")) == "little"


def _checked(data: bytes, where: str) -> bytes:
    """``data`` less its trailing CRC-32C, after checking it (the error Zarr raises when it does not hold)."""
    import google_crc32c

    data, stored = data[:-4], data[-4:]
    if google_crc32c.value(data).to_bytes(4, "little") != stored:
        raise ValueError(f"Stored and computed checksum do not match in {where}")
    return data


class ChunkReader:
    """Whole chunks of one array (chunked along axis 0 only) decoded from its files in a local store.

    ``block``: rows per file; ``piece``: rows per encoded piece (an inner chunk of a shard, or the whole file).
    """

    def __init__(self, zarray: Any, folder: Path, chain: Chain, block: int, piece: int) -> None:
        import zstandard
        from numcodecs import VLenUTF8

        self.zarray, self.folder, self.chain = zarray, folder, chain
        self.block, self.piece = block, piece
        self.sharded = piece != block
        self.piece_shape: tuple[int, ...] = (piece, *zarray.shape[1:])
        self.size = int(np.prod(self.piece_shape))
        # Strings decode to Python str objects; numbers to their little-endian dtype.
        self.strings: Any = VLenUTF8() if chain.strings else None
        self.dtype = np.dtype(object) if chain.strings else np.dtype(zarray.dtype).newbyteorder("<")
        self.fill_value = zarray.metadata.fill_value
        self._zstd = zstandard.ZstdDecompressor()  # not thread-safe: a reader is used by one thread at a time
        self._zstd_error = zstandard.ZstdError
        # Each shard's checked index and where its data ends, with the file's (inode, size, mtime) when read: a
        # reader kept across reads (a training run's) reads the index of a shard again only when the file changed.
        self.indexes: dict[int, tuple[tuple[int, int, int], bytes, int]] = {}

    @classmethod
    def of(cls, zarray: Any) -> ChunkReader | None:
        """A reader for ``zarray``, or None when it is not one this module decodes (then read through Zarr)."""
        from zarr.codecs import Crc32cCodec, ShardingCodec
        from zarr.storage import LocalStore

        metadata = zarray.metadata
        if getattr(metadata, "zarr_format", None) != 3 or not isinstance(zarray.store, LocalStore):
            return None
        outer = tuple(metadata.chunk_grid.chunk_shape)
        if any(c < s for c, s in zip(outer[1:], zarray.shape[1:], strict=True)):
            return None
        codecs = list(metadata.codecs)
        folder = Path(zarray.store.root) / zarray.path
        if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
            shard = codecs[0]
            inner = tuple(shard.chunk_shape)
            index = list(shard.index_codecs)
            plain_index = len(index) == 2 and _little_bytes(index[0]) and isinstance(index[1], Crc32cCodec)
            if str(getattr(shard.index_location, "value", shard.index_location)) != "end" or not plain_index \
                    or tuple(inner[1:]) != outer[1:] or outer[0] % inner[0]:
                return None
            chain = Chain.of(shard.codecs, zarray.dtype)
            return None if chain is None else cls(zarray, folder, chain, outer[0], inner[0])
        chain = Chain.of(codecs, zarray.dtype)
        return None if chain is None else cls(zarray, folder, chain, outer[0], outer[0])

    def _decode(self, data: bytes, where: str) -> NDArray[Any]:
        if self.chain.checksummed:
            data = _checked(data, where)
        if self.chain.compressed:
            bound = 0 if self.strings is not None else self.dtype.itemsize * self.size  # strings: not known up front
            try:
                data = self._zstd.decompress(data, max_output_size=bound)
            except self._zstd_error as err:
                raise RuntimeError(f"{where} does not decode as Zstandard: {err}") from err
        if self.strings is not None:
            items = self.strings.decode(data)
            if len(items) != self.size:
                raise ValueError(f"{where} decodes to {len(items)} strings, not the {self.size} of its shape")
            return np.asarray(items, dtype=object).reshape(self.piece_shape)
        if len(data) != self.dtype.itemsize * self.size:
            raise ValueError(f"{where} decodes to {len(data)} bytes, not the {self.dtype.itemsize * self.size} of "
                             f"its shape")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.piece_shape)

    def _fill(self) -> NDArray[Any]:
        return np.full(self.piece_shape, self.fill_value, dtype=self.dtype)

    def rows(self, rows: NDArray[np.int64], inner: Inner | None = None) -> NDArray[Any]:
        """``zarray[rows]`` (then ``[:, inner]``), each piece decoded once; rows in any order, repeats allowed.

        ValueError or RuntimeError when a piece's bytes fail a checksum or do not decode, as Zarr raises them.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.zarray.shape[0]):
            raise IndexError(f"rows out of range for an array of {self.zarray.shape[0]}")
        select = (slice(None),) if inner is None else (slice(None), inner)
        shape = np.empty((1, *self.piece_shape[1:]), dtype=np.int8)[select].shape[1:]
        out = np.empty((len(rows), *shape), dtype=object if self.strings is not None else np.dtype(self.zarray.dtype))
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        cuts = (np.flatnonzero(np.diff(ordered // self.piece)) + 1).tolist()
        firsts, targets = ordered.tolist(), order.tolist()  # Python ints: a piece of one row is the common case
        file: _File | None = None
        try:
            for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True):
                if a == b:
                    continue
                first = firsts[a]
                if file is None or file.k != first // self.block:
                    if file is not None:
                        file.close()
                    file = _File(self, first // self.block)
                j = first % self.block // self.piece
                base = file.k * self.block + j * self.piece
                decoded = file.piece(j)
                if b - a == 1:  # plain indexing, several times faster than the fancy indexing below
                    out[targets[a]] = decoded[first - base] if inner is None else decoded[first - base][inner]
                else:
                    out[order[a:b]] = decoded[ordered[a:b] - base][select]
        finally:
            if file is not None:
                file.close()
        return out


class _File:
    """One chunk file of a :class:`ChunkReader`'s array, open while its pieces are read."""

    def __init__(self, reader: ChunkReader, k: int) -> None:
        self.reader, self.k = reader, k
        self.key = reader.zarray.metadata.encode_chunk_key((k,) + (0,) * (len(reader.piece_shape) - 1))
        try:
            self.fd: int | None = os.open(f"{reader.folder}/{self.key}", os.O_RDONLY)
        except FileNotFoundError:
            self.fd = None
        self.index: bytes | None = None
        self.data_end = 0

    def piece(self, j: int) -> NDArray[Any]:
        """Piece ``j`` of the file, decoded (fill values when the file or, in a shard, the piece is absent)."""
        r = self.reader
        if self.fd is None:
            return r._fill()
        if not r.sharded:
            return r._decode(os.pread(self.fd, os.fstat(self.fd).st_size, 0), f"chunk {self.key}")
        if self.index is None:
            self.index = self._read_index(self.fd)
        offset, length = struct.unpack_from("<QQ", self.index, 16 * j)
        if offset == EMPTY and length == EMPTY:
            return r._fill()
        if offset + length > self.data_end:
            raise ValueError(f"shard {self.key}: inner chunk {j} lies outside the file")
        return r._decode(os.pread(self.fd, length, offset), f"inner chunk {j} of shard {self.key}")

    def _read_index(self, fd: int) -> bytes:
        """The shard's index, checked (the reader's copy while the file is unchanged); sets :attr:`data_end`."""
        r, stat = self.reader, os.fstat(fd)
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        known = r.indexes.get(self.k)
        if known is not None and known[0] == version:
            _, index, self.data_end = known
            return index
        n = r.block // r.piece
        self.data_end = stat.st_size - (16 * n + 4)
        if self.data_end < 0:
            raise ValueError(f"shard {self.key} is shorter ({stat.st_size} bytes) than its index")
        index = _checked(os.pread(fd, 16 * n + 4, self.data_end), f"the index of shard {self.key}")
        r.indexes[self.k] = (version, index, self.data_end)
        return index

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def finite_rows(block: NDArray[Any]) -> NDArray[np.bool_]:
    """Whether each row (first axis) of ``block`` holds only finite values. float16 is tested on its exponent
    bits (all ones: inf or NaN), ten times faster than ``np.isfinite``, which converts each value."""
    flat = block.reshape(len(block), math.prod(block.shape[1:]))  # not -1: no rows is a valid block
    if flat.dtype == np.float16:
        return ((flat.view(np.uint16) & 0x7C00) != 0x7C00).all(axis=1)
    return np.isfinite(flat).all(axis=1)


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
