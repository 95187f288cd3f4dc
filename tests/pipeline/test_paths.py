"""The fast paths are really taken where they apply (and left where they do not)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

import zkernels
import zkernels.pipeline as zp


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def counters(monkeypatch):
    made = {}
    for name in ("reconstruct_dense", "coalesce_ranges", "plan_chunk_reads", "parse_shard_index",
                 "scatter", "decode_chunks"):
        c = _Counter(getattr(zp, name))
        monkeypatch.setattr(zp, name, c)
        made[name] = c
    return made


def _array(codecs, endian="little"):
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(
            store, shape=(64, 64), chunks=(32, 32), dtype="uint16", compressors=None, fill_value=0,
            serializer=ShardingCodec(chunk_shape=(8, 8), codecs=[BytesCodec(endian=endian), *codecs]),
        )
        data = np.arange(64 * 64, dtype="uint16").reshape(64, 64)
        arr[:] = data
    return store, data


@pytest.mark.parametrize("endian", ["little", "big"])
def test_dense_path_for_whole_uncompressed_shards(counters, endian):
    store, data = _array([], endian)
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr[:], data)
        assert counters["reconstruct_dense"].calls == 4  # one per shard
        np.testing.assert_array_equal(arr[0:32, 0:32], data[0:32, 0:32])
        assert counters["reconstruct_dense"].calls == 5


def test_dense_path_off_by_option(counters):
    store, data = _array([])
    with zkernels.enabled(dense_path=False):
        np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], data)
    assert counters["reconstruct_dense"].calls == 0
    assert counters["decode_chunks"].calls >= 4  # the chunk kernel copies the raw chunks


@pytest.mark.parametrize(
    "codecs",
    [[ZstdCodec()], [BloscCodec(cname="lz4")], [Crc32cCodec()], [ZstdCodec(), Crc32cCodec()]],
    ids=["zstd", "blosc", "crc32c", "zstd+crc32c"],
)
def test_compressed_shards_go_through_the_chunk_kernel(counters, codecs):
    store, data = _array(codecs)
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr[:], data)
        whole = counters["decode_chunks"].calls
        np.testing.assert_array_equal(arr[3:20, 5], data[3:20, 5])  # partial, integer axis
    assert counters["reconstruct_dense"].calls == 0
    assert counters["scatter"].calls == 0  # no per-chunk Python scatter
    assert whole >= 4  # at least one kernel call per shard
    assert counters["decode_chunks"].calls > whole
    assert counters["plan_chunk_reads"].calls == 1  # the partial read's one shard
    assert counters["coalesce_ranges"].calls == 0


@pytest.mark.parametrize(
    "codecs, selection",
    [([ZstdCodec()], np.s_[::2, 1:60:3]), ([TransposeCodec(order=(1, 0)), ZstdCodec()], np.s_[:])],
    ids=["step-slices", "transpose"],
)
def test_per_chunk_path_where_the_kernel_does_not_apply(counters, codecs, selection):
    store, data = _array(codecs)
    with zkernels.enabled():
        np.testing.assert_array_equal(zarr.open_array(store, mode="r")[selection], data[selection])
    assert counters["decode_chunks"].calls == 0


def test_partial_reads_coalesce(counters, monkeypatch):
    store, data = _array([ZstdCodec()])
    gets = _Counter(zp._get_sync)
    monkeypatch.setattr(zp, "_get_sync", gets)
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr[3:20, 5:30], data[3:20, 5:30])
    assert counters["plan_chunk_reads"].calls == 1
    assert counters["parse_shard_index"].calls == 1
    assert gets.calls == 2  # the index, then the 12 touched chunks in one coalesced read


@pytest.fixture
def write_counters(monkeypatch):
    made = {}
    for name in ("encode_chunks", "concat_ranges"):
        c = _Counter(getattr(zp, name))
        monkeypatch.setattr(zp, name, c)
        made[name] = c
    return made


@pytest.mark.parametrize(
    "selection, kernel",
    [
        (np.s_[:], True),  # whole shards
        (np.s_[8:16, 40:48], True),  # one inner chunk: the others' bytes are kept
        (np.s_[8:16, 0:64], True),  # a row of inner chunks across two shards
        (np.s_[3:20, 5:30], False),  # partial inner chunks: merged in Python
        (np.s_[::2, :], False),  # steps
    ],
)
@pytest.mark.parametrize(
    "codecs",
    [[ZstdCodec(), Crc32cCodec()], [BloscCodec(cname="lz4")],
     [BloscCodec(cname="zstd", shuffle="bitshuffle"), Crc32cCodec()]],
    ids=["zstd+crc32c", "blosc-lz4", "blosc-zstd+crc32c"],
)
def test_writes_of_whole_inner_chunks_go_through_the_encode_kernel(write_counters, selection,
                                                                   kernel, codecs):
    store, data = _array(codecs)
    for c in write_counters.values():
        c.calls = 0  # count only the write below
    expected = data.copy()
    rng = np.random.default_rng(0)
    value = rng.integers(0, 1000, size=expected[selection].shape).astype("uint16")
    expected[selection] = value
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r+")
        arr[selection] = value
        np.testing.assert_array_equal(arr[:], expected)
    assert (write_counters["encode_chunks"].calls > 0) == kernel
    if selection != np.s_[:]:  # whole shards: see test_whole_shards_are_the_kernels_buffer
        assert write_counters["concat_ranges"].calls > 0  # old and new chunks, one shard


def _allocation(a: np.ndarray) -> int:
    """Bytes of the allocation an array view keeps alive."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a.nbytes


