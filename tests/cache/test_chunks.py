"""Reading rows from chunk files (fsar.cache.chunks) against Zarr's own reads of the same arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from fsar.cache import schema
from fsar.cache.chunks import ChunkReader, finite_rows, read_all, read_rows


def _array(root: Path, name: str, data: np.ndarray, chunk: int, compressors: Any, **kwargs: Any) -> Any:
    group = zarr.open_group(root, mode="a")
    dtype = str if data.dtype.kind == "U" else data.dtype  # strings as the cache stores them: variable length
    zarray = group.create_array(name, shape=data.shape, dtype=dtype, chunks=(chunk, *data.shape[1:]),
                                compressors=compressors, **kwargs)
    zarray[:] = data
    return zarr.open_group(root, mode="r")[name]


CODECS = {"zstd+crc32c": schema.compressors(), "zstd": (ZstdCodec(level=0),), "none": None, "crc32c": (Crc32cCodec(),)}


@pytest.mark.parametrize("codecs", list(CODECS))
def test_rows_equal_zarr_for_every_codec_chain(tmp_path: Path, codecs: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((37, 3, 4, 5)).astype(np.float16)  # 37 = 4 chunks of 10, the last one partial
    zarray = _array(tmp_path / "c.zarr", "features", data, 10, CODECS[codecs], fill_value=0)
    reader = ChunkReader.of(zarray)
    assert reader is not None
    rows = rng.integers(0, 37, size=25)  # unsorted, with repeats
    for inner in (None, 2, np.array([2, 0])):
        selection = (rows,) if inner is None else (rows, inner)
        expected = zarray.get_orthogonal_selection(selection)
        got = reader.rows(rows, inner)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_all(zarray), data)
    assert reader.rows(np.zeros(0, dtype=np.int64), 1).shape == (0, 4, 5)


@pytest.mark.parametrize("dtype", ["bool", "int8", "int32", "float32"])
def test_per_video_tables_equal_zarr(tmp_path: Path, dtype: str) -> None:
    data = (np.random.default_rng(1).standard_normal(53) * 5).astype(dtype)
    zarray = _array(tmp_path / "c.zarr", "table", data, 16, schema.compressors(), fill_value=0)
    assert ChunkReader.of(zarray) is not None
    np.testing.assert_array_equal(read_all(zarray), zarray[:])


@pytest.mark.parametrize("codecs", ["zstd+crc32c", "none"])
def test_strings_equal_zarr(tmp_path: Path, codecs: str) -> None:
    data = np.array([f"class{i % 7}/vídeo {i}" * (i % 3) for i in range(41)], dtype=str)
    zarray = _array(tmp_path / "c.zarr", "ids", data, 16, CODECS[codecs])
    assert ChunkReader.of(zarray) is not None
    rows = np.array([40, 3, 3, 17, 0])
    assert read_rows(zarray, rows).tolist() == zarray.get_orthogonal_selection((rows,)).tolist()
    assert read_all(zarray).tolist() == data.tolist()


def test_a_missing_chunk_reads_as_fill_value_as_in_zarr(tmp_path: Path) -> None:
    data = np.ones((30, 2), dtype=np.float16)
    zarray = _array(tmp_path / "c.zarr", "features", data, 10, schema.compressors(), fill_value=7)
    (tmp_path / "c.zarr" / "features" / "c" / "1" / "0").unlink()
    rows = np.arange(30)
    np.testing.assert_array_equal(read_rows(zarray, rows), zarray[:])
    assert (read_rows(zarray, rows)[10:20] == 7).all()


def test_a_damaged_chunk_is_an_error_not_data(tmp_path: Path) -> None:
    data = np.random.default_rng(2).standard_normal((20, 8)).astype(np.float16)
    zarray = _array(tmp_path / "c.zarr", "features", data, 10, schema.compressors(), fill_value=0)
    chunk = tmp_path / "c.zarr" / "features" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        zarray[10:20]  # Zarr refuses it ...
    with pytest.raises(ValueError, match="checksum"):
        read_rows(zarray, np.array([12]))  # ... and so does the direct read
    np.testing.assert_array_equal(read_rows(zarray, np.array([3])), data[3:4])  # other chunks still read


def test_a_truncated_unchecksummed_chunk_is_an_error(tmp_path: Path) -> None:
    data = np.arange(40, dtype=np.float32).reshape(20, 2)
    zarray = _array(tmp_path / "c.zarr", "features", data, 10, None, fill_value=0)
    chunk = tmp_path / "c.zarr" / "features" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-8])
    with pytest.raises(ValueError, match="decodes to"):
        read_rows(zarray, np.array([1]))
    with pytest.raises(IndexError):
        read_rows(zarray, np.array([20]))


def test_other_layouts_and_stores_go_through_zarr(tmp_path: Path) -> None:
    data = np.random.default_rng(3).standard_normal((12, 6)).astype(np.float32)
    split = _array(tmp_path / "a.zarr", "x", data, 4, None)
    group = zarr.open_group(tmp_path / "b.zarr", mode="a")
    across = group.create_array("x", shape=data.shape, dtype=data.dtype, chunks=(4, 3))  # chunked along axis 1 too
    across[:] = data
    big = zarr.open_group(tmp_path / "d.zarr", mode="a").create_array(
        "x", shape=data.shape, dtype=data.dtype, chunks=(4, 6), serializer=BytesCodec(endian="big"))
    big[:] = data
    memory = zarr.open_group(zarr.storage.MemoryStore(), mode="a").create_array(
        "x", shape=data.shape, dtype=data.dtype, chunks=(4, 6))
    memory[:] = data
    assert ChunkReader.of(split) is not None
    rows = np.array([11, 0, 5])
    for zarray in (across, big, memory):
        assert ChunkReader.of(zarray) is None
        np.testing.assert_array_equal(read_rows(zarray, rows), data[rows])
        np.testing.assert_array_equal(read_all(zarray), data)


def _sharded(root: Path, data: np.ndarray, shard: int, **kwargs: Any) -> Any:
    group = zarr.open_group(root, mode="a")
    zarray = group.create_array("features", shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]),
                                shards=(shard, *data.shape[1:]), compressors=schema.compressors(), **kwargs)
    zarray[:] = data
    return zarr.open_group(root, mode="r")["features"]


def test_sharded_rows_equal_zarr(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = rng.standard_normal((37, 2, 3, 4)).astype(np.float16)
    data[12] = 0  # an inner chunk of fill values: the shard may leave it out
    with zarr.config.set({"array.write_empty_chunks": False}):
        zarray = _sharded(tmp_path / "c.zarr", data, 10, fill_value=0)
    reader = ChunkReader.of(zarray)
    assert reader is not None and reader.sharded
    rows = rng.integers(0, 37, size=30)
    for inner in (None, 1, np.array([1, 0])):
        selection = (rows,) if inner is None else (rows, inner)
        np.testing.assert_array_equal(reader.rows(rows, inner), zarray.get_orthogonal_selection(selection))
    np.testing.assert_array_equal(read_all(zarray), data)


def test_a_damaged_inner_chunk_is_an_error_its_neighbours_still_read(tmp_path: Path) -> None:
    data = np.random.default_rng(5).standard_normal((20, 8)).astype(np.float16)
    zarray = _sharded(tmp_path / "c.zarr", data, 10, fill_value=0)
    shard = tmp_path / "c.zarr" / "features" / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    raw[3] ^= 0xFF  # inside the first inner chunk written (row 10)
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        zarray[10:20]
    with pytest.raises(ValueError, match="checksum"):
        read_rows(zarray, np.array([10]))
    np.testing.assert_array_equal(read_rows(zarray, np.array([15, 3])), data[[15, 3]])


def test_a_damaged_shard_index_is_an_error(tmp_path: Path) -> None:
    data = np.ones((20, 8), dtype=np.float16)
    zarray = _sharded(tmp_path / "c.zarr", data, 10, fill_value=0)
    shard = tmp_path / "c.zarr" / "features" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="index"):
        read_rows(zarray, np.array([1]))
    shard.write_bytes(bytes(raw[:30]))
    with pytest.raises(ValueError, match="shorter"):
        read_rows(zarray, np.array([1]))
    (tmp_path / "c.zarr" / "features" / "c" / "1" / "0").unlink()  # a lost shard reads as fill values, as in Zarr
    np.testing.assert_array_equal(read_rows(zarray, np.array([12])), np.zeros((1, 8)))


def test_an_index_pointing_past_the_data_is_an_error(tmp_path: Path) -> None:
    import struct

    import google_crc32c

    data = np.ones((10, 8), dtype=np.float16)
    zarray = _sharded(tmp_path / "c.zarr", data, 10, fill_value=0)
    shard = tmp_path / "c.zarr" / "features" / "c" / "0" / "0"
    raw = shard.read_bytes()
    index = bytearray(raw[-(16 * 10 + 4):-4])
    offset, length = struct.unpack_from("<QQ", index, 16 * 3)
    struct.pack_into("<QQ", index, 16 * 3, offset + len(raw), length)  # a valid index (its CRC recomputed) ...
    data_end = len(raw) - (16 * 10 + 4)
    shard.write_bytes(raw[:data_end] + bytes(index) + google_crc32c.value(bytes(index)).to_bytes(4, "little"))
    with pytest.raises(ValueError, match="inner chunk 3 lies outside the file"):  # ... whose entry lies past the data
        read_rows(zarray, np.array([3]))
    np.testing.assert_array_equal(read_rows(zarray, np.array([4])), data[[4]])


def test_a_truncated_zstd_chunk_without_checksum_is_an_error(tmp_path: Path) -> None:
    data = np.random.default_rng(6).standard_normal((20, 8)).astype(np.float16)
    zarray = _array(tmp_path / "c.zarr", "features", data, 10, CODECS["zstd"], fill_value=0)
    chunk = tmp_path / "c.zarr" / "features" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-20])
    with pytest.raises((RuntimeError, ValueError)):
        zarray[10:20]  # Zarr refuses it ...
    with pytest.raises(RuntimeError, match="does not decode as Zstandard"):
        read_rows(zarray, np.array([12]))  # ... and so does the direct read
    np.testing.assert_array_equal(read_rows(zarray, np.array([3])), data[3:4])


def test_a_kept_reader_reads_each_shard_index_once_and_again_when_the_shard_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from fsar.cache import chunks

    rng = np.random.default_rng(7)
    data = rng.standard_normal((30, 8)).astype(np.float16)
    zarray = _sharded(tmp_path / "c.zarr", data, 10, fill_value=0)
    reader = ChunkReader.of(zarray)
    assert reader is not None
    preads: list[int] = []
    pread = os.pread

    def counted(fd: int, n: int, offset: int) -> bytes:
        preads.append(n)
        return pread(fd, n, offset)

    monkeypatch.setattr(chunks.os, "pread", counted)
    rows = np.array([1, 12, 25, 3])
    np.testing.assert_array_equal(reader.rows(rows), data[rows])
    assert len(preads) == 3 + 4  # 3 shard indexes, 4 pieces
    preads.clear()
    np.testing.assert_array_equal(reader.rows(rows[::-1]), data[rows[::-1]])
    assert len(preads) == 4  # the indexes are kept
    # The second shard rewritten with other values (its pieces may move): read from its new index.
    data[10:20] = rng.standard_normal((10, 8)).astype(np.float16)
    zarr.open_group(tmp_path / "c.zarr", mode="a")["features"][10:20] = data[10:20]
    preads.clear()
    np.testing.assert_array_equal(reader.rows(rows), data[rows])
    assert len(preads) == 1 + 4


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_finite_rows_equal_isfinite(dtype: str) -> None:
    rng = np.random.default_rng(8)
    block = rng.standard_normal((40, 3, 5)).astype(dtype)
    finfo = np.finfo(dtype)
    specials = [np.inf, -np.inf, np.nan, -np.nan, finfo.max, finfo.min, finfo.tiny / 4, -0.0, finfo.smallest_normal]
    for row, value in zip(range(0, 40, 4), specials, strict=False):
        block[row, rng.integers(3), rng.integers(5)] = value
    expected = np.isfinite(block.reshape(40, -1)).all(axis=1)
    assert not expected.all() and expected.any()
    np.testing.assert_array_equal(finite_rows(block), expected)
    assert finite_rows(block[:0]).shape == (0,)
