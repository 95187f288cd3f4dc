"""Turning zkernels on and off, configuration, pickling, fallback and strict mode."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr
from zarr.codecs import ShardingCodec

import zkernels
from zkernels.errors import UnsupportedError

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


def test_enable_disable_and_scope():
    assert zarr.config.get("codec_pipeline.path") == DEFAULT
    zkernels.enable()
    try:
        assert zarr.config.get("codec_pipeline.path") == "zkernels.KernelCodecPipeline"
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="i4")
        assert isinstance(arr.async_array.codec_pipeline, zkernels.KernelCodecPipeline)
        assert zkernels.explain(arr) == "accelerated by zkernels"
    finally:
        zkernels.disable()
    assert zarr.config.get("codec_pipeline.path") == DEFAULT
    with zkernels.enabled(threads=2):
        assert zarr.config.get("codec_pipeline.path") == "zkernels.KernelCodecPipeline"
        assert zarr.config.get("codec_pipeline.zkernels.threads") == 2
    assert zarr.config.get("codec_pipeline.path") == DEFAULT


def test_config_path_and_env(monkeypatch):
    with zarr.config.set({"codec_pipeline.path": "zkernels.KernelCodecPipeline"}):
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="i4")
        assert type(arr.async_array.codec_pipeline) is zkernels.KernelCodecPipeline


def test_explain_without_zkernels():
    arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="i4")
    assert "not using zkernels" in zkernels.explain(arr)


def test_bad_option_is_a_clear_error():
    with zkernels.enabled(thread=2):  # typo
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="i4")
        with pytest.raises(ValueError, match="unknown zkernels option"):
            arr[:]


@pytest.mark.parametrize(
    "option,match",
    [({"piece_bytes": -1}, "piece_bytes must be >= 0"), ({"threads": 0}, "threads must be >= 1"),
     ({"coalesce_max_bytes": 0}, "coalesce_max_bytes >= 1")],
)
def test_bad_option_value_is_a_clear_error(option, match):
    with zkernels.enabled(**option):
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="i4")
        with pytest.raises(ValueError, match=match):
            arr[:]


def test_pickle_round_trip():
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(20, 20), chunks=(10, 10), shards=(20, 20), dtype="f4")
        arr[:] = np.arange(400, dtype="f4").reshape(20, 20)
        pipe = arr.async_array.codec_pipeline
        again = pickle.loads(pickle.dumps(pipe))
        assert again == pipe and again.accelerated
        arr2 = pickle.loads(pickle.dumps(arr))
        assert isinstance(arr2.async_array.codec_pipeline, zkernels.KernelCodecPipeline)
        np.testing.assert_array_equal(arr2[:], arr[:])


def test_pipelines_for_same_array_compare_equal():
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        a = zarr.create_array(store, shape=(8,), chunks=(4,), dtype="i2")
        b = zarr.open_array(store)
        assert a.async_array.codec_pipeline == b.async_array.codec_pipeline


def test_fallback_reason_and_strict():
    codec = ShardingCodec(chunk_shape=(4,), codecs=[ShardingCodec(chunk_shape=(2,))])
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(8,), chunks=(8,), dtype="i4", serializer=codec,
                                compressors=None)
        arr[:] = np.arange(8)
        assert "nested sharding" in zkernels.explain(arr)
        np.testing.assert_array_equal(arr[:], np.arange(8))
    with zkernels.enabled(strict=True):
        arr = zarr.open_array(store)
        with pytest.raises(UnsupportedError, match="nested sharding"):
            arr[:]


def test_from_codecs_bare_list_works():
    from zarr.codecs import BytesCodec, ZstdCodec

    pipe = zkernels.KernelCodecPipeline.from_codecs([BytesCodec(), ZstdCodec()])
    assert pipe.accelerated
