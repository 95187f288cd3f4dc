"""What ``read`` returns, against zarr's default pipeline, on the installed zarr version.

zarr >= 3.2: ``CodecPipeline.read`` returns one ``GetResult`` per batch item, ``"missing"`` where
the chunk (for a sharded array, the shard) is not in the store; arrays opened with
``array.read_missing_chunks`` off raise ``ChunkNotFoundError`` for those. zarr 3.1: None. Each
test here runs on both; the version-specific expectations are asserted for the version installed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ShardingCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import zkernels
from zkernels import _compat

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
ZK = "zkernels.KernelCodecPipeline"
ENGINES = (DEFAULT, ZK)
NEW = _compat.ZARR_VERSION >= (3, 2)

LAYOUTS = {
    "zstd": dict(chunks=(4, 4)),
    "raw": dict(chunks=(4, 4), compressors=None),
    "sharded-end": dict(chunks=(2, 2), shards=(4, 4)),
    "sharded-start": dict(
        chunks=(4, 4),
        serializer=ShardingCodec(chunk_shape=(2, 2), codecs=[BytesCodec(), ZstdCodec(level=1)],
                                 index_location="start"),
        compressors=None,
    ),
}

# basic whole-chunk (whole shard), partial, an int (drop_axes), orthogonal and vindex selections
SELECTIONS = [
    ("basic", Ellipsis),
    ("basic", (slice(1, 7), slice(1, 3))),
    ("basic", (slice(4, 6), slice(2, 4))),  # a written shard, only empty inner chunks
    ("basic", (5, slice(None))),
    ("oindex", ([0, 5, 7], slice(None))),
    ("vindex", ([0, 5, 7, 7], [1, 2, 6, 0])),
]


class _Recorder:
    """Stands in for an array's pipeline; keeps what each ``read`` returned."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.results: list = []

    async def read(self, batch_info, out, drop_axes=()):
        got = await self.inner.read(batch_info, out, drop_axes)
        self.results.append(got)
        return got

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _open_recorded(store, engine):
    with zarr.config.set({"codec_pipeline.path": engine}):
        arr = zarr.open_array(store, mode="r")
    rec = _Recorder(arr.async_array.codec_pipeline)
    object.__setattr__(arr.async_array, "codec_pipeline", rec)
    return arr, rec


def _read(arr, how, sel):
    return {"basic": arr.__getitem__, "oindex": arr.oindex.__getitem__,
            "vindex": arr.vindex.__getitem__}[how](sel)


def _make_store(kind, tmp_path, name):
    if kind == "memory":
        return zarr.storage.MemoryStore()
    if kind == "local":
        return zarr.storage.LocalStore(tmp_path / f"{name}.zarr")
    return zarr.storage.FsspecStore.from_url(f"memory://{tmp_path.name}/{name}")


