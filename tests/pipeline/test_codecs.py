"""Single-chunk codec steps: the same bytes as zarr's codecs, both directions."""

from __future__ import annotations

import numcodecs
import numcodecs.blosc
import numpy as np
import pytest
import zarr
import zarr.codecs.blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import UInt8

import zkernels
from zkernels import _codecs
from zkernels.errors import ChecksumError, CorruptChunkError


def _inputs():
    rng = np.random.default_rng(3)
    y = np.linspace(0, 1000, 64)
    smooth = (y[:, None] + y[None, :] + rng.normal(0, 20, (64, 64))).astype(np.uint16)
    return [b"", b"x", bytes(100), rng.bytes(4097), smooth.tobytes(), bytes(range(256)) * 300]


def _spec(n):
    return ArraySpec(shape=(n,), dtype=UInt8(), fill_value=0, config=ArrayConfig("C", False),
                     prototype=default_buffer_prototype())


@pytest.mark.parametrize("level", [-3, 0, 3, 19])
@pytest.mark.parametrize("checksum", [False, True])
def test_zstd_step_matches_zarr(level, checksum):
    codec = ZstdCodec(level=level, checksum=checksum)
    step = _codecs._ZstdStep(codec)
    proto = default_buffer_prototype()
    for data in _inputs():
        buf = np.frombuffer(data, dtype=np.uint8)
        expected = codec._encode_sync(proto.buffer.from_bytes(data), _spec(len(data))).to_bytes()
        got = step.encode(buf)
        assert got.tobytes() == expected, (level, checksum, len(data))
        stored = np.frombuffer(expected, dtype=np.uint8)
        if data:
            assert step.decode(stored, True).tobytes() == data
        else:  # zarr's codec cannot read back its frame of nothing (numcodecs refuses it)
            with pytest.raises(RuntimeError):
                codec._decode_sync(proto.buffer.from_bytes(expected), _spec(0))
            with pytest.raises(RuntimeError):
                step.decode(stored, True)


def _gzip_members():
    """Stored chunks numcodecs reads: what it writes, and other gzip data (header fields,
    several members, zero padding after one)."""
    import gzip
    import io

    codec = GzipCodec(level=1)
    proto = default_buffer_prototype()
    out = []
    for data in _inputs():
        out.append((data, codec._encode_sync(proto.buffer.from_bytes(data), _spec(len(data)))
                    .to_bytes()))
    named = io.BytesIO()
    with gzip.GzipFile(filename="chunk.bin", mode="wb", fileobj=named, mtime=7) as f:
        f.write(b"named member")
    out.append((b"named member", named.getvalue()))
    two = gzip.compress(b"first ") + gzip.compress(b"second")
    out.append((b"first second", two))
    out.append((b"padded", gzip.compress(b"padded") + bytes(8)))
    return out


@pytest.mark.parametrize("level", [1, 9])
def test_gzip_step_matches_zarr(level):
    codec = GzipCodec(level=level)
    step = _codecs._bytes_step(codec, _spec(1))
    assert type(step) is _codecs._GzipStep
    proto = default_buffer_prototype()
    for data, stored in _gzip_members():
        assert step.decode(np.frombuffer(stored, dtype=np.uint8), True).tobytes() == data
        ref = codec._decode_sync(proto.buffer.from_bytes(stored), _spec(len(data))).to_bytes()
        assert ref == data
    data = _inputs()[4]
    expected = codec._encode_sync(proto.buffer.from_bytes(data), _spec(len(data))).to_bytes()
    assert step.encode(np.frombuffer(data, dtype=np.uint8)).tobytes() == expected


def test_gzip_step_one_member_skips_numcodecs(monkeypatch):
    """What numcodecs writes is inflated by zlib alone; the rest goes to numcodecs."""
    calls = []
    orig = _codecs._SyncCodecStep.decode
    monkeypatch.setattr(_codecs._SyncCodecStep, "decode",
                        lambda self, buf, v: calls.append(buf.size) or orig(self, buf, v))
    step = _codecs._bytes_step(GzipCodec(level=1), _spec(1))
    members = _gzip_members()
    for data, stored in members[:-2]:  # one member each
        assert step.decode(np.frombuffer(stored, dtype=np.uint8), True).tobytes() == data
    assert calls == []
    for data, stored in members[-2:]:  # two members; padding after one
        assert step.decode(np.frombuffer(stored, dtype=np.uint8), True).tobytes() == data
    assert calls == [len(members[-2][1]), len(members[-1][1])]


def _error_of(fn, arg):
    try:
        fn(arg)
    except Exception as exc:  # noqa: BLE001 - any error: compared below
        return type(exc), str(exc)
    return None


