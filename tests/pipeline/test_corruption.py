"""Bad shard data gives our errors (naming the key), never wrong values or a crash."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec

import zkernels
from zkernels.errors import ChecksumError, CorruptChunkError, ShardIndexError, ZKernelsError

KEY = "c/0/0"


def _array(compressors=(), index_location="end", crc=True, store=None):
    store = zarr.storage.MemoryStore() if store is None else store
    codecs = [BytesCodec()] + list(compressors)
    with zkernels.enabled():
        arr = zarr.create_array(
            store, shape=(16, 16), chunks=(16, 16), dtype="uint16", compressors=None, fill_value=0,
            serializer=ShardingCodec(chunk_shape=(4, 4), codecs=codecs,
                                     index_codecs=[BytesCodec()] + ([Crc32cCodec()] if crc else []),
                                     index_location=index_location),
        )
        arr[:] = np.arange(256, dtype="uint16").reshape(16, 16) + 1
    return store, arr


_PROTO = zarr.core.buffer.default_buffer_prototype()


def _put(store, key, data: bytes):
    asyncio.run(store.set(key, _PROTO.buffer.from_bytes(data)))


def _raw(store, key=KEY) -> bytearray:
    return bytearray(asyncio.run(store.get(key, _PROTO)).to_bytes())


def _read(store, sel=slice(None)):
    with zkernels.enabled():
        return zarr.open_array(store, mode="r")[sel]


@pytest.mark.parametrize("sel", [slice(None), (slice(0, 4), slice(0, 4))], ids=["whole", "partial"])
def test_flipped_index_checksum(sel):
    store, _ = _array()
    raw = _raw(store)
    raw[-1] ^= 0xFF
    _put(store, KEY, bytes(raw))
    with pytest.raises(ChecksumError, match=KEY):
        _read(store, sel)


def test_flipped_index_byte_detected_by_checksum():
    store, _ = _array()
    raw = _raw(store)
    raw[-10] ^= 0x01
    _put(store, KEY, bytes(raw))
    with pytest.raises(ChecksumError, match=KEY):
        _read(store)


@pytest.mark.parametrize("sel", [slice(None), (slice(0, 4), slice(0, 4))], ids=["whole", "partial"])
def test_truncated_shard(sel):
    store, _ = _array()
    raw = _raw(store)
    _put(store, KEY, bytes(raw[:10]))
    with pytest.raises(ShardIndexError, match=KEY):
        _read(store, sel)


@pytest.mark.parametrize("sel", [slice(None), (slice(12, 16), slice(12, 16))], ids=["whole", "partial"])
def test_offset_past_end(sel):
    store, _ = _array(crc=False)
    raw = _raw(store)
    n = 16 * 16
    index = np.frombuffer(bytes(raw[-n:]), dtype="<u8").reshape(16, 2).copy()
    index[15, 0] = len(raw) + 100  # last inner chunk (3, 3) points past the end
    _put(store, KEY, bytes(raw[:-n]) + index.tobytes())
    with pytest.raises(ZKernelsError, match=KEY):
        _read(store, sel)


@pytest.mark.parametrize("store_kind", ["local", "memory"])
@pytest.mark.parametrize("field,value", [(0, 2**40), (0, 2**63), (1, 2**40), (1, 2**63 + 5)],
                         ids=["offset-2^40", "offset-2^63", "nbytes-2^40", "nbytes-2^63"])
@pytest.mark.parametrize("how", ["whole", "pieces", "small", "box", "reader", "stream"])
def test_entry_far_past_end(tmp_path, store_kind, field, value, how):
    """An entry claiming bytes far past the shard's end (a valid checksum over a bad index) is
    our error on every path, never an attempt to allocate or read that much (MemoryError,
    OverflowError on local files before): a whole read (the index checked against the shard's
    size), one in pieces (index read alone), a small box (``_read_small_local``), a box through
    the general path (its ranges in one ``pread_ranges`` call), ``read_chunk`` and a stream of
    two chunks (two ranges)."""
    store = zarr.storage.LocalStore(tmp_path) if store_kind == "local" else None
    store, _ = _array(crc=False, store=store)
    raw = _raw(store)
    n = 16 * 16
    index = np.frombuffer(bytes(raw[-n:]), dtype="<u8").reshape(16, 2).copy()
    index[5, field] = value  # inner chunk (1, 1)
    _put(store, KEY, bytes(raw[:-n]) + index.tobytes())
    options = {
        "pieces": {"piece_bytes": 64},  # the 512-byte shard read in pieces
        "box": {"inline_bytes": 0, "coalesce_max_gap_bytes": 0},
        "stream": {"coalesce_max_gap_bytes": 0},
    }.get(how, {})
    with pytest.raises(ZKernelsError, match=KEY), zkernels.enabled(**options):
        arr = zarr.open_array(store, mode="r")
        if how in ("whole", "pieces"):
            arr[:]
        elif how in ("small", "box"):
            arr[0:8, 4:8]  # inner chunks (0, 1) and (1, 1)
        else:
            with zkernels.ChunkReader(arr) as reader:
                if how == "reader":
                    reader.read_chunk((1, 1))
                else:
                    list(reader.iter_chunks([(0, 1), (1, 1)]))


def test_half_empty_entry():
    store, _ = _array(crc=False)
    raw = _raw(store)
    n = 16 * 16
    index = np.frombuffer(bytes(raw[-n:]), dtype="<u8").reshape(16, 2).copy()
    index[0, 1] = 2**64 - 1
    _put(store, KEY, bytes(raw[:-n]) + index.tobytes())
    with pytest.raises(ShardIndexError, match=KEY):
        _read(store)


@pytest.mark.parametrize("index_location", ["start", "end"])
def test_entry_overlapping_index(index_location):
    store, _ = _array(crc=False, index_location=index_location)
    raw = _raw(store)
    n = 16 * 16
    idx_bytes = raw[:n] if index_location == "start" else raw[-n:]
    index = np.frombuffer(bytes(idx_bytes), dtype="<u8").reshape(16, 2).copy()
    index[3, 0] = 0 if index_location == "start" else len(raw) - n
    new = index.tobytes()
    data = new + bytes(raw[n:]) if index_location == "start" else bytes(raw[:-n]) + new
    _put(store, KEY, data)
    with pytest.raises(ShardIndexError, match=KEY):
        _read(store)


def test_corrupt_compressed_chunk():
    store, _ = _array(compressors=[ZstdCodec()], crc=True)
    raw = _raw(store)
    raw[5] ^= 0xFF  # inside the first inner chunk's zstd frame
    raw[6] ^= 0xFF
    _put(store, KEY, bytes(raw))
    with pytest.raises(ZKernelsError, match=KEY):
        _read(store)


def test_chunk_checksum_mismatch():
    store, _ = _array(compressors=[Crc32cCodec()])
    raw = _raw(store)
    raw[0] ^= 0x01
    _put(store, KEY, bytes(raw))
    with pytest.raises(ChecksumError, match=KEY):
        _read(store)


def test_wrong_chunk_size_uncompressed():
    store, _ = _array(crc=False)
    raw = _raw(store)
    n = 16 * 16
    index = np.frombuffer(bytes(raw[-n:]), dtype="<u8").reshape(16, 2).copy()
    index[0, 1] -= 2  # first chunk 2 bytes short
    _put(store, KEY, bytes(raw[:-n]) + index.tobytes())
    with pytest.raises(CorruptChunkError, match=KEY):
        _read(store)


def test_checksum_validation_can_be_disabled():
    store, _ = _array()
    raw = _raw(store)
    raw[-1] ^= 0xFF  # only the index checksum is wrong; the index itself is intact
    _put(store, KEY, bytes(raw))
    with zkernels.enabled(validate_checksums=False):
        got = zarr.open_array(store, mode="r")[:]
    np.testing.assert_array_equal(got, np.arange(256, dtype="uint16").reshape(16, 16) + 1)


def test_errors_are_value_errors():
    assert issubclass(ZKernelsError, ValueError)
    for cls in (ChecksumError, CorruptChunkError, ShardIndexError, zkernels.errors.UnsupportedError):
        assert issubclass(cls, ZKernelsError)


def test_failed_write_leaves_stored_data_intact():
    store, _ = _array()
    before = _raw(store)
    bad = bytearray(before)
    bad[-1] ^= 0xFF
    _put(store, KEY, bytes(bad))
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r+")
        with pytest.raises(ChecksumError, match=KEY):
            arr[0:2, 0:2] = 5  # partial write must read the (corrupt) shard: refuse, write nothing
    assert _raw(store) == bad


# ------------------------------------------------------------------------------------------------
# unsharded arrays: each key holds one chunk


@pytest.mark.parametrize("compressors", [None, [ZstdCodec()], [Crc32cCodec()],
                                         [ZstdCodec(), Crc32cCodec()], [GzipCodec()],
                                         [BloscCodec()]], ids=str)
@pytest.mark.parametrize("damage", ["empty", "truncated", "trailing-bytes"])
def test_damaged_unsharded_chunk(compressors, damage):
    """A chunk object of 0 bytes, cut short or with bytes after its data is an error on a
    whole read, a partial read and a partial write (zarr's pipeline raises too): our error,
    naming the key and no inner chunk. Nothing reads as fill; the stored bytes stay."""
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(8, 8), chunks=(4, 4), dtype="uint16",
                                compressors=compressors, fill_value=0)
        arr[:] = np.arange(64, dtype="uint16").reshape(8, 8) + 1
    raw = bytes(_raw(store))
    bad = {"empty": b"", "truncated": raw[:-3], "trailing-bytes": raw + bytes(7)}[damage]
    _put(store, KEY, bad)
    if damage == "trailing-bytes" and compressors and type(compressors[-1]) in (GzipCodec,
                                                                                BloscCodec):
        # numcodecs reads past zero padding after a gzip member and bytes after a blosc frame
        want = zarr.open_array(store, mode="r")[:]  # zarr's own pipeline
        np.testing.assert_array_equal(want, np.arange(64, dtype="uint16").reshape(8, 8) + 1)
        np.testing.assert_array_equal(_read(store), want)
        return
    for sel in (slice(None), (slice(0, 2), slice(0, 2))):
        with pytest.raises(ZKernelsError, match=KEY) as info:
            _read(store, sel)
        assert "inner chunk" not in str(info.value)
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r+")
        with pytest.raises(ZKernelsError, match=KEY):
            arr[0:2, 0:2] = 5
    assert bytes(_raw(store)) == bad


def test_truncated_blosc_chunk_v2():
    """zarr v2's blosc compressor: numcodecs would read a frame cut short past its end (and
    return what lies there); a partial write over it must refuse, as a read does."""
    import numcodecs

    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(8, 8), chunks=(4, 4), dtype="uint16",
                                zarr_format=2, compressors=numcodecs.Blosc(), fill_value=0)
        arr[:] = np.arange(64, dtype="uint16").reshape(8, 8) + 1
    key = "0.0"
    bad = bytes(_raw(store, key))[:-5]
    _put(store, key, bad)
    with pytest.raises(ZKernelsError, match=key):
        _read(store, (slice(0, 2), slice(0, 2)))
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r+")
        with pytest.raises(ZKernelsError, match="blosc: bad header"):
            arr[0:2, 0:2] = 5
    assert bytes(_raw(store, key)) == bad


def test_write_error_keeps_its_cause():
    """A partial write over a chunk that does not decode: our error, caused by the codec's
    (never its own cause, which would hide the codec's error)."""
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(8,), chunks=(4,), dtype="i4",
                                compressors=[ZstdCodec()], fill_value=0)
        arr[:] = np.arange(8, dtype="i4")
    _put(store, "c/0", bytes(_raw(store, "c/0"))[:-2])
    with zkernels.enabled():
        arr = zarr.open_array(store, mode="r+")
        with pytest.raises(CorruptChunkError, match="c/0") as info:
            arr[1:3] = 5
    chain, err = [], info.value
    while err is not None and len(chain) < 5:
        chain.append(err)
        err = err.__cause__
    assert info.value.__cause__ is not info.value
    assert not isinstance(chain[-1], ZKernelsError), chain  # ends at the codec's own error


