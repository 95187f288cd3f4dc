"""Buffer prototypes: the store sees the buffer class zarr would hand it (zarr's test_buffer.py and
test_config.py::test_config_buffer_implementation, with zkernels' pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.core.buffer import BufferPrototype
from zarr.core.sync import sync
from zarr.registry import register_buffer
from zarr.storage import StorePath
from zarr.testing.buffer import NDBufferUsingTestNDArrayLike, StoreExpectingTestBuffer, TestBuffer

from .conftest import ENGINES, ZK

LAYOUTS = {
    "bytes": {"compressors": None},
    "codecs": {
        "compressors": [BloscCodec(), Crc32cCodec(), GzipCodec(), ZstdCodec()],
        "filters": [TransposeCodec(order=(1, 0))],
    },
    "sharded": {"shards": (20, 10), "compressors": None},
    "sharded-zstd": {"shards": (20, 10), "compressors": [ZstdCodec()]},
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_configured_buffer_class_reaches_the_store(engine, layout):
    register_buffer(TestBuffer)
    data = np.arange(400, dtype="i4").reshape(40, 10)
    opts = {
        "codec_pipeline.path": engine,
        "codec_pipeline.zkernels.strict": True,  # zkernels itself, not its fallback
        "buffer": "zarr.testing.buffer.TestBuffer",
    }
    with zarr.config.set(opts):
        arr = zarr.create_array(
            StoreExpectingTestBuffer(), shape=data.shape, chunks=(5, 5), dtype="i4",
            **LAYOUTS[layout],
        )
        assert (type(arr.async_array.codec_pipeline).__name__ == "KernelCodecPipeline") == (
            engine == ZK
        )
        arr[:] = data  # the store asserts each chunk or shard arrives as a TestBuffer
        arr[1:3, 2:9] = -1  # partial: the existing chunk or shard is read with TestBuffer
        data[1:3, 2:9] = -1
        np.testing.assert_array_equal(arr[:], data)
        if "sharded" not in layout:  # zarr reads a shard index in numpy's prototype
            np.testing.assert_array_equal(arr[7:12, 3], data[7:12, 3])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("layout", ["bytes", "codecs"])
def test_explicit_prototype_reaches_the_store(engine, layout):
    # (zarr v3 only: zarr's v2 codec stores the default buffer class whatever the prototype)
    proto = BufferPrototype(buffer=TestBuffer, nd_buffer=NDBufferUsingTestNDArrayLike)
    expect = np.zeros((10, 10), dtype="uint16", order="F")

    async def run():
        with zarr.config.set({"codec_pipeline.path": engine}):
            a = await zarr.api.asynchronous.create_array(
                StorePath(StoreExpectingTestBuffer()) / "arr", shape=expect.shape,
                chunks=(5, 5), dtype=expect.dtype, fill_value=0, **LAYOUTS[layout],
            )
            await a.setitem((slice(1, 4), slice(3, 6)), np.ones((3, 3)), prototype=proto)
            await a.setitem((slice(5, 10), slice(0, 5)), np.full((5, 5), 7), prototype=proto)
            return await a.getitem((slice(0, 10), slice(0, 10)), prototype=proto)

    got = sync(run())
    expect[1:4, 3:6] = 1
    expect[5:10, 0:5] = 7
    assert type(got).__name__ == "TestNDArrayLike"
    np.testing.assert_array_equal(got, expect)


class _RecordingStore(zarr.storage.MemoryStore):
    """Records (request kind, buffer class) of each chunk data get."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: set[tuple[str, str]] = set()

    async def get(self, key, prototype, byte_range=None):
        if "json" not in key:
            self.gets.add((type(byte_range).__name__, prototype.buffer.__name__))
        return await super().get(key, prototype, byte_range)


def test_partial_shard_read_prototypes_as_zarr():
    # zarr's sharding codec: the index in numpy's prototype, inner chunks in the spec's
    register_buffer(TestBuffer)
    seen = {}
    for engine in ENGINES:
        store = _RecordingStore()
        with zarr.config.set({"codec_pipeline.path": engine,
                              "buffer": "zarr.testing.buffer.TestBuffer"}):
            arr = zarr.create_array(store, shape=(40, 10), chunks=(5, 5), shards=(20, 10),
                                    dtype="i4", compressors=None)
            arr[:] = np.arange(400, dtype="i4").reshape(40, 10)
            store.gets.clear()
            assert arr[7:12, 3].tolist() == list(range(73, 123, 10))
        seen[engine] = store.gets
    assert seen[ZK] == seen[ENGINES[0]]
    assert ("SuffixByteRequest", "Buffer") in seen[ZK]
    assert ("RangeByteRequest", "TestBuffer") in seen[ZK]
