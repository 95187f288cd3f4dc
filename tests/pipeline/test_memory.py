"""A whole-array read holds the output and a few shards' bytes at a time, not every shard."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

import zkernels


@pytest.mark.parametrize("codec", [ZstdCodec(level=1), BloscCodec(cname="lz4")],
                         ids=["zstd", "blosc"])
def test_whole_read_lets_go_of_each_shard(tmp_path, codec):
    shape, shard = (1024, 1024), (128, 128)  # 64 shards of 32 KiB decoded
    data = np.random.default_rng(0).integers(0, 2**16, size=shape, dtype=np.uint16)
    arr = zarr.create_array(
        zarr.storage.LocalStore(tmp_path), shape=shape, dtype="uint16", chunks=(32, 32),
        shards=shard, compressors=[codec], fill_value=0,
    )
    arr[:] = data  # random bits: each stored shard is about as large as its data
    with zkernels.enabled(threads=2):
        arr = zarr.open_array(zarr.storage.LocalStore(tmp_path), mode="r")
        arr[:64, :64]  # warm up (imports, the pool)
        tracemalloc.start()
        try:
            got = arr[:]
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    np.testing.assert_array_equal(got, data)
    shard_nbytes = 2 * shard[0] * shard[1]
    # the output, plus a handful of shards in flight (two threads), not all 64 of them
    assert peak - got.nbytes < 16 * shard_nbytes, (peak - got.nbytes) / shard_nbytes
