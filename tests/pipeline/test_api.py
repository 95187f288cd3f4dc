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
    [({"piece_bytes": -1}, "piece_bytes must be an integer >= 0"),
     ({"threads": 0}, "threads must be an integer >= 1"),
     ({"coalesce_max_bytes": 0}, "coalesce_max_bytes must be an integer >= 1"),
     ({"threads": 2.7}, "threads must be an integer"),
     ({"inline_bytes": -5}, "inline_bytes must be an integer >= 0"),
     ({"inline_bytes": "64k"}, "inline_bytes must be an integer"),
     ({"coalesce_max_gap_bytes": None}, "coalesce_max_gap_bytes must be an integer"),
     ({"piece_bytes": True}, "piece_bytes must be an integer"),
     # a mistyped switch must not turn a check off
     ({"validate_checksums": "ture"}, "validate_checksums must be true or false"),
     ({"strict": "enabled"}, "strict must be true or false"),
     ({"swap_writes": 2}, "swap_writes must be true or false"),
     ({"dense_path": None}, "dense_path must be true or false")],
)
def test_bad_option_value_is_a_clear_error(option, match):
    with zkernels.enabled(**option):
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,), dtype="i4")
        with pytest.raises(ValueError, match=match):
            arr[:]


@pytest.mark.parametrize("value,want", [
    (True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False),
    (" YES ", True), ("no", False), ("on", True), ("off", False), ("1", True), ("0", False),
    (np.True_, True), (np.int64(0), False),
])
@pytest.mark.parametrize("threads", ["3", np.int64(3), 3])
def test_switch_and_number_values(value, want, threads):
    """Switches take bools (numpy's too), 0/1 and the usual words; numbers take ints (numpy's
    too) and their digits (environment variables are strings)."""
    from zkernels.config import options

    with zkernels.enabled(validate_checksums=value, threads=threads, piece_bytes="0"):
        opts = options()
    assert opts.validate_checksums is want and opts.threads == 3 and opts.piece_bytes == 0


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


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_explain_judges_the_data_type_as_reads_do(zarr_format):
    # the codec list alone is ours; variable-length strings are not, and explain must say what a
    # read will do (strict mode's refusal is the witness)
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(4,), chunks=(2,), dtype=str, zarr_format=zarr_format)
        arr[:] = np.array(["a", "bb", "", "ccc"])
        said = zkernels.explain(arr)
        assert said.startswith("delegated to zarr's default pipeline:"), said
    with zkernels.enabled(strict=True):
        with pytest.raises(UnsupportedError) as err:
            zarr.open_array(store)[:]
    assert said.split(": ", 1)[1] in str(err.value)
    with zkernels.enabled():
        fixed = zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), chunks=(2,),
                                  dtype="U3", zarr_format=zarr_format)
        assert zkernels.explain(fixed) == "accelerated by zkernels"
        fixed[:] = np.array(["a", "bb", "", "ccc"])
    with zkernels.enabled(strict=True):
        np.testing.assert_array_equal(fixed[:], ["a", "bb", "", "ccc"])


def test_from_codecs_bare_list_works():
    from zarr.codecs import BytesCodec, ZstdCodec

    pipe = zkernels.KernelCodecPipeline.from_codecs([BytesCodec(), ZstdCodec()])
    assert pipe.accelerated


def test_options_follow_config_changes_in_place():
    # zarr.config.set changes its dicts in place: the memo of the parsed options must notice
    from zkernels.config import options

    base = options()
    with zarr.config.set({"codec_pipeline.zkernels.threads": 3}):
        assert options().threads == 3
        with zarr.config.set({"codec_pipeline.zkernels.inline_bytes": 5}):
            assert (options().threads, options().inline_bytes) == (3, 5)
        assert (options().threads, options().inline_bytes) == (3, base.inline_bytes)
    assert options() == base


@pytest.mark.parametrize("shards", [(8, 8), None])
def test_bound_chain_follows_each_spec(shards):
    # the pipeline keeps the chain bound to the last spec it saw: a spec that differs in any
    # part (fill value, its sign bit, config, chunk shape, prototype) must get its own chain
    from dataclasses import replace

    from zarr.core.array_spec import ArrayConfig
    from zarr.core.buffer import default_buffer_prototype, numpy_buffer_prototype

    with zkernels.enabled():
        arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(8, 8), chunks=(4, 4),
                                shards=shards, dtype="f8", fill_value=0.0)
    pipe = arr.async_array.codec_pipeline
    spec = arr.metadata.get_chunk_spec((0, 0), arr.async_array.config,
                                       prototype=default_buffer_prototype())
    first = pipe._bind(spec)
    assert pipe._bind(replace(spec)) is first  # zarr's next spec: the same parts
    cases = [
        (replace(spec, fill_value=np.float64(7.0)), lambda b: b.fill_value == 7.0),
        (replace(spec, fill_value=np.float64(-0.0)), lambda b: np.signbit(b.fill_value)),
        (replace(spec, config=ArrayConfig(order="C", write_empty_chunks=True)),
         lambda b: b.write_empty_chunks),
        (replace(spec, prototype=numpy_buffer_prototype()),
         lambda b: b.spec.prototype == numpy_buffer_prototype()),
    ]
    if shards is None:  # a shard's inner chunks keep their shape; a chunk's is the spec's
        cases.append((replace(spec, shape=(2, 4)), lambda b: b.shape == (2, 4)))
    for other, check in cases:
        assert check(pipe._bind(other)), other
        again = pipe._bind(spec)
        assert again.fill_value == 0.0 and not np.signbit(again.fill_value)
        assert not again.write_empty_chunks and again.shape == (4, 4)