def test_gzip_step_damage_fails_as_zarr():
    """Damaged data: numcodecs' own error (the step hands it over), never other bytes."""
    codec = GzipCodec(level=1)
    step = _codecs._bytes_step(codec, _spec(1))
    proto = default_buffer_prototype()
    stored = _gzip_members()[4][1]
    cases = {
        "truncated": stored[:-9],
        "crc": stored[:-8] + bytes([stored[-8] ^ 1]) + stored[-7:],
        "length": stored[:-1] + bytes([stored[-1] ^ 1]),
        "deflate": stored[:12] + bytes([stored[12] ^ 0xFF]) + stored[13:],
        "not gzip": b"\x00" * 40,
        "empty": b"",
    }
    for name, bad in cases.items():
        ours = _error_of(lambda b: step.decode(np.frombuffer(b, dtype=np.uint8), True), bad)
        theirs = _error_of(
            lambda b: codec._decode_sync(proto.buffer.from_bytes(b), _spec(1)), bad
        )
        assert ours == theirs, name
        assert ours is not None or name == "empty", name


def test_crc32c_step_matches_zarr():
    codec = Crc32cCodec()
    step = _codecs._Crc32cStep(codec)
    proto = default_buffer_prototype()
    for data in _inputs():
        expected = codec._encode_sync(proto.buffer.from_bytes(data), _spec(len(data))).to_bytes()
        got = step.encode(np.frombuffer(data, dtype=np.uint8))
        assert got.tobytes() == expected
        assert step.decode(got, True).tobytes() == data
        bad = got.copy()
        bad[-1] ^= 1
        with pytest.raises(ChecksumError):
            step.decode(bad, True)
        assert step.decode(bad, False).tobytes() == data  # validation off: data passes through
    with pytest.raises(CorruptChunkError):
        step.decode(np.zeros(3, dtype=np.uint8), True)


class _BloscOverridingAsync(BloscCodec):
    """A codec subclass whose async encode/decode (what zarr calls) differ from its sync ones."""

    calls: list[str] = []

    async def _encode_single(self, chunk_bytes, chunk_spec):
        self.calls.append("encode")
        return await super()._encode_single(chunk_bytes, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        self.calls.append("decode")
        return await super()._decode_single(chunk_bytes, chunk_spec)


class _BloscOverridingSync(BloscCodec):
    """A subclass overriding only the sync methods, which zarr's async ones call."""

    calls: list[str] = []

    def _encode_sync(self, chunk_bytes, chunk_spec):
        self.calls.append("encode")
        return super()._encode_sync(chunk_bytes, chunk_spec)


@pytest.mark.parametrize("shards", [None, (10,)])
def test_codec_subclass_overriding_async_methods_runs_in_zarr(shards):
    # zarr's test_config.py::test_config_codec_implementation: a registered subclass of a known
    # codec must have its own methods called; we cannot run what it overrides ourselves
    _BloscOverridingAsync.calls = []
    with zkernels.enabled(strict=False):
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(20,), chunks=(5,),
                                shards=shards, dtype="i4", compressors=[_BloscOverridingAsync()])
        pipe = arr.async_array.codec_pipeline
        assert not pipe.accelerated
        assert "_BloscOverridingAsync overrides its decode or encode" in pipe.fallback_reason
        arr[:] = np.arange(20)
        assert arr[:].tolist() == list(range(20))
    assert "encode" in _BloscOverridingAsync.calls and "decode" in _BloscOverridingAsync.calls


def test_codec_subclass_overriding_sync_methods_stays_accelerated():
    _BloscOverridingSync.calls = []
    with zkernels.enabled(strict=True):
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(20,), chunks=(5,), dtype="i4",
                                compressors=[_BloscOverridingSync()])
        assert arr.async_array.codec_pipeline.accelerated
        arr[:] = np.arange(20)
        assert arr[:].tolist() == list(range(20))
    assert _BloscOverridingSync.calls == ["encode"] * 4


def test_codec_subclass_overriding_one_direction_async():
    class DecodeLogged(_BloscOverridingSync):  # sync encode overridden above, async decode here
        async def _decode_single(self, chunk_bytes, chunk_spec):
            return await super()._decode_single(chunk_bytes, chunk_spec)

    pipe = zkernels.KernelCodecPipeline.from_codecs([BytesCodec(), DecodeLogged()])
    assert not pipe.accelerated
    assert "DecodeLogged overrides its decode or encode" in pipe.fallback_reason
    pipe = zkernels.KernelCodecPipeline.from_codecs([BytesCodec(), _BloscOverridingSync()])
    assert pipe.accelerated


