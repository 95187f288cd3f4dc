"""Single-chunk codec steps: the same bytes as zarr's codecs, both directions."""

from __future__ import annotations

import numpy as np
import pytest
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import UInt8

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