@pytest.mark.parametrize("kind", ["local", "memory"])
@pytest.mark.parametrize("codecs", [[], [ZstdCodec()], [BloscCodec(cname="lz4")]],
                         ids=["raw", "zstd", "blosc"])
def test_whole_shards_are_the_kernels_buffer(tmp_path, write_counters, kind, codecs):
    # a whole new shard is the encode kernel's buffer, index included, without a second copy;
    # a memory store keeps its values, so a compressed shard is copied into a buffer of its
    # size (the kernel's is sized for incompressible data)
    store = zarr.storage.LocalStore(tmp_path) if kind == "local" else zarr.storage.MemoryStore()
    data = (np.arange(64 * 64).reshape(64, 64) // 7 + 1).astype("uint16")  # compresses well
    data[32:, 32:] = 0  # a shard of fill: not written
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(64, 64), chunks=(16, 16), shards=(32, 32),
                                dtype="uint16", compressors=codecs, fill_value=0)
        arr[:] = data
        np.testing.assert_array_equal(arr[:], data)
    assert write_counters["encode_chunks"].calls == 4
    copied = kind == "memory" and bool(codecs)
    assert write_counters["concat_ranges"].calls == (3 if copied else 0)
    if kind == "local":
        assert (tmp_path / "c" / "1" / "0").is_file()
        assert not (tmp_path / "c" / "1" / "1").exists()
    else:
        assert sorted(k for k in store._store_dict if k.startswith("c/")) == ["c/0/0", "c/0/1",
                                                                             "c/1/0"]
        for key, buf in store._store_dict.items():
            if key.startswith("c/"):
                stored = buf.as_numpy_array()
                assert _allocation(stored) <= stored.nbytes * 9 // 8, key


def test_unsharded_reads_decode_straight_into_the_output(counters):
    store = zarr.storage.MemoryStore()
    data = np.arange(64 * 64, dtype="uint16").reshape(64, 64)
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(64, 64), chunks=(16, 16), dtype="uint16",
                                compressors=[ZstdCodec()], fill_value=0)
        arr[:] = data
        np.testing.assert_array_equal(arr[5:50, 3:60], data[5:50, 3:60])
    assert counters["decode_chunks"].calls == 16  # one per chunk, no temporary
    assert counters["scatter"].calls == 0