class _RenamedTypesizeBlosc(numcodecs.Blosc):
    """A numcodecs whose Blosc keeps its typesize under another name (as a future release
    might): zkernels, reading ``_typesize``, would pass typesize 1 to c-blosc."""

    def __init__(self, *args, typesize=None, **kwargs):
        super().__init__(*args, **kwargs)
        del self._typesize
        self._element_size = typesize

    def encode(self, buf):
        buf = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)
        return numcodecs.blosc.compress(buf, self._cname_bytes, self.clevel, self.shuffle,
                                        self.blocksize, self._element_size)


def test_blosc_parameters_checked_against_numcodecs(monkeypatch):
    # the kernel takes blosc's parameters from numcodecs' object; where it would store other
    # bytes than numcodecs (here: a typesize it cannot find), the chunks go to numcodecs
    monkeypatch.setattr(zarr.codecs.blosc, "Blosc", _RenamedTypesizeBlosc)
    codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)
    assert isinstance(codec._blosc_codec, _RenamedTypesizeBlosc)
    chain = _codecs.ChunkChain.from_codecs((BytesCodec(), codec))
    spec = ArraySpec(shape=(64,), dtype=zarr.core.dtype.UInt32(), fill_value=0,
                     config=ArrayConfig("C", False), prototype=default_buffer_prototype())
    assert chain.bind(spec).encode_steps is None
    assert _codecs.ChunkChain.from_codecs((BytesCodec(), BloscCodec(
        cname="lz4", clevel=5, shuffle="shuffle", typesize=4))).bind(spec).encode_steps is None
    monkeypatch.undo()
    # numcodecs' own Blosc agrees: the kernel encodes
    chain = _codecs.ChunkChain.from_codecs((BytesCodec(), BloscCodec(
        cname="lz4", clevel=5, shuffle="shuffle", typesize=4)))
    assert chain.bind(spec).encode_steps == ("blosc",)
    assert chain.bind(spec).encode_params["blosc_typesize"] == 4


def test_blosc_renamed_typesize_still_stores_zarrs_bytes(monkeypatch, twin):
    monkeypatch.setattr(zarr.codecs.blosc, "Blosc", _RenamedTypesizeBlosc)
    inner = zarr.codecs.ShardingCodec(chunk_shape=(16, 16), codecs=[
        BytesCodec(), BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)])
    t = twin("memory", shape=(64, 64), dtype="uint32", chunks=(32, 32), serializer=inner,
             compressors=None, fill_value=0)
    t.write(Ellipsis, (np.arange(64 * 64, dtype="uint32") // 3).reshape(64, 64))
    t.check_stored()
    t.check_read(Ellipsis)


class _FailingBlosc(numcodecs.Blosc):
    def encode(self, buf):
        raise RuntimeError("no blosc today")


def test_blosc_probe_failure_means_no_kernel(capfd):
    # numcodecs failing on the probe's sample: no kernel, and nothing printed by the thread
    nc = _FailingBlosc(cname="lz4", clevel=5, shuffle=1, typesize=2)
    params = dict(blosc_cname="lz4", blosc_clevel=5, blosc_shuffle=1, blosc_blocksize=0,
                  blosc_typesize=2)
    assert not _codecs._blosc_agrees(nc, params)
    assert "Exception in thread" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="no blosc today"):
        _codecs._off_main_thread(nc.encode, b"x" * 100)
    assert _codecs._blosc_agrees(numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1, typesize=2),
                                 params)


@pytest.mark.parametrize("fmt", ["v3", "v3-sharded", "v3-transposed", "v2"])
def test_python_blosc_encodes_run_off_the_main_thread(monkeypatch, fmt):
    """zarr runs numcodecs' blosc off the main thread (asyncio.to_thread), where c-blosc keeps
    to one thread; on the main thread it may use several and order a large chunk's blocks
    otherwise. A caller driving zarr's async API from the main thread must still get zarr's
    bytes: our Python-path encodes of chunks of several blocks move off it too (one block is
    compressed in the calling thread whatever c-blosc's thread count)."""
    import asyncio
    import threading

    from zarr.codecs import TransposeCodec

    seen = []
    real = numcodecs.Blosc.encode

    def spy(self, buf):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(self, buf)

    monkeypatch.setattr(numcodecs.Blosc, "encode", spy)
    data = np.arange(64 * 64, dtype="<u2").reshape(64, 64)
    blosc = [BloscCodec(cname="lz4", blocksize=128)]  # 512-byte chunks of 4 blocks
    kw = {"v3": {"compressors": blosc},
          # a partial inner chunk is merged in Python, then encoded
          "v3-sharded": {"shards": (32, 32), "compressors": blosc},
          "v3-transposed": {"filters": [TransposeCodec(order=(1, 0))], "compressors": blosc},
          "v2": {"zarr_format": 2, "compressors": numcodecs.Blosc(cname="lz4", blocksize=128)}}[fmt]
    stores = {}
    for path in ("zarr.core.codec_pipeline.BatchedCodecPipeline", "zkernels.KernelCodecPipeline"):
        store = zarr.storage.MemoryStore()
        with zarr.config.set({"codec_pipeline.path": path}):
            arr = zarr.create_array(store, shape=(64, 64), chunks=(16, 16), dtype="<u2",
                                    fill_value=0, **kw)
            arr[:] = data
            seen.clear()
            asyncio.run(arr.async_array.setitem((slice(3, 9), slice(5, 13)), 7))
        assert seen and not any(seen), (path, seen)  # numcodecs ran, never on the main thread
        stores[path] = {k: v.to_bytes() for k, v in store._store_dict.items()}
    assert stores["zkernels.KernelCodecPipeline"] == stores[
        "zarr.core.codec_pipeline.BatchedCodecPipeline"]


