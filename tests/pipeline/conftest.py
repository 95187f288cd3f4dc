"""Differential-test harness: run the same writes and reads with zarr's default pipeline and with
zkernels' on twin stores, then require equal stored bytes and equal values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.core.sync import sync

import zkernels

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
ZK = "zkernels.KernelCodecPipeline"
ENGINES = (DEFAULT, ZK)


def _make_store(kind: str, tmp_path, name: str):
    if kind == "memory":
        return zarr.storage.MemoryStore()
    if kind == "local":
        return zarr.storage.LocalStore(tmp_path / f"{name}.zarr")
    if kind == "zip":
        return zarr.storage.ZipStore(tmp_path / f"{name}.zip", mode="w")
    if kind == "fsspec":
        return zarr.storage.FsspecStore.from_url(f"memory://{tmp_path.name}/{name}")
    raise ValueError(kind)


async def _items(store) -> dict[str, bytes]:
    out = {}
    proto = zarr.core.buffer.default_buffer_prototype()
    async for key in store.list():
        buf = await store.get(key, prototype=proto)
        out[key] = None if buf is None else buf.to_bytes()
    return out


def store_items(store) -> dict[str, bytes]:
    return sync(_items(store))


class Twin:
    """One array per engine, each in its own store of the same kind, written identically."""

    def __init__(self, kind: str, tmp_path, create: dict[str, Any], accelerated: bool = True) -> None:
        self.stores = {e: _make_store(kind, tmp_path, f"{kind}-{i}") for i, e in enumerate(ENGINES)}
        self.arrays = {}
        for e in ENGINES:
            with zarr.config.set({"codec_pipeline.path": e}):
                self.arrays[e] = zarr.create_array(store=self.stores[e], **create)
        pipe = self.arrays[ZK].async_array.codec_pipeline
        assert type(pipe).__name__ == "KernelCodecPipeline"
        # the differential tests must exercise zkernels' own paths, not its fallback
        assert pipe.accelerated == accelerated, pipe.fallback_reason

    def apply(self, fn: Callable[[zarr.Array], Any]) -> dict[str, Any]:
        """Run ``fn`` on each engine's array; return results (or the exception type raised)."""
        out = {}
        for e, arr in self.arrays.items():
            try:
                out[e] = fn(arr)
            except Exception as exc:  # compared between engines
                out[e] = exc
        return out

    def write(self, selection, value, how: str = "basic") -> bool:
        """Write with both engines; True if both raised (then stored states are not compared:
        an aborted zarr write leaves some shards written, in an order nobody promises)."""
        def do(arr):
            if how == "basic":
                arr[selection] = value
            elif how == "oindex":
                arr.oindex[selection] = value
            elif how == "vindex":
                arr.vindex[selection] = value
            elif how == "blocks":
                arr.blocks[selection] = value
            else:
                raise ValueError(how)

        res = self.apply(do)
        errs = {e: r for e, r in res.items() if isinstance(r, Exception)}
        if errs:
            assert set(errs) == set(ENGINES), f"only some engines raised: {errs}"
            assert type(errs[DEFAULT]) is type(errs[ZK]) or isinstance(errs[ZK], ValueError), errs
            return True
        return False

    def check_stored(self) -> None:
        got = {e: store_items(self.stores[e]) for e in ENGINES}
        a, b = got[DEFAULT], got[ZK]
        assert sorted(a) == sorted(b), f"keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            assert a[k] == b[k], f"stored bytes differ at {k!r} ({len(a[k])} vs {len(b[k])} bytes)"

    def check_read(self, selection=slice(None), how: str = "basic") -> np.ndarray:
        """Read with both engines from both stores (cross-reading) and compare all four."""
        results = []
        for store_engine in ENGINES:
            for read_engine in ENGINES:
                with zarr.config.set({"codec_pipeline.path": read_engine}):
                    arr = zarr.open_array(self.stores[store_engine], mode="r+")
                try:
                    got = _read(arr, selection, how)
                except Exception as exc:  # zarr's own limits: both engines must agree on them
                    got = exc
                results.append(((store_engine, read_engine), got))
        (_, ref) = results[0]
        for label, got in results[1:]:
            if isinstance(ref, Exception) or isinstance(got, Exception):
                assert type(ref) is type(got), (label, ref, got)
            else:
                assert_same(ref, got, label)
        return ref

    def close(self) -> None:
        for s in self.stores.values():
            if isinstance(s, zarr.storage.ZipStore):
                s.close()


def _read(arr, selection, how):
    if how == "basic":
        return arr[selection]
    if how == "oindex":
        return arr.oindex[selection]
    if how == "vindex":
        return arr.vindex[selection]
    if how == "blocks":
        return arr.blocks[selection]
    if how == "fields":
        return arr.get_basic_selection(Ellipsis, fields=selection)
    raise ValueError(how)


