"""Many threads reading and writing different shards of one array at once stay exact."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ShardingCodec, ZstdCodec

import zkernels


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_concurrent_reads_and_writes(tmp_path, kind):
    store = zarr.storage.MemoryStore() if kind == "memory" else zarr.storage.LocalStore(tmp_path / "a")
    with zkernels.enabled(threads=3):
        arr = zarr.create_array(
            store, shape=(8 * 32, 32), chunks=(32, 32), dtype="int32", compressors=None, fill_value=0,
            serializer=ShardingCodec(chunk_shape=(8, 8), codecs=[BytesCodec(), ZstdCodec()]),
        )
        expected = np.zeros(arr.shape, dtype="int32")
        errors = []

        def worker(i: int) -> None:
            try:
                rows = slice(32 * i, 32 * (i + 1))
                for step in range(5):
                    value = np.full((32, 32), i * 100 + step, dtype="int32")
                    value[::3] += np.arange(32, dtype="int32")
                    arr[rows] = value
                    got = arr[rows]
                    if not np.array_equal(got, value):
                        errors.append((i, step))
                expected[rows] = value
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        np.testing.assert_array_equal(arr[:], expected)
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], expected)