def test_one_blosc_block_rule_matches_c_blosc():
    """`_one_blosc_block` says a buffer is compressed as one block (so c-blosc's threads cannot
    reorder anything): check that against the frames this c-blosc writes, for every compressor,
    level and a range of sizes and type sizes, with and without a forced block size."""
    rng = np.random.default_rng(0)
    for cname in numcodecs.blosc.list_compressors():
        for clevel in (1, 5, 9):
            for typesize in (1, 2, 4, 8):
                for nbytes in (64, 1000, 8192, 32767 // typesize * typesize, 32768):
                    for forced in (0, 256, 4096):
                        codec = numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=1,
                                                blocksize=forced, typesize=typesize)
                        data = rng.integers(0, 4, nbytes, dtype=np.uint8)
                        frame = bytes(codec.encode(data))
                        blocksize = int.from_bytes(frame[8:12], "little")
                        if _codecs._one_blosc_block(codec, nbytes):
                            assert blocksize >= nbytes, (cname, clevel, typesize, nbytes, forced)


def test_zstd_step_reads_a_first_frame_of_nothing():
    """Frames after one that declares 0 bytes: python-zstandard stops at the first, numcodecs
    (zarr) reads them all; the step must give numcodecs' bytes."""
    import zstandard

    data = np.arange(64, dtype="<i4").tobytes()
    cctx = zstandard.ZstdCompressor()
    step = _codecs._ZstdStep(ZstdCodec())
    empty = cctx.compress(b"")
    cases = [empty + cctx.compress(data), empty + empty + cctx.compress(data), empty,
             cctx.compress(data) + empty]
    for raw in cases:
        try:
            want = bytes(numcodecs.Zstd().decode(raw))
        except RuntimeError as exc:  # numcodecs refuses a lone empty frame
            with pytest.raises(RuntimeError, match=str(exc)):
                step.decode(np.frombuffer(raw, np.uint8), True)
        else:
            assert step.decode(np.frombuffer(raw, np.uint8), True).tobytes() == want
    assert bytes(numcodecs.Zstd().decode(cases[0])) == data  # the case that was read as empty


@pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["memory", "local"])
@pytest.mark.parametrize(
    "filters",
    [[numcodecs.VLenUTF8()], [numcodecs.Categorize(["a", "bb", "héllo", ""], dtype=object)]],
    ids=["vlen-utf8", "categorize"],
)
def test_v2_filters_decoding_to_objects_under_a_fixed_dtype(kind, filters, tmp_path):
    """A v2 fixed-width string array whose filters decode to an object array: zarr converts it
    to the array's dtype; so must zkernels, on reads and on partial writes (same bytes)."""
    from .conftest import DEFAULT, ZK, Twin

    twin = Twin(kind, tmp_path, dict(shape=(7,), chunks=(3,), dtype="<U5", zarr_format=2,
                                     filters=filters, compressors=None, fill_value=""))
    assert not twin.write(slice(None), np.array(["a", "bb", "héllo", "a", "", "bb", "a"]))
    twin.check_stored()
    # (zarr cannot reopen such an array from its metadata: the twins' own arrays are read)
    reads = twin.apply(lambda a: a[:])
    np.testing.assert_array_equal(reads[ZK], reads[DEFAULT])
    assert not twin.write(1, "a")
    assert not twin.write(slice(2, 6), np.array(["bb", "", "héllo", "a"]))
    twin.check_stored()
    reads = twin.apply(lambda a: a[1:6])
    np.testing.assert_array_equal(reads[DEFAULT], ["a", "bb", "", "héllo", "a"])
    np.testing.assert_array_equal(reads[ZK], reads[DEFAULT])