@pytest.mark.parametrize("endian", ["little", "big"])
def test_unsharded_whole_chunks_skip_the_box_computation(monkeypatch, endian):
    """A chunk read whole goes into its output view as is; edge and partial chunks have their
    box computed (and every value is right either way)."""
    box_of = _Counter(zp._box_of)
    monkeypatch.setattr(zp, "_box_of", box_of)
    data = np.arange(100 * 64, dtype="uint16").reshape(100, 64)
    with zkernels.enabled():
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(100, 64), chunks=(32, 32),
                                dtype="uint16", serializer=BytesCodec(endian=endian),
                                compressors=[ZstdCodec()], fill_value=0)
        arr[:] = data
        np.testing.assert_array_equal(arr[:], data)
        assert box_of.calls == 2  # 6 whole chunks, 2 at the edge (4 of their 32 rows)
        np.testing.assert_array_equal(arr[0:64, 0:33], data[0:64, 0:33])
        assert box_of.calls == 2 + 2  # 2 whole chunks, 2 partial


@pytest.mark.parametrize("codecs", [[ZstdCodec()], [], [BloscCodec(cname="lz4"), Crc32cCodec()]],
                         ids=["zstd", "raw", "blosc+crc32c"])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_points_decode_their_chunks_in_the_kernel(counters, codecs, endian):
    store, data = _array(codecs, endian)
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 64, size=(2, 300))
    counters["decode_chunks"].calls = 0
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr.vindex[rows, cols], data[rows, cols])
        np.testing.assert_array_equal(arr.vindex[rows[:5], cols[:5]], data[rows[:5], cols[:5]])
    assert counters["decode_chunks"].calls >= 4  # list mode, at least one call per shard
    assert counters["scatter"].calls == 0


def _record_threads(monkeypatch, name: str) -> list[str]:
    """Patch ``zkernels.pipeline.<name>`` to note the thread of each call; the list of names."""
    threads: list[str] = []
    fn = getattr(zp, name)

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return fn(*args, **kwargs)

    monkeypatch.setattr(zp, name, recording)
    return threads


def test_points_touching_many_chunks_decode_on_the_pool(monkeypatch):
    # a few points (a tiny output) can touch many chunks: that decode is work for the pool, not
    # for zarr's event loop thread
    store, data = _array([ZstdCodec()])
    threads = _record_threads(monkeypatch, "decode_chunks")
    rows, cols = np.meshgrid(np.arange(0, 64, 8), np.arange(0, 64, 8), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()  # 64 points, one in each of the 64 inner chunks
    with zkernels.enabled(inline_bytes=4096):  # 64 chunks of 128 bytes: above; 64 points: below
        arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr.vindex[rows, cols], data[rows, cols])
    assert threads and all(name.startswith("zkernels") for name in threads), threads


@pytest.mark.parametrize("swap", [True, False])
def test_local_shard_writes_thread(tmp_path, monkeypatch, swap):
    # swapped writes (the default): each new shard's file is written by the pool task that
    # encoded it; renamed over the old file (swap_writes=False), the write may wait on the disk
    # (ext4's auto_da_alloc) and goes to the IO threads, leaving the pool to encode the next
    threads = _record_threads(monkeypatch, "_set_sync")
    data = np.arange(64 * 64, dtype="uint16").reshape(64, 64)
    with zkernels.enabled(inline_bytes=1024, swap_writes=swap):
        arr = zarr.create_array(
            zarr.storage.LocalStore(tmp_path), shape=(64, 64), chunks=(8, 8), shards=(32, 32),
            dtype="uint16", compressors=[ZstdCodec()], fill_value=0,
        )
        arr[:] = data
        np.testing.assert_array_equal(zarr.open_array(tmp_path, mode="r")[:], data)
    assert len(threads) == 4, threads
    if swap:
        assert all(t.startswith("zkernels_") for t in threads), threads  # the compute pool
    else:
        assert all(t.startswith("zkernels-io") for t in threads), threads