def _expected_full_read(arr) -> list[dict[str, str]]:
    """One result per stored object of the grid (C order), from the store's own listing."""
    store = arr.store_path.store
    keys = set(sync(_list(store)))
    meta = arr.metadata
    grid = [-(-s // c) for s, c in zip(arr.shape, arr.shards or arr.chunks, strict=True)]
    return [
        {"status": "present" if meta.encode_chunk_key(c) in keys else "missing"}
        for c in itertools.product(*map(range, grid))
    ]


async def _list(store):
    return [k async for k in store.list()]


@pytest.mark.parametrize("kind", ["memory", "local", "fsspec"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_read_results_match_zarr(tmp_path, layout, kind):
    store = _make_store(kind, tmp_path, layout)
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        arr = zarr.create_array(store, shape=(8, 8), dtype="int32", fill_value=-1,
                                **LAYOUTS[layout])
        arr[0:4, 0:4] = 1  # a whole chunk / shard
        arr[4:6, 0:2] = 2  # one inner chunk of a shard (a whole chunk unsharded)
    # chunk/shard (0, 1) and (1, 1) are never written: missing
    seen = {}
    for engine in ENGINES:
        arr, rec = _open_recorded(store, engine)
        values = [_read(arr, how, sel) for how, sel in SELECTIONS]
        seen[engine] = (values, rec.results)
        if NEW:
            assert rec.results[0] == tuple(_expected_full_read(arr)), engine
            assert all(r["status"] == "missing" for r in rec.results[0][1::2])
        else:
            assert rec.results == [None] * len(SELECTIONS)
    (ref_values, ref_results), (values, results) = seen[DEFAULT], seen[ZK]
    for a, b in zip(ref_values, values, strict=True):
        np.testing.assert_array_equal(a, b)
    assert results == ref_results
    if NEW:
        for r in results:
            assert type(r) is tuple and all(type(x) is dict for x in r)
            assert {x["status"] for x in r} <= {"present", "missing"}
        assert {x["status"] for r in results for x in r} == {"present", "missing"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_direct_read_of_present_and_missing(layout):
    """pipeline.read with hand-made batches (as zarr's array builds them), and an empty one."""
    store = zarr.storage.MemoryStore()
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        arr = zarr.create_array(store, shape=(8, 8), dtype="int32", fill_value=-1,
                                **LAYOUTS[layout])
        arr[0:4, 0:4] = np.arange(16).reshape(4, 4)
    storage = arr.shards or arr.chunks
    spec = _compat.chunk_spec(arr.metadata, storage, arr.async_array.config,
                              default_buffer_prototype())
    path = arr.async_array.store_path
    proto = default_buffer_prototype()
    batches = {
        "present": [(0, 0)],
        "missing": [(1, 1)],
        "both": [(1, 0), (0, 0), (0, 1)],
    }
    for name, coords in batches.items():
        got = {}
        for engine in ENGINES:
            with zarr.config.set({"codec_pipeline.path": engine}):
                pipe = zarr.open_array(store, mode="r").async_array.codec_pipeline
            out = proto.nd_buffer.empty(shape=(4, 4 * len(coords)), dtype=np.dtype("int32"))
            items = [
                (path / arr.metadata.encode_chunk_key(c), spec, (slice(0, 4), slice(0, 4)),
                 (slice(0, 4), slice(4 * i, 4 * i + 4)), True)
                for i, c in enumerate(coords)
            ]
            got[engine] = (sync(pipe.read(items, out)), out.as_ndarray_like().copy())
            assert sync(pipe.read([], out)) == (() if NEW else None)
        np.testing.assert_array_equal(got[DEFAULT][1], got[ZK][1])
        assert got[ZK][0] == got[DEFAULT][0], name
        if NEW:
            want = tuple({"status": "present" if c == (0, 0) else "missing"} for c in coords)
            assert got[ZK][0] == want, name
        else:
            assert got[ZK][0] is None


@pytest.mark.parametrize("layout", ["zstd", "sharded-end"])
def test_read_missing_chunks_off(layout):
    """zarr >= 3.2 raises for missing chunks when ``array.read_missing_chunks`` is off; zarr 3.1
    has no such setting and reads the fill value. zkernels must do the same either way."""
    store = zarr.storage.MemoryStore()
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        arr = zarr.create_array(store, shape=(8, 8), dtype="int32", fill_value=-1,
                                **LAYOUTS[layout])
        arr[0:4, :] = 3
    outcome = {}
    for engine in ENGINES:
        with zarr.config.set({"codec_pipeline.path": engine, "array.read_missing_chunks": False}):
            arr = zarr.open_array(store, mode="r")
        np.testing.assert_array_equal(arr[0:4, :], 3)  # only present chunks: fine
        try:
            outcome[engine] = arr[:]
        except Exception as exc:
            outcome[engine] = exc
    ref, got = outcome[DEFAULT], outcome[ZK]
    if NEW:
        assert isinstance(ref, zarr.errors.ChunkNotFoundError)
        assert type(got) is type(ref)
        # the same chunks named (the message names the store, which differs by instance)
        assert str(got).splitlines()[2:] == str(ref).splitlines()[2:]
        assert "2 chunk(s) not found" in str(got)
    else:
        np.testing.assert_array_equal(ref, got)
        assert (got[4:] == -1).all()


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")
def test_fallback_passes_zarrs_result_through():
    codec = ShardingCodec(chunk_shape=(4,), codecs=[ShardingCodec(chunk_shape=(2,))])
    store = zarr.storage.MemoryStore()
    with zkernels.enabled():
        arr = zarr.create_array(store, shape=(16,), chunks=(8,), dtype="i4", serializer=codec,
                                compressors=None, fill_value=0)
        arr[:8] = np.arange(8)
    results = {}
    for engine in ENGINES:
        arr, rec = _open_recorded(store, engine)
        if engine == ZK:
            assert not rec.inner.accelerated
        np.testing.assert_array_equal(arr[:], np.r_[np.arange(8), np.zeros(8, "i4")])
        results[engine] = rec.results
    assert results[ZK] == results[DEFAULT]
    if NEW:
        assert results[ZK] == [({"status": "present"}, {"status": "missing"})]
    else:
        assert results[ZK] == [None]


def test_compat_detection_matches_installed_zarr():
    from zarr.abc import codec

    assert _compat.READ_RESULTS == hasattr(codec, "GetResult") == NEW
    assert _compat.read_results([False, True], 2) == (
        ({"status": "present"}, {"status": "missing"}) if NEW else None
    )
    grid = _compat.regular_grid((8, 6), (4, 3))
    from zarr.core.indexing import BasicIndexer

    got = [(c, cs, os) for c, cs, os, _ in BasicIndexer((slice(2, 6), slice(1, 5)), (8, 6), grid)]
    assert [c for c, _, _ in got] == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.skipif(not NEW, reason="rectilinear chunk grids are new in zarr 3.2")
@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")
def test_rectilinear_grid(sharded):
    """Chunks (or shards) of different shapes in one batch: same bytes and values as zarr."""
    data = np.arange(24 * 12, dtype="i4").reshape(24, 12)
    grid = dict(chunks=(4, 3), shards=[[8, 16], [6, 6]]) if sharded else dict(
        chunks=[[10, 4, 10], [4, 8]])
    stored, reads = {}, {}
    for engine in ENGINES:
        with zarr.config.set({"codec_pipeline.path": engine, "array.rectilinear_chunks": True}):
            store = zarr.storage.MemoryStore()
            arr = zarr.create_array(store, shape=data.shape, dtype="i4", fill_value=0, **grid)
            arr[:] = data
            arr[3:17, 5:9] = -1
            arr[20:, :] = 0
            arr, rec = _open_recorded(store, engine)
            reads[engine] = ([arr[:], arr[2:19, 1:7], arr.oindex[[1, 5, 22], :]], rec.results)
        stored[engine] = {k: v.to_bytes() for k, v in sync(_items(store)).items()}
    assert stored[ZK] == stored[DEFAULT]
    for a, b in zip(reads[DEFAULT][0], reads[ZK][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert reads[ZK][1] == reads[DEFAULT][1]


async def _items(store):
    proto = default_buffer_prototype()
    return {k: await store.get(k, prototype=proto) async for k in store.list()}


def _evolve_cases():
    from zarr.codecs import TransposeCodec

    cases = {
        "transpose-bytes-zstd": [TransposeCodec(order=(1, 0)), BytesCodec(endian=None),
                                 ZstdCodec(level=1)],
        "sharded": [ShardingCodec(chunk_shape=(2, 2))],
    }
    try:  # zarr >= 3.2: a dtype-changing array->array codec (int8 -> int16 needs an endian)
        from zarr.codecs.cast_value import CastValue
    except ImportError:
        pass
    else:
        cases["cast_value"] = [CastValue(data_type="int16"), BytesCodec(endian=None)]
    return cases


@pytest.mark.parametrize("case", list(_evolve_cases()))
def test_evolve_from_array_spec_is_zarrs(case):
    """Evolution against an array spec gives zarr's codecs (3.2.1 threads the spec through
    the array->array codecs), or zarr's error."""
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.codec_pipeline import BatchedCodecPipeline
    from zarr.core.dtype import parse_dtype

    spec = ArraySpec(shape=(4, 4), dtype=parse_dtype("int8", zarr_format=3), fill_value=0,
                     config=ArrayConfig.from_dict({}), prototype=default_buffer_prototype())
    codecs = _evolve_cases()[case]

    def outcome(fn):
        try:
            return list(fn())
        except Exception as exc:  # noqa: BLE001 - compared below
            return type(exc)

    got = outcome(lambda: zkernels.KernelCodecPipeline.from_codecs(codecs)
                  .evolve_from_array_spec(spec))
    if NEW:
        want = outcome(lambda: BatchedCodecPipeline.from_codecs(codecs)
                       .evolve_from_array_spec(spec))
    else:  # zarr 3.1's pipeline evolve fails on its own generator; its metadata evolves each
        want = [c.evolve_from_array_spec(spec) for c in codecs]  # codec against the array spec
    assert got == want
    if case != "cast_value":
        assert isinstance(got, list) and len(got) == len(codecs)
