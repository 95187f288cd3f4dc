"""Whole shards of local files read in pieces (``piece_bytes``): same values as zarr's default
pipeline, every read at most one piece (plus one chunk), bad shards refused by key."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zkernels.pipeline as zp
from zkernels._localio import LocalFile
from zkernels.errors import ChecksumError, CorruptChunkError, ZKernelsError

from .conftest import (
    DEFAULT,
    LOCAL_COMPRESSORS,
    LOCAL_LAYOUTS,
    create_local_sharded,
    read_local,
)


@pytest.fixture
def spy(monkeypatch):
    """Counts the pieces reads and records the size of every local file read."""
    calls = {"pieces": 0, "reads": []}
    real_pieces, real_read = zp._ShardRead._read_pieces, LocalFile.read

    def pieces(self, get):
        calls["pieces"] += 1
        return real_pieces(self, get)

    def read(self, byte_range=None):
        data = real_read(self, byte_range)
        calls["reads"].append(0 if data is None else data.size)
        return data

    monkeypatch.setattr(zp._ShardRead, "_read_pieces", pieces)
    monkeypatch.setattr(LocalFile, "read", read)
    return calls


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    data = (rng.integers(0, 50, size=shape) // 2).astype(dtype)
    if data.ndim == 2:  # whole empty chunks: they must read as the fill value
        data[: shape[0] // 3, : shape[1] // 2] = 3
    return data


@pytest.mark.parametrize("comp", list(LOCAL_COMPRESSORS))
@pytest.mark.parametrize("endian,index_location", [("little", "end"), ("big", "start")])
@pytest.mark.parametrize("piece", [1, 200, 1500, 1 << 20])
def test_pieces_read_what_zarr_reads(tmp_path, spy, comp, endian, index_location, piece):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (40, 36), (20, 18), (4, 6), "<u2", comp, endian=endian,
                  index_location=index_location)
    data = _data((40, 36), "<u2", 1)
    arr[:] = data
    got = read_local(path, piece_bytes=piece, inline_bytes=0)
    np.testing.assert_array_equal(got, data)
    shard_nbytes = 20 * 18 * 2
    if piece < shard_nbytes:
        assert spy["pieces"] == 4  # every shard in pieces
        chunk = 4 * 6 * 2 + 64  # the largest stored chunk (blosc adds a header)
        index = 15 * 16 + 4
        assert max(spy["reads"]) <= max(piece, chunk, index)
    else:
        assert spy["pieces"] == 0  # a shard within one piece: read whole


def test_pieces_off(tmp_path, spy):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (40, 36), (20, 18), (4, 6), "<u2", "zstd")
    arr[:] = _data((40, 36), "<u2", 2)
    np.testing.assert_array_equal(read_local(path, piece_bytes=0), arr[:])
    assert spy["pieces"] == 0


def test_pieces_missing_shard_and_partial_reads(tmp_path, spy):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (40, 36), (20, 18), (4, 6), "<u2", "zstd")
    data = _data((40, 36), "<u2", 3)
    arr[:20, :] = data[:20, :]  # the second row of shards is never written
    want = np.where(np.arange(40)[:, None] < 20, data, 3).astype("<u2")
    np.testing.assert_array_equal(read_local(path, piece_bytes=64, inline_bytes=0), want)
    assert spy["pieces"] == 4  # the two missing shards are found missing by their index read
    # a box inside one shard is not a whole shard: coalesced ranges as before
    np.testing.assert_array_equal(read_local(path, (slice(1, 7), slice(2, 9)), piece_bytes=64),
                                  want[1:7, 2:9])
    assert spy["pieces"] == 4


def _shard_file(path):
    return path / "c" / "0" / "0"


def test_pieces_truncated_shard_names_the_key(tmp_path):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (20, 18), (20, 18), (4, 6), "<u2", "zstd", index_location="start")
    arr[:] = _data((20, 18), "<u2", 4)
    f = _shard_file(path)
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CorruptChunkError, match=r"c/0/0.*past the end of the shard"):
        read_local(path, piece_bytes=100)


def test_pieces_checksum_mismatch_names_the_key(tmp_path):
    path = tmp_path / "a.zarr"
    arr = create_local_sharded(path, (20, 18), (20, 18), (4, 6), "<u2", "crc32c+zstd")
    arr[:] = _data((20, 18), "<u2", 5)
    f = _shard_file(path)
    raw = bytearray(f.read_bytes())
    raw[40] ^= 0x55  # inside the first chunks, far from the index at the end
    f.write_bytes(bytes(raw))
    with pytest.raises(ZKernelsError, match=r"c/0/0") as info:
        read_local(path, piece_bytes=100)
    assert isinstance(info.value, (ChecksumError, CorruptChunkError))


@given(
    data=st.data(),
    **LOCAL_LAYOUTS,
)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_hypothesis_pieces_vs_default(tmp_path_factory, data, comp, dtype, endian,
                                      index_location, wec):
    inner = (data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)))
    per = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    shard = (inner[0] * per[0], inner[1] * per[1])
    shape = (data.draw(st.integers(1, 2 * shard[0] + 1)), data.draw(st.integers(1, 2 * shard[1] + 1)))
    path = tmp_path_factory.mktemp("p") / "a.zarr"
    arr = create_local_sharded(path, shape, shard, inner, dtype, comp, endian=endian,
                  index_location=index_location, wec=wec)
    arr[:] = _data(shape, dtype, data.draw(st.integers(0, 99)))
    # a partial overwrite with zarr's pipeline: shards whose chunks are no longer in order
    r0 = data.draw(st.integers(0, shape[0] - 1))
    arr[r0:, : shape[1] // 2 + 1] = 3
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        want = zarr.open_array(zarr.storage.LocalStore(path), mode="r")[:]
    piece = data.draw(st.sampled_from([1, 9, 50, 300]))
    got = read_local(path, piece_bytes=piece, inline_bytes=data.draw(st.sampled_from([0, 1 << 18])))
    np.testing.assert_array_equal(got, want)


def test_read_into_reused_buffer(tmp_path):
    """LocalFile.read_into fills the caller's buffer (the piece buffer each thread reuses) and
    returns only what the file holds past ``start``."""
    import numpy as np

    from zkernels._localio import LocalFile

    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8)
    path = tmp_path / "f"
    path.write_bytes(data.tobytes())
    f = LocalFile.open(str(path))
    try:
        buf = np.zeros(4096, np.uint8)
        got = f.read_into(100, buf)
        assert np.shares_memory(got, buf) and np.array_equal(got, data[100:4196])
        got = f.read_into(8000, buf)  # past the end: the 2,000 bytes there are
        assert got.size == 2000 and np.array_equal(got, data[8000:])
        assert f.read_into(20_000, buf).size == 0
    finally:
        f.close()


def test_piece_buffer_reused_and_bounded():
    from zkernels.pipeline import _piece_buffer

    a = _piece_buffer(1000, 4096)
    assert a is not None and a.size >= 4096
    assert _piece_buffer(3000, 4096) is a  # reused, not reallocated
    assert _piece_buffer(9000, 4096) is None  # oversized: a buffer of its own