def assert_same(ref, got, label=None) -> None:
    ref_a, got_a = np.asarray(ref), np.asarray(got)
    assert type(ref) is type(got) or np.isscalar(ref) == np.isscalar(got), (label, type(ref), type(got))
    assert ref_a.dtype == got_a.dtype, (label, ref_a.dtype, got_a.dtype)
    assert ref_a.shape == got_a.shape, (label, ref_a.shape, got_a.shape)
    if ref_a.dtype.kind in "fc":
        np.testing.assert_array_equal(ref_a, got_a, err_msg=str(label))
        # bitwise too: -0.0 vs 0.0 and NaN payloads must survive
        assert ref_a.tobytes() == got_a.tobytes(), label
    else:
        assert ref_a.tobytes() == got_a.tobytes(), label


@pytest.fixture(autouse=True)
def _fixed_gzip_mtime(monkeypatch):
    """numcodecs' GZip stamps the current time into each chunk's header, so two identical writes
    a second apart differ. Pin gzip's clock (only gzip's) so stored bytes can be compared."""
    import gzip
    import types

    monkeypatch.setattr(gzip, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))


@pytest.fixture
def twin(tmp_path):
    made = []

    def factory(kind: str = "memory", accelerated: bool = True, **create) -> Twin:
        t = Twin(kind, tmp_path, create, accelerated)
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


def sample_data(shape, dtype, seed=0, fill=None, empty_fraction=0.3, chunks=None):
    """Deterministic data of ``dtype``; some regions left equal to ``fill`` (empty chunks)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if dtype.kind == "b":
        data = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -1000), min(info.max, 1000)
        data = rng.integers(lo, hi, n, endpoint=True).astype(dtype)
    elif dtype.kind == "f":
        data = (rng.standard_normal(n) * 100).astype(dtype)
    elif dtype.kind == "c":
        data = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    elif dtype.kind == "M":
        data = rng.integers(0, 10**9, n).astype(dtype)
    elif dtype.kind == "V" and dtype.names:
        data = np.zeros(n, dtype=dtype)
        for name in dtype.names:
            sub = dtype.fields[name][0]
            data[name] = sample_data((n,), sub, seed + 1, empty_fraction=0)
    else:
        data = np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).copy()
    data = data.reshape(shape)
    if fill is not None and chunks is not None and data.size:
        # blank out a deterministic subset of chunk-sized blocks
        grid = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
        for corner in np.ndindex(*[len(g) for g in grid]):
            if rng.random() < empty_fraction:
                sl = tuple(
                    slice(g[i], g[i] + c) for g, i, c in zip(grid, corner, chunks, strict=True)
                )
                data[sl] = fill
    return data


# -- sharded arrays in local files, written by zarr's own pipeline (test_pieces, test_small_reads)

LOCAL_COMPRESSORS = {
    "none": [],
    "zstd": [ZstdCodec(level=1)],
    "blosc": [BloscCodec(cname="lz4")],
    "crc32c+zstd": [ZstdCodec(level=1), Crc32cCodec()],
}


# hypothesis strategies for create_local_sharded's layout arguments: ``@given(**LOCAL_LAYOUTS)``
LOCAL_LAYOUTS = {
    "comp": st.sampled_from(list(LOCAL_COMPRESSORS)),
    "dtype": st.sampled_from(["u1", "<i2", ">u4", "<f8"]),
    "endian": st.sampled_from(["little", "big"]),
    "index_location": st.sampled_from(["start", "end"]),
    "wec": st.booleans(),
}


def create_local_sharded(path, shape, shard, inner, dtype, comp, *, endian="little",
                         index_location="end", wec=False, fill=3):
    """A sharded array in a LocalStore at ``path``, its inner chunks through ``comp`` (a key of
    ``LOCAL_COMPRESSORS``), created with zarr's default pipeline."""
    serializer = ShardingCodec(
        chunk_shape=inner, codecs=[BytesCodec(endian=endian), *LOCAL_COMPRESSORS[comp]],
        index_location=index_location,
    )
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        return zarr.create_array(
            zarr.storage.LocalStore(path), shape=shape, chunks=shard, dtype=dtype,
            serializer=serializer, compressors=None, fill_value=fill,
            config={"write_empty_chunks": wec},
        )


def read_local(path, selection=Ellipsis, **options):
    """``arr[selection]`` of the array at ``path`` through zkernels with ``options``."""
    with zkernels.enabled(**options):
        arr = zarr.open_array(zarr.storage.LocalStore(path), mode="r")
        assert arr.async_array.codec_pipeline.accelerated
        return arr[selection]


@pytest.fixture
def h():
    """The harness helpers, for test modules (importlib mode: they cannot import conftest)."""
    import types

    return types.SimpleNamespace(
        sample_data=sample_data,
        assert_same=assert_same,
        store_items=store_items,
        DEFAULT=DEFAULT,
        ZK=ZK,
        ENGINES=ENGINES,
    )
