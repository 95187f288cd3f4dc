"""zkernels.reader: ChunkReader, iter_chunks, read_region and the functional chunk API, checked
against zarr's default pipeline on the same stores."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodecIndexLocation,
    TransposeCodec,
    ZstdCodec,
)
from zarr.core.sync import sync
from zarr.storage import WrapperStore

import zkernels
import zkernels.reader as zr
from zkernels._localio import read_file
from zkernels.errors import (
    ChecksumError,
    CorruptChunkError,
    ShardIndexError,
    ZKernelsError,
)
from zkernels.reader import ChunkReader, ReaderClosedError, read_chunk, write_chunk

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
SHAPE, CHUNKS, SHARDS = (23, 37), (5, 8), (10, 16)

# name -> create_array keyword arguments (shape, chunks given separately)
CASES: dict[str, dict] = {
    "v3-none": {"dtype": "u2", "compressors": None},
    "v3-zstd": {"dtype": "i4", "compressors": [ZstdCodec(level=1)], "fill_value": 7},
    "v3-blosc": {"dtype": "f8", "compressors": [BloscCodec()], "fill_value": np.nan},
    "v3-gzip": {"dtype": "u1", "compressors": [GzipCodec(level=1)]},
    "v3-crc32c": {"dtype": "u2", "compressors": [Crc32cCodec()]},
    "v3-transpose": {"dtype": "i2", "filters": [TransposeCodec(order=(1, 0))]},
    "v3-bigendian": {
        "dtype": ">i4",
        "serializer": BytesCodec(endian="big"),
        "compressors": None,
    },
    "v3-sharded-end": {
        "dtype": "u2",
        "shards": SHARDS,
        "compressors": [ZstdCodec(level=1)],
    },
    "v3-sharded-start": {
        "dtype": "i8",
        "shards": {"shape": SHARDS, "index_location": ShardingCodecIndexLocation.start},
        "compressors": None,
        "fill_value": -1,
    },
    "v3-sharded-crc32c": {
        "dtype": "f4",
        "shards": SHARDS,
        "compressors": [Crc32cCodec()],
    },
    "v3-sharded-bigendian": {
        "dtype": ">u2",
        "shards": SHARDS,
        "serializer": BytesCodec(endian="big"),
        "compressors": None,
    },
    "v3-sharded-blosc": {
        "dtype": "u2",
        "shards": SHARDS,
        "compressors": [BloscCodec()],
    },
    "v2-none": {"dtype": "u2", "zarr_format": 2, "compressors": None},
    "v2-zstd": {
        "dtype": "i4",
        "zarr_format": 2,
        "compressors": numcodecs.Zstd(level=1),
        "fill_value": 3,
    },
    "v2-blosc": {"dtype": "f4", "zarr_format": 2, "compressors": numcodecs.Blosc()},
    "v2-gzip": {
        "dtype": "u2",
        "zarr_format": 2,
        "compressors": numcodecs.GZip(level=1),
    },
    "v2-F": {"dtype": "u2", "zarr_format": 2, "order": "F"},
    "v2-bigendian": {"dtype": ">u4", "zarr_format": 2},
    "v2-struct": {"dtype": [("a", "<i2"), ("b", "<f4")], "zarr_format": 2},
    "v2-slash": {
        "dtype": "u2",
        "zarr_format": 2,
        "chunk_key_encoding": {"name": "v2", "separator": "/"},
    },
}
STORES = ["memory", "local", "fsspec"]


@pytest.fixture(autouse=True)
def _fixed_gzip_mtime(monkeypatch):
    """numcodecs' GZip stamps the time into each chunk: pin it so stored bytes compare."""
    import gzip
    import types

    monkeypatch.setattr(gzip, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))


def make_store(kind: str, tmp_path, name: str = "a"):
    if kind == "memory":
        return zarr.storage.MemoryStore()
    if kind == "local":
        return zarr.storage.LocalStore(tmp_path / f"{name}.zarr")
    if kind == "fsspec":
        return zarr.storage.FsspecStore.from_url(f"memory://{uuid.uuid4().hex}/{name}")
    raise ValueError(kind)


def random_data(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.names:
        out = np.zeros(shape, dtype=dtype)
        for name in dtype.names:
            out[name] = rng.integers(0, 100, size=shape)
        return out
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    native = dtype.newbyteorder("=")
    values = rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, dtype=native)
    return values.astype(dtype)


def create(store, case: str, *, name="arr", shape=SHAPE, chunks=CHUNKS, fill=True, seed=0):
    """An array written through zarr's default pipeline, with missing chunks (and shards)."""
    kw = dict(CASES[case])
    if "shards" in kw and chunks != CHUNKS:
        shards = tuple(2 * c for c in chunks)
        if isinstance(kw["shards"], dict):
            shards = {**kw["shards"], "shape": shards}
        kw["shards"] = shards
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        arr = zarr.create_array(store, name=name, shape=shape, chunks=chunks, overwrite=True, **kw)
        arr[...] = random_data(shape, arr.dtype, seed)
        if fill:
            fv = arr.fill_value
            # a missing chunk, and a missing shard when sharded
            arr[tuple(slice(0, c) for c in chunks)] = fv
            if arr.shards is not None:
                arr[tuple(slice(s, 2 * s) for s in arr.shards)] = fv
    return arr


def reference(arr) -> zarr.Array:
    """The same array reopened with zarr's default pipeline (its metadata as stored: a v3
    big-endian array reopens with a native dtype, while the array object that created it
    keeps the big-endian one; ChunkReader follows the array object it is given)."""
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        return zarr.open_array(arr.store_path.store, path=arr.path, mode="r")