# ------------------------------------------------------------------------------------------------
# asynchronous stores: their errors and their request bound


class _FlakyStore(zarr.storage.WrapperStore):
    """Gets (or sets) of chunk and shard keys fail with the store's own error (a network error,
    say), itself caused by another (the store's own chain, which must reach the caller)."""

    fail_sets = False

    async def get(self, key, prototype, byte_range=None):
        if key.startswith("c/") and not self.fail_sets:
            raise OSError(f"connection reset while fetching {key}") from ConnectionError("peer")
        return await self._store.get(key, prototype, byte_range)

    async def set(self, key, value):
        if key.startswith("c/") and self.fail_sets:
            raise OSError(f"no space left for {key}") from ConnectionError("quota")
        return await self._store.set(key, value)


@pytest.mark.parametrize("shards", [(16, 16), None])
@pytest.mark.parametrize("sel", [slice(None), (slice(1, 3), slice(2, 5))], ids=["whole", "part"])
def test_store_errors_keep_their_type(shards, sel):
    """A store's own error is not a corrupt chunk: it reaches the caller with its type, as with
    zarr's pipeline (code that retries on OSError must see one), noting the key."""
    inner = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(inner, shape=(16, 16), chunks=(4, 4), shards=shards,
                                dtype="uint16", compressors=[ZstdCodec()], fill_value=0)
        arr[:] = 1
        flaky = zarr.open_array(_FlakyStore(inner), mode="r")
        with pytest.raises(OSError, match="connection reset") as info:
            flaky[sel]
    _assert_store_error(info.value, "reading")


