"""Single-chunk codec steps: the same bytes as zarr's codecs, both directions."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec
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
        assert step.decode(np.frombuffer(expected, dtype=np.uint8), True).tobytes() == data


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