def assert_same(ref, got, label=None) -> None:
    ref_a, got_a = np.asarray(ref), np.asarray(got)
    assert np.isscalar(ref) == np.isscalar(got), (label, type(ref), type(got))
    assert ref_a.dtype == got_a.dtype, (label, ref_a.dtype, got_a.dtype)
    assert ref_a.shape == got_a.shape, (label, ref_a.shape, got_a.shape)
    assert ref_a.tobytes() == got_a.tobytes(), label


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("zkernels-reader")]


def wait_no_reader_threads(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while reader_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reader_threads() == []


class SlowStore(WrapperStore):
    """An async-only store with latency on ``get``, counting requests."""

    def __init__(self, store, latency: float = 0.02) -> None:
        super().__init__(store)
        self.latency = latency
        self.gets = 0

    def _with_store(self, store):
        return type(self)(store, self.latency)

    async def get(self, key, prototype, byte_range=None):
        self.gets += 1
        await asyncio.sleep(self.latency)
        return await self._store.get(key, prototype, byte_range)


# ---------------------------------------------------------------------------------------------
# parity


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("case", list(CASES))
def test_every_chunk_and_shard_matches_zarr(case, kind, tmp_path):
    arr = create(make_store(kind, tmp_path), case)
    ref = arr
    with ChunkReader(arr) as r:
        assert r.accelerated, r.fallback_reason
        assert r.chunks == ref.chunks and r.chunk_grid_shape == ref.cdata_shape
        for c in itertools.product(*(range(n) for n in r.chunk_grid_shape)):
            got = r.read_chunk(c)
            assert got.flags.writeable
            assert got.flags.f_contiguous if ref.order == "F" else got.flags.c_contiguous
            assert_same(ref[r.chunk_region(c)], got, (case, kind, c))
        for c in itertools.product(*(range(n) for n in r.shard_grid_shape)):
            assert_same(ref.blocks[c], r.read_shard(c), (case, kind, "shard", c))
            assert_same(ref[r.shard_region(c)], r.read_shard(c), (case, kind, "shard", c))
        streamed = dict(r.iter_chunks())
        assert len(streamed) == prod(r.chunk_grid_shape)
        whole = np.empty(ref.shape, dtype=ref.dtype)
        for c, chunk in streamed.items():
            whole[r.chunk_region(c)] = chunk
        assert_same(ref[...], whole, (case, kind, "iter"))
        assert_same(ref[...], r.read_region(...), (case, kind, "region"))


def prod(shape):
    out = 1
    for n in shape:
        out *= n
    return out


@pytest.mark.parametrize("case", ["v3-sharded-end", "v3-zstd", "v2-F"])
def test_three_dimensions_and_negative_coords(case, tmp_path):
    arr = create(zarr.storage.MemoryStore(), case, shape=(9, 10, 11), chunks=(2, 3, 4))
    ref = arr
    with ChunkReader(arr, io_concurrency=3, decode_threads=1) as r:
        for c in itertools.product(*(range(n) for n in r.chunk_grid_shape)):
            assert_same(ref[r.chunk_region(c)], r.read_chunk(c), c)
        assert_same(ref[r.chunk_region((-1, -1, -1))], r.read_chunk((-1, -1, -1)))
        assert_same(ref.blocks[-1, 0, -1], r.read_shard((-1, 0, -1)))
        assert_same(ref[1:8, 2:9:2, 3], r.read_region((slice(1, 8), slice(2, 9, 2), 3)))


def test_one_dimension_and_scalar_box():
    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end", shape=(50,), chunks=(4,))
    ref = arr
    with ChunkReader(arr) as r:
        for c in range(r.chunk_grid_shape[0]):
            assert_same(ref[r.chunk_region(c)], r.read_chunk(c), c)
        assert_same(ref[17], r.read_region(17))
        assert_same(ref[-1], r.read_region(-1))
        assert_same(ref[3:3], r.read_region(slice(3, 3)))


def test_zero_dimensional():
    store = zarr.storage.MemoryStore()
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        arr = zarr.create_array(store, shape=(), dtype="f8", compressors=None)
        arr[()] = 2.5
    with ChunkReader(arr) as r:
        assert_same(arr[()], r.read_region(()))
        chunk = r.read_chunk(())  # read_chunk always returns an ndarray, 0-d here
        assert isinstance(chunk, np.ndarray) and chunk.shape == () and chunk[()] == 2.5


def test_v3_structured_dtype(tmp_path):
    # (unsharded: zarr 3.1.6 cannot write a sharded structured array, its fill value is a
    # void scalar, unhashable in the sharding codec's cache)
    store = zarr.storage.MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        with zarr.config.set({"codec_pipeline.path": DEFAULT}):
            arr = zarr.create_array(
                store,
                shape=SHAPE,
                chunks=CHUNKS,
                dtype=[("a", "<i2"), ("b", "<f4")],
            )
            arr[...] = random_data(SHAPE, arr.dtype)
    with ChunkReader(arr) as r:
        for c in itertools.product(*(range(n) for n in r.chunk_grid_shape)):
            assert_same(arr[r.chunk_region(c)], r.read_chunk(c), c)


def test_unsupported_codecs_fall_back_to_zarr(tmp_path):
    store = zarr.storage.MemoryStore()
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        arr = zarr.create_array(store, name="s", shape=(7, 5), chunks=(3, 2), dtype=str)
        arr[...] = np.array([[f"{i}-{j}" for j in range(5)] for i in range(7)])
    with ChunkReader(arr) as r:
        assert not r.accelerated and r.fallback_reason
        for c, chunk in r.iter_chunks():
            assert_same(arr[r.chunk_region(c)], chunk, c)
            assert_same(arr[r.chunk_region(c)], r.read_chunk(c), c)
        assert_same(arr[1:6, 1], r.read_region((slice(1, 6), 1)))
    assert_same(arr[3:6, 2:4], read_chunk(store, "s", (1, 1)))
    write_chunk(store, "s", (1, 1), np.array([["x", "y"]] * 3))
    assert arr[3, 2] == "x"


# ---------------------------------------------------------------------------------------------
# iter_chunks


def test_iter_chunks_order_duplicates_and_budget():
    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end")
    ref = arr
    grid = ChunkReader(arr).chunk_grid_shape
    rng = np.random.default_rng(1)
    coords = [tuple(int(rng.integers(0, g)) for g in grid) for _ in range(60)]
    coords += coords[:5]
    with ChunkReader(arr) as r:
        for budget in (0, 1, 3000, 64 << 20):
            got = list(r.iter_chunks(iter(coords), readahead_bytes=budget))
            assert [c for c, _ in got] == coords
            for c, chunk in got:
                assert_same(ref[r.chunk_region(c)], chunk, (budget, c))
        # lists, numpy ints and negative coordinates are normalised
        ((c, chunk),) = r.iter_chunks([np.array([-1, -1])])
        assert c == tuple(n - 1 for n in grid)


def test_iter_chunks_bad_coords_raise_in_order():
    arr = create(zarr.storage.MemoryStore(), "v3-zstd")
    with ChunkReader(arr) as r:
        it = r.iter_chunks([(0, 0), (1, 1), (99, 0), (2, 2)])
        assert next(it)[0] == (0, 0)
        assert next(it)[0] == (1, 1)
        with pytest.raises(IndexError, match="out of range"):
            next(it)


@pytest.mark.parametrize("budget", [0, 1 << 20])
def test_iter_chunks_error_of_the_callers_iterable_comes_in_order(budget):
    """An exception raised by the coordinates' iterable itself comes after the chunks it gave
    before it (read ahead or not), as any other error does."""
    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end")

    def coords():
        yield (0, 0)
        yield (1, 1)
        raise KeyError("the caller's iterable failed")

    got = []
    with ChunkReader(arr) as r:
        with pytest.raises(KeyError, match="iterable failed"):
            for c, chunk in r.iter_chunks(coords(), readahead_bytes=budget):
                assert_same(arr[r.chunk_region(c)], chunk, c)
                got.append(c)
    assert got == [(0, 0), (1, 1)]


@pytest.mark.parametrize("kind", ["local", "slow"])
def test_iter_chunks_close_early_cancels(kind, tmp_path):
    base = zarr.storage.LocalStore(tmp_path / "big.zarr")
    arr = create(base, "v3-sharded-end", shape=(160, 160), chunks=(4, 4), fill=False)
    if kind == "slow":  # the same data behind an async-only store with 50 ms per request
        store = SlowStore(base, latency=0.05)
        with zarr.config.set({"codec_pipeline.path": DEFAULT}):
            arr = zarr.open_array(store, path="arr", mode="r")
    ref = arr
    r = ChunkReader(arr, io_concurrency=4)
    it = r.iter_chunks(readahead_bytes=4096)
    c, chunk = next(it)
    assert_same(ref[r.chunk_region(c)], chunk)
    t0 = time.perf_counter()
    it.close()
    assert time.perf_counter() - t0 < 0.5
    if kind == "slow":
        time.sleep(0.2)
        gets = store.gets
        time.sleep(0.2)
        assert store.gets == gets  # nothing more requested after the close
    wait_no_reader_threads()
    # breaking out of a for loop and dropping the iterator do the same
    for i, _ in enumerate(r.iter_chunks(readahead_bytes=1 << 14)):
        if i == 3:
            break
    it = r.iter_chunks()
    next(it)
    del it
    wait_no_reader_threads()
    # the reader is still usable, then closes
    assert_same(ref[r.chunk_region((5, 5))], r.read_chunk((5, 5)))
    r.close()
    wait_no_reader_threads()


def test_reader_closed_mid_stream_and_after(tmp_path):
    base = zarr.storage.MemoryStore()
    create(base, "v3-zstd", shape=(64, 64), chunks=(2, 2), fill=False)
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        # 1024 chunks at 20 ms per request, 8 at a time: the stream lasts 2.5 s unless closed
        arr = zarr.open_array(SlowStore(base, latency=0.02), path="arr", mode="r")
    r = ChunkReader(arr)
    it = r.iter_chunks(readahead_bytes=256)
    next(it)
    threading.Timer(0.05, r.close).start()
    with pytest.raises(ReaderClosedError, match="'/arr'"):  # names the array
        for _ in it:
            pass
    assert r.closed
    for call in (
        lambda: r.read_chunk((0, 0)),
        lambda: r.iter_chunks(),
        lambda: r.read_region(1),
    ):
        with pytest.raises(ReaderClosedError, match="closed"):
            call()
    assert issubclass(ReaderClosedError, ValueError)
    r.close()  # idempotent


@pytest.mark.parametrize("kind", ["slow", "local", "memory"])
def test_reader_closed_mid_region_read(kind, tmp_path):
    """close() from another thread while read_region waits: ReaderClosedError, never a hang
    (cancelled chunk futures must wake ``concurrent.futures.wait``, not only ``result()``)."""
    base = zarr.storage.LocalStore(tmp_path / "r.zarr") if kind == "local" else \
        zarr.storage.MemoryStore()
    arr = create(base, "v3-sharded-end", shape=(400, 400), chunks=(10, 10), fill=False)
    if kind == "slow":  # 16 shards at 20 ms per request
        with zarr.config.set({"codec_pipeline.path": DEFAULT}):
            arr = zarr.open_array(SlowStore(base, latency=0.02), path="arr", mode="r")
    outcomes = []
    for attempt in range(8 if kind == "slow" else 20):
        r = ChunkReader(arr, io_concurrency=2, decode_threads=1)
        result = []

        def read(r=r, result=result) -> None:
            try:
                while True:
                    r.read_region(slice(None))
            except ReaderClosedError:
                result.append("closed")
            except Exception as exc:  # noqa: BLE001 - reported below
                result.append(repr(exc))

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.01 + 0.005 * attempt)
        r.close()
        t.join(10)
        assert not t.is_alive(), f"read_region still waiting 10 s after close (attempt {attempt})"
        outcomes += result
    assert set(outcomes) == {"closed"}, outcomes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_future_lock_is_fresh_in_a_forked_child():
    """A lock a parent thread held at fork time stays held in the child: the reader's lock for
    its chunk futures is made anew there, or the child's first region read would hang."""
    with zr._FUTURE_STATE:  # held (by this thread) while forking
        pid = os.fork()
        if pid == 0:  # the child: exit 0 if the lock can be taken
            os._exit(0 if zr._FUTURE_STATE.acquire(timeout=2) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.parametrize("kind", ["local", "memory"])
def test_locks_and_cache_are_fresh_in_a_forked_child(kind, tmp_path):
    """Locks held by a parent thread at fork time (the reader's index cache, the reader's own,
    the functional layer's plan cache) must not hang the child's read_chunk, read_chunk() or
    close(); the child's index cache starts empty."""
    import signal

    store = make_store(kind, tmp_path)
    arr = create(store, "v3-sharded-end")
    r = ChunkReader(arr)
    want = arr[r.chunk_region((1, 2))]
    assert_same(want, r.read_chunk((1, 2)))
    assert len(r._cache) == 1
    with r._cache._lock, r._lock, zr._PLANS_LOCK:  # held (by this thread) while forking
        pid = os.fork()
        if pid == 0:  # the child: exit 0 if every call finishes with the right data
            signal.alarm(20)  # a hang ends the child (status: killed), never the test run
            try:
                ok = len(r._cache) == 0
                ok = ok and np.array_equal(r.read_chunk((1, 2)), want)
                ok = ok and np.array_equal(read_chunk(store, "arr", (1, 2)), want)
                r.close()
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(r._cache) == 1  # the parent's cache is its own
    r.close()


def corrupt(store_dir, key: str, at: int) -> None:
    path = store_dir / key
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupted_shard_errors_name_array_chunk_and_key(tmp_path):
    root = tmp_path / "c.zarr"
    arr = create(zarr.storage.LocalStore(root), "v3-sharded-end", fill=False)
    corrupt(root, "arr/c/0/1", -6)  # inside the index: checksum mismatch
    with ChunkReader(arr) as r:
        with pytest.raises(ChecksumError) as info:
            r.read_chunk((0, 2))
        assert info.value.key == "arr/c/0/1"
        assert "arr/c/0/1" in str(info.value) and "(0, 2)" in str(info.value)
        assert "/arr" in str(info.value)
        # the stream yields what comes before, then raises the original type
        seen = []
        with pytest.raises(ChecksumError):
            for c, _ in r.iter_chunks([(0, 0), (0, 1), (1, 1), (0, 2), (4, 4)]):
                seen.append(c)
        assert seen == [(0, 0), (0, 1), (1, 1)]
        with pytest.raises(ChecksumError):
            r.read_region((slice(0, 10), slice(0, 37)))
        with pytest.raises(ChecksumError):
            r.read_shard((0, 1))
        assert_same(reference(arr)[10:20, :16], r.read_shard((1, 0)))  # others still read


def test_corrupted_chunk_and_truncated_shard(tmp_path):
    root = tmp_path / "d.zarr"
    arr = create(zarr.storage.LocalStore(root), "v3-zstd", fill=False)
    corrupt(root, "arr/c/1/1", 5)
    sharded = create(zarr.storage.LocalStore(root), "v3-sharded-end", name="s", fill=False)
    (root / "s/c/1/1").write_bytes((root / "s/c/1/1").read_bytes()[:10])  # shorter than its index
    with (
        ChunkReader(arr) as r,
        pytest.raises(CorruptChunkError, match=r"chunk \(1, 1\).*arr/c/1/1"),
    ):
        r.read_chunk((1, 1))
    with ChunkReader(sharded) as r:
        with pytest.raises(ShardIndexError, match="s/c/1/1"):
            r.read_chunk((2, 2))
        with pytest.raises(ShardIndexError, match="s/c/1/1"):
            list(r.iter_chunks())


def test_bad_coordinates():
    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end")
    with ChunkReader(arr) as r:
        with pytest.raises(IndexError, match=r"out of range.*\(5, 5\)"):
            r.read_chunk((5, 0))
        with pytest.raises(IndexError, match="dimension"):
            r.read_chunk((0,))
        with pytest.raises(IndexError):
            r.read_shard((3, 0))
        with pytest.raises(TypeError):
            r.read_chunk(("a", 0))
        with pytest.raises(IndexError):
            r.read_region((slice(None), [1, 2]))
        with pytest.raises(IndexError):
            r.read_region((slice(None, None, -1),))
        with pytest.raises(IndexError):
            r.read_region((23, 0))
        for bad in (True, (True, 0), (0, np.bool_(False))):  # not a chunk number
            with pytest.raises(TypeError, match="tuple of ints"):
                r.read_chunk(bad)


@pytest.mark.parametrize("kw,exc,match", [
    ({"io_concurrency": 0}, ValueError, "io_concurrency must be >= 1"),
    ({"io_concurrency": True}, TypeError, "io_concurrency must be an int"),
    ({"decode_threads": 2.5}, TypeError, "decode_threads must be an int"),
    ({"decode_threads": 0}, ValueError, "decode_threads must be >= 1"),
    ({"index_cache_bytes": "32MiB"}, TypeError, "index_cache_bytes must be an int"),
    ({"index_cache_bytes": -1}, ValueError, "index_cache_bytes must be >= 0"),
    ({"readahead_bytes": True}, TypeError, "readahead_bytes must be an int"),
    ({"readahead_bytes": -1}, ValueError, "readahead_bytes must be >= 0"),
])
def test_bad_reader_arguments(kw, exc, match):
    """Refused when the reader is made, not at its first read."""
    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end")
    with pytest.raises(exc, match=match):
        if "readahead_bytes" in kw:
            with ChunkReader(arr) as r:
                r.iter_chunks(**kw)
        else:
            ChunkReader(arr, **kw)


def test_write_chunk_store_error_names_what_was_written(tmp_path):
    """A store's own error keeps its type, with a note naming the array, chunk and key."""
    store = zarr.storage.LocalStore(tmp_path / "s")
    zarr.create_array(store, name="a", shape=(4,), chunks=(2,), dtype="i4")
    (tmp_path / "s" / "a" / "c" / "0").mkdir(parents=True)  # a folder where the chunk goes
    with pytest.raises(OSError) as info:
        write_chunk(store, "a", 0, np.array([1, 2], "i4"))
    notes = getattr(info.value, "__notes__", [])
    assert any("writing array" in n and "chunk (0,)" in n and "c/0" in n for n in notes), notes


class _FailingGets(zarr.storage.WrapperStore):
    """Gets of chunk keys fail with the store's own error, itself caused by another."""

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in f"/{key}":
            raise OSError(f"connection reset while fetching {key}") from ConnectionError("peer")
        return await self._store.get(key, prototype, byte_range)


@pytest.mark.parametrize("case", ["v3-zstd", "v3-sharded-end"])
def test_store_errors_keep_their_type_and_cause(case):
    """read_chunk, iter_chunks and write_chunk (which reads the shard it rewrites): the store's
    error with its own cause, and a note naming the array, chunk and key."""
    inner = zarr.storage.MemoryStore()
    create(inner, case)
    flaky = _FailingGets(inner)
    arr = zarr.open_array(flaky, path="arr", mode="r")
    ref = zarr.open_array(inner, path="arr", mode="r")
    calls = [
        lambda r: r.read_chunk((1, 1)),
        lambda r: list(r.iter_chunks([(1, 1)])),
        lambda r: write_chunk(flaky, "arr", (1, 1), ref[r.chunk_region((1, 1))] * 0),
    ]
    with ChunkReader(arr) as r:
        for i, call in enumerate(calls):
            if i == 2 and case == "v3-zstd":
                continue  # an unsharded write_chunk reads nothing
            with pytest.raises(OSError, match="connection reset") as info:
                call(r)
            err = info.value
            assert not isinstance(err, ZKernelsError)
            assert isinstance(err.__cause__, ConnectionError), (i, err.__cause__)
            notes = getattr(err, "__notes__", [])
            assert any("(1, 1)" in n and "arr/c/" in n for n in notes), (i, notes)


# ---------------------------------------------------------------------------------------------
# threads, caches, exit


@pytest.mark.parametrize("kind", ["local", "fsspec"])
def test_threads_share_one_reader(kind, tmp_path):
    arr = create(make_store(kind, tmp_path), "v3-sharded-end", shape=(40, 48), chunks=(4, 4))
    ref = arr
    expected = ref[...]
    errors = []
    with ChunkReader(arr, io_concurrency=4) as r:
        coords = list(itertools.product(*(range(n) for n in r.chunk_grid_shape)))

        def work(seed):
            try:
                rng = np.random.default_rng(seed)
                order = [coords[i] for i in rng.permutation(len(coords))]
                for c in order[:40]:
                    np.testing.assert_array_equal(r.read_chunk(c), expected[r.chunk_region(c)])
                for c, chunk in r.iter_chunks(order, readahead_bytes=2048):
                    np.testing.assert_array_equal(chunk, expected[r.chunk_region(c)])
                np.testing.assert_array_equal(r.read_region((slice(3, 33), 5)), expected[3:33, 5])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def test_index_cache_is_used_and_bounded():
    store = SlowStore(zarr.storage.MemoryStore(), latency=0)
    arr = create(store, "v3-sharded-end", shape=(40, 64), chunks=(2, 2), fill=False)
    with ChunkReader(arr) as r:
        before = store.gets
        r.read_chunk((0, 0))
        r.read_chunk((0, 1))
        assert store.gets - before == 3  # one index, then one range per chunk
        assert len(r._cache) == 1
        r.clear_cache()
        assert len(r._cache) == 0
    per_index = 2 * 2 * 16 + 64  # 2x2 inner chunks per shard, parsed, plus bookkeeping
    with ChunkReader(arr, index_cache_bytes=2 * per_index) as r:
        list(r.iter_chunks())
        assert 1 <= len(r._cache) <= 2


def test_unclosed_reader_does_not_block_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import numpy as np, zarr
        from zkernels.reader import ChunkReader
        for store in (zarr.storage.LocalStore({str(tmp_path / "x.zarr")!r}),
                      zarr.storage.FsspecStore.from_url("memory://exit-test/x")):
            a = zarr.create_array(store, shape=(256, 256), chunks=(8, 8), shards=(64, 64),
                                  dtype="u2")
            a[...] = 1
            r = ChunkReader(a, io_concurrency=4)
            it = r.iter_chunks(readahead_bytes=1 << 20)
            next(it)
            globals()["keep_" + str(id(r))] = (r, it)
        print("done")
        """
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------------------------------------
# read_region, hypothesis

_REGION: dict = {}


def _region_array():
    if not _REGION:
        arr = create(zarr.storage.MemoryStore(), "v3-sharded-end", shape=(31, 45), chunks=(4, 6))
        _REGION["ref"] = arr
        _REGION["reader"] = ChunkReader(arr)
    return _REGION["ref"], _REGION["reader"]


def _dim(n):
    ints = st.integers(-n, n - 1)
    bounds = st.one_of(st.none(), st.integers(-n - 3, n + 3))
    slices = st.builds(slice, bounds, bounds, st.sampled_from([None, 1, 2, 5]))
    return st.one_of(ints, slices)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sel=st.tuples(_dim(31), _dim(45)))
def test_read_region_matches_zarr(sel):
    ref, reader = _region_array()
    assert_same(ref[sel], reader.read_region(sel), sel)


def test_read_region_large_box_parallel(tmp_path):
    arr = create(
        zarr.storage.LocalStore(tmp_path / "r.zarr"),
        "v3-sharded-end",
        shape=(300, 300),
        chunks=(10, 10),
    )
    ref = arr
    with ChunkReader(arr, io_concurrency=3, decode_threads=2) as r:
        assert_same(ref[5:290, 7:299], r.read_region((slice(5, 290), slice(7, 299))))
        assert_same(ref[...], r.read_region(...))
        assert_same(ref[..., 3], r.read_region((Ellipsis, 3)))


# ---------------------------------------------------------------------------------------------
# the functional layer


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize(
    "case", ["v3-zstd", "v3-sharded-end", "v3-sharded-start", "v2-F", "v2-slash"]
)
def test_functional_read_chunk(case, kind, tmp_path):
    store = make_store(kind, tmp_path)
    arr = create(store, case)
    ref = reference(arr)
    with ChunkReader(arr) as r:
        regions = {c: r.chunk_region(c) for c in itertools.product(*map(range, r.chunk_grid_shape))}
    for c, region in regions.items():
        assert_same(ref[region], read_chunk(store, "arr", c), (case, kind, c))
        assert_same(ref[region], read_chunk(store, "arr", c, metadata=arr.metadata), c)
    doc = arr.metadata.to_dict()
    assert_same(ref[regions[(1, 1)]], read_chunk(store, "/arr/", (1, 1), metadata=doc))
    assert_same(
        ref[regions[(1, 1)]],
        read_chunk(zarr.storage.StorePath(store, "arr"), "", (1, 1)),
    )
    with pytest.raises(IndexError):
        read_chunk(store, "arr", (99, 0))
    with pytest.raises(zarr.errors.ArrayNotFoundError):
        read_chunk(store, "nothing-here", (0, 0))


def stored(store) -> dict:
    async def items():
        out = {}
        proto = zarr.core.buffer.default_buffer_prototype()
        async for key in store.list():
            buf = await store.get(key, prototype=proto)
            out[key] = buf.to_bytes()
        return out

    return sync(items())


@pytest.mark.parametrize("kind", ["memory", "fsspec"])
@pytest.mark.parametrize(
    "case",
    [
        "v3-zstd",
        "v3-gzip",
        "v3-bigendian",
        "v3-transpose",
        "v3-sharded-end",
        "v3-sharded-start",
        "v3-sharded-crc32c",
        "v3-sharded-bigendian",
        "v2-zstd",
        "v2-F",
        "v2-struct",
    ],
)
def test_functional_write_chunk_stores_zarrs_bytes(case, kind, tmp_path):
    ours_store, ref_store = (
        make_store(kind, tmp_path, "o"),
        make_store(kind, tmp_path, "r"),
    )
    ours = create(ours_store, case)
    ref = create(ref_store, case)
    assert stored(ours_store) == stored(ref_store)
    with ChunkReader(ref) as r:
        grid = r.chunk_grid_shape
        region = r.chunk_region
        writes = [
            ((1, 1), "random"),
            ((grid[0] - 1, grid[1] - 1), "random"),  # edge chunk (edge shard)
            (
                (0, 0),
                "random",
            ),  # chunk that was missing (in a missing shard when sharded)
            ((2, 2), "fill"),  # becomes empty: key (or inner chunk) removed
            ((0, 2), "scalar"),
            ((grid[0] - 1, 0), "fill"),
        ]
        if "shards" in CASES[case]:
            writes.append(((2, 3), "random"))  # shard (1, 1), which was all missing
            writes.append(((2, 2), "random"))
    dtype = ref.dtype
    for i, (c, what) in enumerate(writes):
        shape = tuple(s.stop - s.start for s in region(c))
        if what == "random":
            data = random_data(shape, dtype, seed=100 + i)
        elif what == "fill":
            data = np.full(shape, ref.fill_value, dtype=dtype)
        else:
            data = random_data((), dtype, seed=7)[()]
        with zarr.config.set({"codec_pipeline.path": DEFAULT}):
            ref[region(c)] = data
        write_chunk(ours_store, "arr", c, data)
        assert stored(ours_store) == stored(ref_store), (case, c, what)
    assert_same(reference(ref)[...], reference(ours)[...])


def test_functional_write_chunk_shapes():
    store = zarr.storage.MemoryStore()
    arr = create(store, "v3-sharded-end", fill=False)
    write_chunk(store, "arr", (0, 0), np.arange(8, dtype="u2"))  # broadcasts along rows
    assert_same(np.broadcast_to(np.arange(8, dtype="u2"), (5, 8)), reference(arr)[0:5, 0:8])
    write_chunk(store, "arr", (0, 1), [[1] * 8] * 5)  # lists convert like arr[...] = list
    assert reference(arr)[0:5, 8:16].tolist() == [[1] * 8] * 5
    with pytest.raises(ValueError, match="does not fit chunk"):
        write_chunk(store, "arr", (0, 0), np.zeros((3, 3)))
    with pytest.raises(IndexError):
        write_chunk(store, "arr", (9, 9), 0)


def test_functional_cache_follows_rewritten_metadata(tmp_path):
    for kind in ("memory", "local"):
        store = make_store(kind, tmp_path, "cache")
        a = create(store, "v3-zstd", name="x")
        assert_same(reference(a)[0:5, 0:8], read_chunk(store, "x", (0, 0)))
        # recreate at the same path: other dtype, shape, chunks, sharding
        b = create(store, "v3-sharded-end", name="x", shape=(12, 12), chunks=(3, 3), seed=5)
        got = read_chunk(store, "x", (1, 1))
        assert got.dtype == np.dtype("u2") and got.shape == (3, 3)
        assert_same(reference(b)[3:6, 3:6], got)
        write_chunk(store, "x", (3, 3), np.arange(9, dtype="u2").reshape(3, 3))
        assert_same(np.arange(9, dtype="u2").reshape(3, 3), reference(b)[9:12, 9:12])
        # and as v2
        c = create(store, "v2-F", name="x", shape=(6,), chunks=(4,), seed=9)
        assert_same(reference(c)[4:6], read_chunk(store, "x", (1,)))
        assert_same(reference(c)[0:4], read_chunk(store, "x", (0,), metadata=c.metadata))
    # bounded
    store = zarr.storage.MemoryStore()
    for i in range(80):
        create(store, "v3-none", name="y", shape=(4 + i,), chunks=(4,), fill=False)
        read_chunk(store, "y", (0,))
    assert len(zr._PLANS) <= zr._PLANS_MAX


_FORKED: dict = {}


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_reader_streams_in_a_forked_child(tmp_path):
    import multiprocessing

    arr = create(zarr.storage.LocalStore(tmp_path / "f.zarr"), "v3-sharded-end")
    r = ChunkReader(arr)
    n = prod(r.chunk_grid_shape)
    assert len(list(r.iter_chunks(readahead_bytes=4096))) == n  # the parent's threads exist
    _FORKED["reader"] = r
    ctx = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        proc = ctx.Process(target=_stream_in_child, args=(n,))
        proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    _FORKED.clear()
    r.close()


def _stream_in_child(n: int) -> None:
    reader = _FORKED["reader"]
    ok = sum(1 for _ in reader.iter_chunks(readahead_bytes=4096)) == n
    ok = ok and reader.read_region(...).shape == reader.shape
    import os

    os._exit(0 if ok else 1)


@pytest.mark.parametrize("how", ["read_chunk", "uncached reader", "uncached stream"])
def test_a_shard_replaced_between_index_and_chunk_reads(how, tmp_path, monkeypatch):
    """Another process replaces a shard (a new file renamed over it) after its index was read:
    the chunk must come from the same file as the index (old data), never from the new file at
    the old offsets (another chunk's bytes, returned as this one's)."""
    root = tmp_path / "s"
    arr = zarr.create_array(zarr.storage.LocalStore(root), shape=(32, 32), chunks=(16, 16),
                            shards=(32, 32), dtype="i4", fill_value=0,
                            compressors=[zarr.codecs.ZstdCodec()])
    old = np.repeat(np.repeat(np.array([[1, 2], [3, 4]], "i4"), 16, 0), 16, 1)
    arr[:] = old
    shard = root / "c" / "0" / "0"
    new = old * 100
    new[:16, :16] = 0  # inner chunk 0 empty: the other chunks move within the file
    other = zarr.create_array(zarr.storage.LocalStore(tmp_path / "n"), shape=(32, 32),
                              chunks=(16, 16), shards=(32, 32), dtype="i4", fill_value=0,
                              compressors=[zarr.codecs.ZstdCodec()])
    other[:] = new
    replacement = tmp_path / "n" / "c" / "0" / "0"
    real = zr._ArrayPlan.index_from_suffix

    def index_then_replace(self, raw):
        index = real(self, raw)
        if replacement.exists():
            os.replace(replacement, shard)  # the writer's rename, after our index read
        return index

    monkeypatch.setattr(zr._ArrayPlan, "index_from_suffix", index_then_replace)
    if how == "read_chunk":
        got = read_chunk(zarr.storage.LocalStore(root), "", (1, 1))
    else:
        with ChunkReader(zarr.open_array(zarr.storage.LocalStore(root)),
                         index_cache_bytes=0) as r:
            got = (r.read_chunk((1, 1)) if how == "uncached reader"
                   else dict(r.iter_chunks([(0, 0), (1, 1)]))[(1, 1)])
    assert not replacement.exists()  # the replacement happened in the middle of the read
    np.testing.assert_array_equal(got, old[16:, 16:])


def test_interrupted_thread_start_gives_its_place_back(monkeypatch):
    """A KeyboardInterrupt while an IO thread is being started: the reader keeps working (the
    thread that never ran must not count against io_concurrency, or jobs wait forever)."""
    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end")
    r = ChunkReader(arr, io_concurrency=1)
    real_start = threading.Thread.start

    def interrupted(self):
        monkeypatch.setattr(threading.Thread, "start", real_start)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        list(r.iter_chunks())
    assert r._workers._threads == 0
    for c, chunk in r.iter_chunks():
        assert_same(arr[r.chunk_region(c)], chunk, c)
    r.close()


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
def test_ctrl_c_never_leaves_a_reader_hung():
    """Ctrl-C at random moments of region reads and streams (a timer interrupting the main
    thread): each later read works and the process exits (a lock left held by Condition's
    Python-level __enter__ hung the reader within a few interrupts, and the exit after it)."""
    script = textwrap.dedent(
        """
        import random, signal, threading, _thread, time
        import numpy as np, zarr, zkernels
        N = 512
        a = zarr.create_array(zarr.storage.MemoryStore(), shape=(N, N), chunks=(16, 16),
                              shards=(128, 128), dtype="u2",
                              compressors=[zarr.codecs.ZstdCodec(level=1)])
        data = (np.arange(N * N) % 65521).astype("u2").reshape(N, N)
        a[:] = data
        r = zkernels.ChunkReader(a, io_concurrency=4)
        random.seed(1)
        def on_alarm(*_):
            raise TimeoutError
        signal.signal(signal.SIGALRM, on_alarm)
        for i in range(300):
            t = threading.Timer(random.uniform(0, 0.003), _thread.interrupt_main)
            try:
                t.start()
                for _ in r.iter_chunks() if i % 2 else [r.read_region(...)]:
                    pass
                t.join()
                time.sleep(0.004)
            except KeyboardInterrupt:
                try:
                    time.sleep(0.004)
                except KeyboardInterrupt:
                    pass
            signal.alarm(10)
            got = r.read_region((slice(0, 100), slice(0, 300)))
            signal.alarm(0)
            assert np.array_equal(got, data[:100, :300]), i
        r.close()
        print("done")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
        check=False, cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done" in proc.stdout


def test_reader_pickles():
    import pickle

    arr = create(zarr.storage.MemoryStore(), "v3-sharded-end")
    with ChunkReader(arr, io_concurrency=3, decode_threads=1) as r:
        r2 = pickle.loads(pickle.dumps(r))
    assert (r2.io_concurrency, r2.decode_threads) == (3, 1) and not r2.closed
    for c, chunk in r2.iter_chunks():
        assert_same(arr[r2.chunk_region(c)], chunk, c)
    r2.close()


def test_local_fast_path_reads_what_localstore_reads(tmp_path):
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    store = zarr.storage.LocalStore(tmp_path / "s")
    proto = zarr.core.buffer.default_buffer_prototype()
    payload = bytes(range(256)) * 40
    sync(store.set("a/b", proto.buffer.from_bytes(payload)))
    sync(store.set("empty", proto.buffer.from_bytes(b"")))
    ranges = [
        None,
        RangeByteRequest(0, 10),
        RangeByteRequest(100, 5000),
        RangeByteRequest(10000, 10300),
        RangeByteRequest(20000, 20010),
        SuffixByteRequest(7),
        SuffixByteRequest(99999),
        OffsetByteRequest(10230),
        OffsetByteRequest(50000),
    ]
    for key in ("a/b", "empty", "missing", "a", "a/b/c"):
        for br in ranges:
            want = store.get_sync(key, prototype=proto, byte_range=br)
            got = read_file(f"{store.root}/{key}", br)
            assert (want is None) == (got is None), (key, br)
            if want is not None:
                assert got.tobytes() == want.to_bytes(), (key, br)


@pytest.mark.parametrize("case", ["v3-sharded-end", "v3-sharded-start"])
def test_local_stream_reads_several_ranges_of_a_shard(tmp_path, case):
    """A stream's unit of two inner chunks apart in a local shard, not coalesced (gap 0): two
    ranges read in one call (``_FileGets.many``); a shard cut short inside its second range
    is our error naming the key, as range by range."""
    root = tmp_path / "m.zarr"
    arr = create(zarr.storage.LocalStore(root), case, fill=False)
    ref = reference(arr)
    diagonal = [(i, i) for i in range(4)] + [(0, 2), (3, 1)]  # two apart in each shard
    with zkernels.enabled(coalesce_max_gap_bytes=0), ChunkReader(arr) as r:
        for c, chunk in r.iter_chunks(diagonal):
            assert_same(ref[r.chunk_region(c)], chunk, c)
        if case == "v3-sharded-start":  # index first: cut the shard inside its last chunk
            path = root / "arr/c/0/0"
            path.write_bytes(path.read_bytes()[:-3])
            with pytest.raises(CorruptChunkError, match=r"key .arr/c/0/0.*past the end"):
                list(r.iter_chunks([(0, 0), (1, 1)]))


@pytest.mark.parametrize("what", ["directory", "removed"])
def test_local_stream_shard_gone_after_its_index_was_cached(tmp_path, what):
    """A cached index, its shard then removed or replaced by a directory (which LocalStore
    reads as a missing key): a unit of two ranges gives CorruptChunkError naming the key, as
    one range does, not the directory's IsADirectoryError."""
    root = tmp_path / "g.zarr"
    arr = create(zarr.storage.LocalStore(root), "v3-sharded-end", fill=False)
    with zkernels.enabled(coalesce_max_gap_bytes=0), ChunkReader(arr) as r:
        list(r.iter_chunks([(0, 0), (1, 1)]))  # caches the index of shard (0, 0)
        path = root / "arr/c/0/0"
        path.unlink()
        if what == "directory":
            path.mkdir()
        for coords in ([(0, 0), (1, 1)], [(0, 0)]):
            with pytest.raises(CorruptChunkError, match=r"key .arr/c/0/0.*past the end"):
                list(r.iter_chunks(coords))