def _assert_store_error(err, doing):
    assert not isinstance(err, ZKernelsError)
    assert isinstance(err.__cause__, ConnectionError)  # the store's own chain, kept
    notes = getattr(err, "__notes__", [])
    assert len(notes) == 1 and notes[0].startswith(f"while {doing} 'c/"), notes


@pytest.mark.parametrize("shards", [(16, 16), None])
@pytest.mark.parametrize(
    ("failing", "sel"),
    [("get", (slice(1, 3), slice(2, 5))), ("set", (slice(1, 3), slice(2, 5))), ("set", slice(None))],
    ids=["get-part", "set-part", "set-whole"],  # a whole write reads nothing
)
def test_store_errors_on_writes_keep_their_type(shards, failing, sel):
    """As for reads: the store's error, its type and cause kept, one note naming the key."""
    inner = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(inner, shape=(16, 16), chunks=(4, 4), shards=shards,
                                dtype="uint16", compressors=[ZstdCodec()], fill_value=0)
        arr[:] = 1
        before = {k: bytes(v.to_bytes()) for k, v in inner._store_dict.items()}
        flaky = _FlakyStore(inner)
        flaky.fail_sets = failing == "set"
        with pytest.raises(OSError) as info:
            zarr.open_array(flaky, mode="r+")[sel] = 7
    _assert_store_error(info.value, "reading" if failing == "get" else "writing")
    assert {k: bytes(v.to_bytes()) for k, v in inner._store_dict.items()} == before


class _CountingStore(zarr.storage.WrapperStore):
    """Counts the requests in flight at once (each takes a millisecond)."""

    def __init__(self, store):
        super().__init__(store)
        self.now = self.peak = 0

    async def _counted(self, coro):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.001)
            return await coro
        finally:
            self.now -= 1

    async def get(self, key, prototype, byte_range=None):
        return await self._counted(self._store.get(key, prototype, byte_range))

    async def set(self, key, value):
        return await self._counted(self._store.set(key, value))


@pytest.mark.parametrize("limit", [1, 3])
@pytest.mark.parametrize("shards", [(16, 16), None])
def test_async_concurrency_bounds_requests(limit, shards):
    """zarr's ``async.concurrency`` bounds the requests in flight to an asynchronous store, for
    whole and partial reads and writes, sharded or not (a remote store must not see hundreds)."""
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    settings = {"async.concurrency": limit, "codec_pipeline.zkernels.coalesce_max_gap_bytes": 0}
    with zkernels.enabled(), zarr.config.set(settings):
        store = _CountingStore(zarr.storage.MemoryStore())
        arr = zarr.create_array(store, shape=(64, 64), chunks=(4, 4), shards=shards, dtype="i4",
                                compressors=[ZstdCodec()], fill_value=0)
        for sel, value in [(Ellipsis, data), ((slice(None, None, 5),) * 2, 7)]:
            store.peak = 0
            arr[sel] = value
            assert 1 <= store.peak <= limit, ("write", sel, store.peak)
            store.peak = 0
            arr[sel]
            assert 1 <= store.peak <= limit, ("read", sel, store.peak)
