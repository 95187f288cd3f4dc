"""Direct chunk IO: :class:`ChunkReader`, streaming readahead, and a functional chunk API.

Code that walks a dataset chunk by chunk pays zarr's per-call cost on every ``arr[...]``
(selection handling, an event-loop hop, a codec pipeline built for general selections). This
module goes straight from (array, chunk coordinates) to a numpy array on zkernels' kernels:

- :class:`ChunkReader` wraps an open ``zarr.Array`` and reads single chunks
  (:meth:`~ChunkReader.read_chunk`), whole shards (:meth:`~ChunkReader.read_shard`), boxes
  (:meth:`~ChunkReader.read_region`), or streams chunks in the order asked with IO and decoding
  running ahead of the caller (:meth:`~ChunkReader.iter_chunks`).
- :func:`read_chunk` and :func:`write_chunk` serve code holding a store and a path (and perhaps the
  metadata) rather than an Array.

Layout of the work
------------------
Stores with a synchronous API are read synchronously (``MemoryStore.get_sync``; a ``LocalStore``'s
files with ``open``/``pread``, the bytes its ``get_sync`` returns at a fraction of the cost): in the
calling thread for single reads, on the reader's IO threads (at most ``io_concurrency``, daemon
threads named ``zkernels-reader-io-*`` that exit when idle) for streams and regions. Other stores
are read through their async API on zarr's own IO event loop (the long-lived daemon thread
``zarr_io``), ``io_concurrency`` requests at a time; fsspec filesystems bind their sessions to the
loop they were first used on, which for an open array is zarr's, so no second loop is started.
Decoding runs on zkernels' shared worker pool, at most ``decode_threads`` of this reader's batches
at once. The fetch and decode logic is written once as a generator that yields the byte ranges it
needs (``_Source._unit``); a synchronous and an asynchronous driver serve it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
import os
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import (
    FIRST_EXCEPTION,
    CancelledError,
    Future,
    InvalidStateError,
)
from concurrent.futures import wait as _wait_futures
from dataclasses import replace
from math import prod
from typing import Any, Self

import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest, Store
from zarr.core.array import AsyncArray, parse_array_metadata
from zarr.core.array_spec import ArrayConfig, parse_array_config
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata
from zarr.errors import ArrayNotFoundError
from zarr.storage import LocalStore, MemoryStore, StorePath

from zkernels import _executor
from zkernels._coalesce import coalesce_ranges
from zkernels._codecs import BoundChain, Unsupported
from zkernels._compat import chunk_spec
from zkernels._localio import LocalFile, read_file, set_sync
from zkernels._scatter import scatter
from zkernels.config import Options, options
from zkernels.errors import CorruptChunkError, ZKernelsError
from zkernels.pipeline import (
    _is_empty_chunk,
    _make_plan,
    _merge,
    _ShardPlan,
    _ShardWrite,
)

try:
    from zarr.codecs._v2 import V2Codec
except ImportError:  # pragma: no cover
    V2Codec = None  # type: ignore[assignment,misc]

__all__ = ["ChunkReader", "ReaderClosedError", "read_chunk", "write_chunk"]

_SYNC_STORES = (LocalStore, MemoryStore)
_PROTO = default_buffer_prototype()
_EMPTY = 2**64 - 1
_MISS = object()
_END = object()
# chunks admitted ahead of the consumer, at most (a byte budget of tiny chunks would be many)
_MAX_AHEAD = 1 << 16
# decoded bytes per decode batch handed to the pool (smaller batches: more hops)
_BATCH_BYTES = 1 << 18
# a read_region at most this large runs inline on a synchronous store
_INLINE_BYTES = 1 << 18
_THREAD_PREFIX = "zkernels-reader-io"


class ReaderClosedError(ZKernelsError):
    """A :class:`ChunkReader` was used after :meth:`ChunkReader.close` (or closed mid-stream)."""


# ---------------------------------------------------------------------------------------------
# small helpers


def _ceildiv(a: int, b: int) -> int:
    return -(-a // b)


def _join(path: str, key: str) -> str:
    return f"{path}/{key}" if path else key


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


def _place(out: np.ndarray, dst: tuple[slice, ...], chunk: np.ndarray, src: tuple[slice, ...]):
    """``out[dst] = chunk[src]``: the scatter kernel (GIL released) when dtypes agree."""
    if chunk.dtype == out.dtype:
        scatter(chunk, src, out, dst)
    else:  # stored byte order differs, or a cast: numpy converts
        out[dst] = chunk[src]


def _as_u8(buf: Any) -> np.ndarray | None:
    return None if buf is None else buf.as_numpy_array()


_HAS_PREAD = hasattr(os, "pread")


def _io_loop() -> asyncio.AbstractEventLoop:
    """zarr's long-lived IO loop (a daemon thread), started if need be."""
    from zarr.core import sync as zsync

    return zsync._get_loop()


def _blocking_loop() -> asyncio.AbstractEventLoop:
    """The IO loop, for a caller about to block on it (which must not be the loop's thread)."""
    from zarr.core import sync as zsync

    loop = zsync._get_loop()
    if threading.current_thread() is zsync.iothread[0]:
        raise RuntimeError(
            "zkernels.reader: a blocking read was called from zarr's own IO thread; it would "
            "wait for itself. Call it from another thread."
        )
    return loop


def _count(name: str, value: Any, minimum: int) -> int:
    """A whole number argument of at least ``minimum`` (not a bool, a float or a string)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def _with_note(exc: BaseException, where: str, doing: str = "reading") -> BaseException:
    """An IO error keeps its type; a note says which array, chunk and key it concerns."""
    if hasattr(exc, "add_note") and not isinstance(exc, CancelledError):
        exc.add_note(f"while {doing} {where}")
    return exc


# ---------------------------------------------------------------------------------------------
# the decoding machinery of one array (store independent, cached by the functional layer)


class _ArrayPlan:
    """Everything needed to fetch and decode chunks of one array, built once from its metadata.

    Immutable after construction and shared between threads and stores.
    """

    def __init__(self, metadata: Any, config: ArrayConfig, opts: Options) -> None:
        self.metadata = metadata
        self.shape = tuple(int(s) for s in metadata.shape)
        self.ndim = len(self.shape)
        v2 = metadata.zarr_format == 2
        zdtype = metadata.dtype if v2 else metadata.data_type
        self.dtype = np.dtype(zdtype.to_native_dtype())
        # zarr: v2 arrays take their memory order from the metadata, v3 from the config
        self.order = metadata.order if v2 else config.order
        if v2:
            config = replace(config, order=self.order)
        self.config = config
        self.validate = opts.validate_checksums
        self.max_gap = opts.coalesce_max_gap_bytes
        self.max_coalesced = opts.coalesce_max_bytes
        try:
            # v2: the chunks are the stored objects (zarr 3.2 deprecates v2 metadata.chunk_grid)
            grid = metadata.chunks if v2 else metadata.chunk_grid.chunk_shape
            self.storage_shape = tuple(int(c) for c in grid)
            self.chunk_shape = tuple(int(c) for c in metadata.chunks)
            shards = metadata.shards
        except (
            AttributeError,
            NotImplementedError,
        ) as exc:  # zarr >= 3.2: rectilinear chunk grids
            raise NotImplementedError(f"only regular chunk grids are supported: {exc}") from exc
        self.sharded = shards is not None
        self.grid_shape = tuple(map(_ceildiv, self.shape, self.chunk_shape))
        self.storage_grid_shape = tuple(map(_ceildiv, self.shape, self.storage_shape))
        self.spec = chunk_spec(metadata, self.storage_shape, config, _PROTO)
        codecs = (
            (V2Codec(filters=metadata.filters, compressor=metadata.compressor),)
            if v2
            else tuple(metadata.codecs)
        )
        self.fallback_reason: str | None = None
        self.shard_plan: _ShardPlan | None = None
        self.bound: BoundChain | None = None
        try:
            plan = _make_plan(codecs)
            if isinstance(plan, _ShardPlan):
                self.shard_plan = plan
                self.cps = tuple(
                    s // c for s, c in zip(self.storage_shape, plan.chunk_shape, strict=True)
                )
                self.n_inner = prod(self.cps)
                self.cps_strides = _c_strides(self.cps)
                self.index_nbytes = plan.index_nbytes(self.n_inner)
                self.index_range = plan.index_range(self.n_inner)
                self.bound = plan.inner.bind(replace(self.spec, shape=plan.chunk_shape))
            else:
                self.bound = plan.bind(self.spec)
        except Unsupported as exc:
            self.fallback_reason = str(exc)
        if self.bound is not None:
            self.fill_value = self.bound.fill_value
        else:
            from zarr.core.codec_pipeline import fill_value_or_default

            self.fill_value = fill_value_or_default(self.spec)

    @property
    def accelerated(self) -> bool:
        return self.fallback_reason is None

    # -- grids -------------------------------------------------------------------------------

    def norm_coords(self, coords: Any, grid: tuple[int, ...], what: str, name: str):
        if isinstance(coords, int | np.integer):
            coords = (coords,)
        try:
            t = tuple(operator.index(c) for c in coords)
            if any(isinstance(c, bool | np.bool_) for c in coords):
                raise TypeError
        except TypeError:
            raise TypeError(
                f"array {name!r}: {what} coordinates must be a tuple of ints, got {coords!r}"
            ) from None
        if len(t) != self.ndim:
            raise IndexError(
                f"array {name!r}: {what} coordinates {t} have {len(t)} dimension(s), the array "
                f"has {self.ndim}"
            )
        out = []
        for c, n in zip(t, grid, strict=True):
            if c < 0:
                c += n
            if not 0 <= c < n:
                raise IndexError(
                    f"array {name!r}: {what} coordinates {t} out of range for the {what} grid "
                    f"of shape {grid}"
                )
            out.append(c)
        return tuple(out)

    def region(self, coords: tuple[int, ...], cell: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(c * s, min((c + 1) * s, n))
            for c, s, n in zip(coords, cell, self.shape, strict=True)
        )

    def trimmed_shape(self, coords: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            min(s, n - c * s) for c, s, n in zip(coords, self.chunk_shape, self.shape, strict=True)
        )

    def nbytes_of(self, coords: tuple[int, ...]) -> int:
        return prod(self.trimmed_shape(coords)) * self.dtype.itemsize

    def split(self, coords: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(shard coords, inner coords within the shard) of a read-grid chunk."""
        shard, inner = [], []
        for c, k in zip(coords, self.cps, strict=True):
            q, r = divmod(c, k)
            shard.append(q)
            inner.append(r)
        return tuple(shard), tuple(inner)

    def inner_in_grid(self, shard: tuple[int, ...]) -> int:
        """How many of a shard's inner chunks lie (at least partly) inside the array."""
        return prod(
            min(k, g - s * k) for s, k, g in zip(shard, self.cps, self.grid_shape, strict=True)
        )

    # -- shard index -----------------------------------------------------------------------

    def parse_index(self, raw: np.ndarray, shard_nbytes: int | None) -> np.ndarray:
        return self.shard_plan.parse_index(raw, self.cps, shard_nbytes, self.validate)

    def index_from_suffix(self, raw: np.ndarray | None) -> np.ndarray | None:
        """The parsed index from the bytes of an index-only request (None: missing shard)."""
        if raw is None:
            return None
        return self.shard_plan.index_of_range(raw, self.cps, self.validate)

    def index_of_whole(self, shard: np.ndarray) -> np.ndarray:
        return self.shard_plan.index_of_shard(shard, self.cps, self.validate)

    # -- decode ----------------------------------------------------------------------------

    def decode(self, raw: np.ndarray | None) -> np.ndarray | None:
        """A whole decoded chunk (maybe read-only, maybe stored byte order), or None: missing."""
        if raw is None:
            return None
        return self.bound.decode(raw, self.validate)

    def new_out(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, dtype=self.dtype, order=self.order)


def _corrupt(exc: Exception, name: str, coords: tuple[int, ...], key: str) -> Exception:
    """Our error for a chunk that failed to decode, naming the array, the chunk and the key."""
    where = f"array {name!r}, chunk {coords}, key {key!r}"
    if isinstance(exc, ZKernelsError):
        err = type(exc)(f"{where}: {exc}")
    else:
        err = CorruptChunkError(f"{where}: could not decode: {type(exc).__name__}: {exc}")
    err.key = key
    return err


# ---------------------------------------------------------------------------------------------
# IO: one array in one store


class _IndexCache:
    """Parsed shard indexes by store key (None: the shard is missing), LRU, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        _LIVE_CACHES.add(self)

    def _after_fork(self) -> None:
        # in a forked child (one thread): a parent thread may have held the lock, mid-update
        self._lock = threading.Lock()
        self._items = OrderedDict()
        self._nbytes = 0

    @staticmethod
    def _size(value: np.ndarray | None) -> int:
        return 64 if value is None else value.nbytes + 64

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._items.get(key, _MISS)
            if value is not _MISS:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: np.ndarray | None) -> None:
        size = self._size(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, _MISS)
            if old is not _MISS:
                self._nbytes -= self._size(old)
            self._items[key] = value
            self._nbytes += size
            while self._nbytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= self._size(evicted)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def __len__(self) -> int:
        return len(self._items)


# A fetch "unit" is the IO for one storage key: (key, [(coords, inner_coords | None), ...],
# whole). Its generator yields lists of (key, byte_range) requests, receives the buffers (None:
# missing), and returns the raw bytes (or None) of each requested chunk, in order.
_Unit = tuple[str, list[tuple[tuple[int, ...], Any]], bool]
_Gen = Generator[list[tuple[str, Any]], list[Any], list[Any]]


class _FileGets:
    """``_Source.get`` for one already open local file (None: the key is missing)."""

    __slots__ = ("file",)

    def __init__(self, file: LocalFile | None) -> None:
        self.file = file

    def __call__(self, key: str, byte_range: Any = None) -> np.ndarray | None:
        return None if self.file is None else self.file.read(byte_range)

    def many(self, reqs: list[tuple[str, Any]]) -> list[np.ndarray | None]:
        """Each request's bytes; several ranges in one call that releases the GIL once
        (``LocalFile.read_ranges``, as the pipeline reads a shard's coalesced ranges)."""
        if self.file is not None and len(reqs) > 1 and all(
            type(r) is RangeByteRequest for _, r in reqs
        ):
            table = np.array([(r.start, r.end) for _, r in reqs], dtype=np.uint64)
            got = self.file.read_ranges(table)
            if got is not None:
                return got
        return [self(k, r) for k, r in reqs]


class _Source:
    """An :class:`_ArrayPlan` bound to a store and the array's path in it."""

    __slots__ = ("cache", "name", "path", "plan", "root", "store", "sync")

    def __init__(self, plan: _ArrayPlan, store: Store, path: str, cache: _IndexCache | None):
        self.plan = plan
        self.store = store
        self.path = path
        self.name = "/" + path
        self.sync = type(store) in _SYNC_STORES
        self.cache = cache
        # LocalStore: files read directly once the store is open (its get_sync opens it)
        self.root = str(store.root) if type(store) is LocalStore and _HAS_PREAD else None

    def key(self, storage_coords: tuple[int, ...]) -> str:
        return _join(self.path, self.plan.metadata.encode_chunk_key(storage_coords))

    # -- units -------------------------------------------------------------------------------

    def units(self, coords_list: Iterable[tuple[int, ...]]) -> list[_Unit]:
        """Group read-grid chunks by the store key that holds them."""
        plan = self.plan
        groups: dict[tuple[int, ...], list] = {}
        if plan.sharded:
            for c in coords_list:
                shard, inner = plan.split(c)
                groups.setdefault(shard, []).append((c, inner))
            out = []
            for shard, items in groups.items():
                whole = len({inner for _, inner in items}) == plan.inner_in_grid(shard)
                out.append((self.key(shard), items, whole))
            return out
        for c in coords_list:
            groups.setdefault(c, []).append((c, None))
        return [(self.key(c), items, True) for c, items in groups.items()]

    def _unit(self, unit: _Unit) -> _Gen:
        key, items, whole = unit
        plan = self.plan
        if not plan.sharded:
            (raw,) = yield [(key, None)]
            return [raw] * len(items)
        cache = self.cache
        index = cache.get(key) if cache is not None else _MISS
        if index is _MISS:
            if whole:
                (shard,) = yield [(key, None)]
                if shard is None:
                    if cache is not None:
                        cache.put(key, None)
                    return [None] * len(items)
                index = plan.index_of_whole(shard)
                if cache is not None:
                    cache.put(key, index)
                return self._slice_whole(shard, index, items)
            (raw,) = yield [(key, plan.index_range)]
            index = plan.index_from_suffix(raw)
            if cache is not None:
                cache.put(key, index)
        if index is None:
            return [None] * len(items)
        flat = index.reshape(-1, 2)
        strides = plan.cps_strides
        out: list[Any] = [None] * len(items)
        want_pos, offsets, lengths = [], [], []
        for pos, (_c, inner) in enumerate(items):
            off, nb = flat[sum(i * s for i, s in zip(inner, strides, strict=True))]
            off, nb = int(off), int(nb)
            if off == _EMPTY or nb == 0:
                continue
            want_pos.append(pos)
            offsets.append(off)
            lengths.append(nb)
        if not want_pos:
            return out
        cr = coalesce_ranges(
            offsets,
            lengths,
            max_gap_bytes=plan.max_gap,
            max_coalesced_bytes=plan.max_coalesced,
        )
        groups = cr.groups.tolist()
        datas = yield [(key, RangeByteRequest(a, b)) for a, b in groups]
        req_group = cr.request_group.tolist()
        req_offset = cr.request_offset.tolist()
        for i, pos in enumerate(want_pos):
            g = req_group[i]
            data = datas[g]
            start, stop = groups[g]
            if data is None or data.size < stop - start:
                got = 0 if data is None else data.size
                raise CorruptChunkError(
                    f"inner chunk {items[pos][1]} lies past the end of the shard: bytes "
                    f"[{start}, {stop}) requested, {got} returned"
                )
            s = req_offset[i]
            out[pos] = data[s : s + lengths[i]]
        return out

    def _slice_whole(self, shard: np.ndarray, index: np.ndarray, items) -> list[Any]:
        flat = self.plan.cps_strides
        table = index.reshape(-1, 2)
        out = []
        for _c, inner in items:
            off, nb = table[sum(i * s for i, s in zip(inner, flat, strict=True))]
            off, nb = int(off), int(nb)
            out.append(None if off == _EMPTY or nb == 0 else shard[off : off + nb])
        return out

    # -- drivers -----------------------------------------------------------------------------

    def _pread(self) -> bool:
        """Whether keys are local files read with ``pread`` (a LocalStore, once open)."""
        return self.root is not None and getattr(self.store, "_is_open", False)

    def get_sync(self, key: str, byte_range: Any = None) -> np.ndarray | None:
        if self._pread():
            return read_file(f"{self.root}/{key}", byte_range)
        return _as_u8(self.store.get_sync(key, prototype=_PROTO, byte_range=byte_range))

    async def get_async(self, key: str, byte_range: Any = None) -> np.ndarray | None:
        return _as_u8(await self.store.get(key, prototype=_PROTO, byte_range=byte_range))

    def fetch_sync(self, unit: _Unit) -> list[Any]:
        gen = self._unit(unit)
        f, get = None, self.get_sync
        if self._pread():
            # a unit is one key: its index and chunks from one open file (see read_one)
            f = LocalFile.open(f"{self.root}/{unit[0]}")
            get = _FileGets(f)
        try:
            reqs = next(gen)
            while True:
                reqs = gen.send(
                    get.many(reqs) if type(get) is _FileGets else [get(k, r) for k, r in reqs]
                )
        except StopIteration as stop:
            return stop.value
        finally:
            if f is not None:
                f.close()

    async def fetch_async(self, unit: _Unit) -> list[Any]:
        gen = self._unit(unit)
        try:
            reqs = next(gen)
            while True:
                if len(reqs) == 1:
                    got = [await self.get_async(*reqs[0])]
                else:
                    got = list(await asyncio.gather(*(self.get_async(k, r) for k, r in reqs)))
                reqs = gen.send(got)
        except StopIteration as stop:
            return stop.value

    def describe(self, unit: _Unit) -> str:
        key, items, _ = unit
        more = f" (and {len(items) - 1} more read with it)" if len(items) > 1 else ""
        return f"array {self.name!r}, chunk {items[0][0]}{more}, key {key!r}"

    def fetch_error(self, exc: BaseException, unit: _Unit) -> BaseException:
        """Our error, re-made naming the array, chunk and key (its cause the codec's own error,
        where there was one), or the store's own error with a note: raise it as it is (no
        ``from``, which would drop a store error's own cause)."""
        if isinstance(exc, ZKernelsError):
            err = type(exc)(f"{self.describe(unit)}: {exc}")
            err.key = unit[0]
            err.__cause__ = exc.__cause__
            err.__suppress_context__ = True
            return err
        return _with_note(exc, self.describe(unit))

    # -- one chunk, end to end ---------------------------------------------------------------

    def materialize(self, coords: tuple[int, ...], raw: Any, key: str) -> np.ndarray:
        """The chunk as the caller gets it: trimmed, native dtype, the array's order, writable."""
        plan = self.plan
        out = plan.new_out(plan.trimmed_shape(coords))
        try:
            chunk = plan.decode(raw)
        except Exception as exc:
            raise _corrupt(exc, self.name, coords, key) from exc
        if chunk is None:
            out.fill(plan.fill_value)
        else:
            sel = tuple(slice(0, n) for n in out.shape)
            _place(out, sel, chunk, sel)
        return out

    def get(self, key: str, byte_range: Any = None) -> np.ndarray | None:
        """One request from the calling thread (sync store, or a hop to the IO loop)."""
        if self.sync:
            return self.get_sync(key, byte_range)
        coro = self.get_async(key, byte_range)
        return asyncio.run_coroutine_threadsafe(coro, _blocking_loop()).result()

    def read_one(self, coords: tuple[int, ...]) -> np.ndarray:
        """One read-grid chunk, fetched and decoded in the calling thread: the shortest path
        (no grouping, no generator, no coalescing), for :meth:`ChunkReader.read_chunk`."""
        plan = self.plan
        if not plan.sharded:
            key = self.key(coords)
            try:
                raw = self.get(key)
            except Exception as exc:  # noqa: BLE001 - any decode failure is our CorruptChunkError
                raise self.fetch_error(exc, (key, [(coords, None)], True))
            return self.materialize(coords, raw, key)
        shard, inner = plan.split(coords)
        key = self.key(shard)
        f = None
        try:
            cache = self.cache
            index = cache.get(key) if cache is not None else _MISS
            get = self.get
            if index is _MISS and self._pread():
                # index and chunk from one open file, as the pipeline reads them: a shard
                # replaced in between must not give the new file's bytes at the old offsets
                f = LocalFile.open(f"{self.root}/{key}")
                get = _FileGets(f)
            if index is _MISS:
                index = plan.index_from_suffix(get(key, plan.index_range))
                if cache is not None:
                    cache.put(key, index)
            raw = None
            if index is not None:
                off, nb = index.item(*inner, 0), index.item(*inner, 1)
                if off != _EMPTY and nb:
                    raw = get(key, RangeByteRequest(off, off + nb))
                    if raw is None or raw.size < nb:
                        got = 0 if raw is None else raw.size
                        raise CorruptChunkError(
                            f"inner chunk {inner} lies past the end of the shard: bytes "
                            f"[{off}, {off + nb}) requested, {got} returned"
                        )
        except Exception as exc:  # noqa: BLE001 - any decode failure is our CorruptChunkError
            raise self.fetch_error(exc, (key, [(coords, inner)], False))
        finally:
            if f is not None:
                f.close()
        return self.materialize(coords, raw, key)

    # -- writes ----------------------------------------------------------------------------

    def set_blocking(self, key: str, data: np.ndarray | None) -> None:
        if self.sync:
            set_sync(self.store, key, data, _PROTO, options().swap_writes)  # read now
            return

        async def go() -> None:
            if data is None:
                await self.store.delete(key)
            else:
                await self.store.set(key, _PROTO.buffer.from_array_like(data))

        asyncio.run_coroutine_threadsafe(go(), _blocking_loop()).result()


# ---------------------------------------------------------------------------------------------
# concurrency: IO threads, a limiter, one run (a stream or a region read)


class _Workers:
    """Daemon IO threads, started on demand up to ``limit``; each exits after ``linger`` idle
    seconds, so a reader left open (or garbage) keeps no thread alive and never blocks exit."""

    def __init__(self, limit: int, name: str = "", linger: float = 0.2) -> None:
        self.limit = limit
        self.name = name
        self.linger = linger
        self._queue: deque[Callable[[], None]] = deque()
        # `with self._lock` (a C lock), never `with self._cv`: Condition's __enter__/__exit__ are
        # Python code, where a KeyboardInterrupt on the caller's thread can land with the lock
        # taken and not released (every later call, and close() at exit, then hung)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._threads = 0
        self._idle = 0
        self._closed = False
        self._names = itertools.count()

    def submit(self, fn: Callable[[], None]) -> None:
        t = None
        with self._lock:
            if self._closed:
                raise ReaderClosedError(f"ChunkReader for array {self.name!r} is closed")
            self._queue.append(fn)
            if len(self._queue) > self._idle and self._threads < self.limit:
                self._threads += 1
                t = threading.Thread(
                    target=self._work,
                    name=f"{_THREAD_PREFIX}-{next(self._names)}",
                    daemon=True,
                )
            else:
                self._cv.notify()
        if t is not None:
            self._start(t)

    def _start(self, t: threading.Thread) -> None:
        try:
            t.start()
        except BaseException:
            # interrupted (or out of threads) before the thread ran: give its place back, or a
            # count of threads that do not exist would leave the queue unserved. A thread that
            # did start marks itself started at once.
            started = getattr(t, "_started", None)
            if started is None or not started.wait(1.0):
                with self._lock:
                    self._threads -= 1
            raise

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._cv.wait(self.linger)
                    self._idle -= 1
                    if not self._queue:
                        self._threads -= 1
                        return
                fn = self._queue.popleft()
            try:
                fn()
            except BaseException:  # noqa: BLE001, S110 - jobs report their own errors
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._cv.notify_all()


class _Limiter:
    """At most ``limit`` jobs running; ``start(done)`` launches one, which calls ``done()``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._queue: deque[Callable[[Callable[[], None]], None]] = deque()
        self._lock = threading.Lock()

    def submit(self, start: Callable[[Callable[[], None]], None]) -> None:
        with self._lock:
            if self._running >= self.limit:
                self._queue.append(start)
                return
            self._running += 1
        self._launch(start)

    def _launch(self, start) -> None:
        try:
            start(self._done)
        except BaseException:  # noqa: BLE001 - start reports its own errors
            self._done()

    def _done(self) -> None:
        with self._lock:
            if not self._queue:
                self._running -= 1
                return
            start = self._queue.popleft()
        self._launch(start)


class _Run:
    """One stream or region read: its batches of chunk futures not yet consumed, its in-flight
    async IO, and a cancellation flag that queued IO and decode jobs check before starting."""

    def __init__(self) -> None:
        self.cancelled = False
        self._batches: dict[int, list[Future]] = {}
        self._tokens = itertools.count()
        self._io: set[Future] = set()
        self._lock = threading.Lock()

    def add(self, futures: list[Future]) -> int:
        """Track a batch of futures (one lock per batch, not per chunk); returns its token."""
        with self._lock:
            token = next(self._tokens)
            self._batches[token] = futures
            cancelled = self.cancelled
        if cancelled:
            self.cancel()
        return token

    def drop(self, token: int) -> None:
        """Forget a batch the consumer is done with."""
        with self._lock:
            self._batches.pop(token, None)

    def track(self, fut: Future) -> bool:
        with self._lock:
            if self.cancelled:
                return False
            self._io.add(fut)
            return True

    def untrack(self, fut: Future) -> None:
        with self._lock:
            self._io.discard(fut)

    def cancel(self) -> None:
        """Flag the run, cancel every chunk future not yet running and the async IO in flight.
        Does not wait: running decodes finish on their own, queued jobs see the flag."""
        with self._lock:
            self.cancelled = True
            batches, self._batches = list(self._batches.values()), {}
            io, self._io = list(self._io), set()
        for futures in batches:
            for f in futures:
                _cancel(f)
        for f in io:
            f.cancel()


class _Failed:
    """A chunk's error inside a batch result, raised when the caller reaches that chunk."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


# A chunk future leaves PENDING under this lock, either way: started by the job that computes
# it, or cancelled by a closing reader, a cancelled run or a failed fetch, and then at once
# marked notified, which wakes ``concurrent.futures.wait`` (``Future.cancel`` alone wakes
# ``result()`` but not ``wait()``: a region read waiting on a closed reader hung). Under the
# lock the two never race to notify (the second would log a critical error and raise).
_FUTURE_STATE = threading.Lock()


# What a forked child must make anew: a lock a parent thread held at fork time stays held there
# (the child has only the forking thread), so the child's first read, close or functional call
# would hang. Index caches start empty in the child; readers also start fresh IO threads there
# (``ChunkReader._register``).
_LIVE_CACHES: weakref.WeakSet[_IndexCache] = weakref.WeakSet()
_LIVE_READERS: weakref.WeakSet[ChunkReader] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _FUTURE_STATE, _PLANS_LOCK
    _FUTURE_STATE = threading.Lock()
    _PLANS_LOCK = threading.Lock()
    for cache in list(_LIVE_CACHES):
        cache._after_fork()
    for reader in list(_LIVE_READERS):
        reader._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _cancel(fut: Future) -> None:
    """Cancel a chunk future that has not started and wake everything waiting on it."""
    with _FUTURE_STATE:
        if not fut.cancelled() and fut.cancel():
            fut.set_running_or_notify_cancel()


def _start(fut: Future) -> bool:
    """Mark a chunk future running; False if it was cancelled (its waiters were woken)."""
    with _FUTURE_STATE:
        return not fut.cancelled() and fut.set_running_or_notify_cancel()


def _settle(fut: Future, exc: BaseException) -> None:
    try:
        if not fut.done():
            fut.set_exception(exc)
    except InvalidStateError:  # cancelled meanwhile
        pass


# ---------------------------------------------------------------------------------------------
# ChunkReader


def _all_coords(grid: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(n) for n in grid))


class ChunkReader:
    """Direct, concurrent chunk reads from an open ``zarr.Array``.

    Parameters
    ----------
    array : zarr.Array or zarr.AsyncArray
        An open array, zarr format 2 or 3, sharded or not, in any store.
    io_concurrency : int
        Store requests in flight at once for streams and region reads (IO threads for local and
        memory stores, concurrent requests on zarr's IO loop for the others).
    decode_threads : int, optional
        How many of this reader's decode batches run at once on zkernels' shared worker pool
        (whose size is the ``threads`` option); default: the pool's size.
    index_cache_bytes : int
        Bound on the parsed shard indexes kept for the reader's lifetime (LRU).

    Notes
    -----
    The *read grid* is ``array.chunks`` (inner chunks of a sharded array), the *storage grid*
    ``array.shards`` (or ``array.chunks`` when unsharded), the grid ``array.blocks`` indexes.
    A reader caches shard indexes: it assumes the array is not rewritten while it reads; call
    :meth:`clear_cache` (or open a new reader) after a write. The zkernels options for
    checksums and coalescing (and the default of ``decode_threads``) are those in force when the
    reader was created; the pool's size is read at each stream or region read. A reader may be
    shared by threads. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        array: Any,
        *,
        io_concurrency: int = 8,
        decode_threads: int | None = None,
        index_cache_bytes: int = 32 << 20,
    ) -> None:
        if isinstance(array, AsyncArray):
            async_array = array
            self._array = zarr.Array(array)
        elif isinstance(array, zarr.Array):
            async_array = array._async_array
            self._array = array
        else:
            raise TypeError(f"ChunkReader takes a zarr.Array, not {type(array).__name__}")
        opts = options()
        io_concurrency = _count("io_concurrency", io_concurrency, 1)
        decode_threads = _count("decode_threads",
                                opts.threads if decode_threads is None else decode_threads, 1)
        index_cache_bytes = _count("index_cache_bytes", index_cache_bytes, 0)
        self.io_concurrency = io_concurrency
        self.decode_threads = decode_threads
        self._plan = _ArrayPlan(async_array.metadata, async_array.config, opts)
        store_path = async_array.store_path
        self._cache = _IndexCache(index_cache_bytes)
        self._src = _Source(self._plan, store_path.store, store_path.path, self._cache)
        self._lock = threading.Lock()
        self._closed = False
        self._runs: weakref.WeakSet[_Run] = weakref.WeakSet()
        self._fresh_engine()
        _LIVE_READERS.add(self)

    def _fresh_engine(self) -> None:
        """IO threads and limiters for this process (after a fork the parent's are void: their
        threads do not exist in the child and their counts include jobs that never finish)."""
        self._pid = os.getpid()
        self._workers = _Workers(self.io_concurrency, self._src.name)
        self._io_limit = _Limiter(self.io_concurrency)
        self._decode_limit = _Limiter(self.decode_threads)
        self._runs = weakref.WeakSet()
        self._finalizer = weakref.finalize(self, self._workers.close)

    # -- properties --------------------------------------------------------------------------

    @property
    def array(self) -> zarr.Array:
        """The array read."""
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self._plan.shape

    @property
    def dtype(self) -> np.dtype:
        """The dtype of what the reader returns (zarr's native dtype for the array)."""
        return self._plan.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        """Shape of a read-grid chunk (``array.chunks``)."""
        return self._plan.chunk_shape

    @property
    def shards(self) -> tuple[int, ...] | None:
        """Shape of a shard (``array.shards``), None when unsharded."""
        return self._plan.storage_shape if self._plan.sharded else None

    @property
    def chunk_grid_shape(self) -> tuple[int, ...]:
        """Read-grid chunks per dimension (``array.cdata_shape``)."""
        return self._plan.grid_shape

    @property
    def shard_grid_shape(self) -> tuple[int, ...]:
        """Storage-grid chunks (shards) per dimension."""
        return self._plan.storage_grid_shape

    @property
    def accelerated(self) -> bool:
        """False when the codecs are not ones zkernels runs; reads then go through zarr."""
        return self._plan.accelerated

    @property
    def fallback_reason(self) -> str | None:
        return self._plan.fallback_reason

    @property
    def closed(self) -> bool:
        return self._closed

    def chunk_region(self, coords: Any) -> tuple[slice, ...]:
        """The region of the array that read-grid chunk ``coords`` covers (trimmed)."""
        c = self._norm(coords, "chunk")
        return self._plan.region(c, self._plan.chunk_shape)

    def shard_region(self, coords: Any) -> tuple[slice, ...]:
        """The region of the array that storage-grid chunk ``coords`` covers (trimmed)."""
        c = self._norm(coords, "shard")
        return self._plan.region(c, self._plan.storage_shape)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel streams and reads in flight, stop the IO threads, drop the index cache.

        Does not wait for requests already sent; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runs = list(self._runs)
        for run in runs:
            run.cancel()
        self._workers.close()
        self._cache.clear()

    def __getstate__(self) -> dict[str, Any]:
        # a reader travels as its array and settings (e.g. to data-loader worker processes)
        return {
            "array": self._array,
            "io_concurrency": self.io_concurrency,
            "decode_threads": self.decode_threads,
            "index_cache_bytes": self._cache.max_bytes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        array = state.pop("array")
        self.__init__(array, **state)  # type: ignore[misc]

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ChunkReader {self._src.name!r} {self._plan.shape} {self._plan.dtype} {state}>"

    def clear_cache(self) -> None:
        """Forget cached shard indexes (after the array was written)."""
        self._cache.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise ReaderClosedError(f"ChunkReader for array {self._src.name!r} is closed")

    def _norm(self, coords: Any, what: str) -> tuple[int, ...]:
        plan = self._plan
        grid = plan.grid_shape if what == "chunk" else plan.storage_grid_shape
        return plan.norm_coords(coords, grid, what, self._src.name)

    # -- single reads ------------------------------------------------------------------------

    def read_chunk(self, coords: Any) -> np.ndarray:
        """One chunk of the read grid (``array.chunks``), trimmed at the array's edge.

        Equal in values, dtype, shape and memory order to ``array[reader.chunk_region(coords)]``;
        the fill value where the chunk (or its shard) is missing. Negative coordinates count
        from the end. The IO and decoding run in the calling thread (synchronous stores) or on
        zarr's IO loop then the calling thread (other stores).

        Raises
        ------
        IndexError
            ``coords`` outside the read grid, or not one per dimension.
        TypeError
            ``coords`` not integers.
        ShardIndexError, ChecksumError, CorruptChunkError
            Corrupt data; the message names the array, the chunk and the store key.
        ReaderClosedError
            The reader is closed.
        OSError (or any error of the store)
            As the store raised it, with a note naming the array, the chunk and the key.
        """
        self._check_open()
        c = self._norm(coords, "chunk")
        if not self._plan.accelerated:
            return self._zarr_read(self._plan.region(c, self._plan.chunk_shape))
        return self._src.read_one(c)

    def read_shard(self, coords: Any) -> np.ndarray:
        """One chunk of the storage grid: a whole shard (trimmed), or one chunk when unsharded.

        Equal to ``array.blocks[coords]`` (zarr's block indexing uses the storage grid) and to
        ``array[reader.shard_region(coords)]``.
        """
        self._check_open()
        c = self._norm(coords, "shard")
        plan = self._plan
        if not plan.sharded:
            return self.read_chunk(c)
        return self.read_region(plan.region(c, plan.storage_shape))

    def _zarr_read(self, selection: Any) -> Any:
        return self._array[selection]

    # -- regions -----------------------------------------------------------------------------

    def read_region(self, selection: Any) -> Any:
        """A box of the array: a tuple of ints and slices (positive steps; Ellipsis allowed).

        Equal to ``array[selection]``, including zarr 3.1's result type when every axis is an
        int: a 0-d array for Python ints, a numpy scalar for numpy ints or Ellipsis. The chunks
        the box touches are fetched by shard (one request for a whole shard, else the index and
        coalesced ranges) and decoded in parallel straight into the result.
        """
        self._check_open()
        plan = self._plan
        starts, stops, steps, ints = _norm_box(selection, plan.shape, self._src.name)
        if not plan.accelerated:
            return self._zarr_read(selection)
        box_shape = tuple(b - a for a, b in zip(starts, stops, strict=True))
        out = plan.new_out(box_shape)
        if prod(box_shape):
            self._fill_box(out, starts, stops)
        if all(ints):
            # zarr 3.1: Python ints only take its orthogonal path, which returns a 0-d array;
            # otherwise (numpy ints, Ellipsis, a 0-d array) its basic path returns a scalar
            items = selection if isinstance(selection, tuple) else (selection,)
            if plan.ndim and all(isinstance(s, int | slice) for s in items):
                return out.reshape(())
            return out[(0,) * len(ints)]
        view = out[
            tuple(0 if i else slice(None, None, s) for s, i in zip(steps, ints, strict=True))
        ]
        if any(s != 1 for s in steps):
            view = np.array(view, order=plan.order)
        return view

    def _fill_box(self, out: np.ndarray, starts: list[int], stops: list[int]) -> None:
        plan, src = self._plan, self._src
        cs = plan.chunk_shape
        ranges = [range(a // c, _ceildiv(b, c)) for a, b, c in zip(starts, stops, cs, strict=True)]
        coords_list = list(itertools.product(*ranges))

        def place(coords: tuple[int, ...], raw: Any, key: str) -> None:
            dst, srcsel = [], []
            for c, n, a, b, s in zip(coords, cs, starts, stops, plan.shape, strict=True):
                lo = c * n
                hi = min(lo + n, s)
                x, y = max(a, lo), min(b, hi)
                dst.append(slice(x - a, y - a))
                srcsel.append(slice(x - lo, y - lo))
            try:
                chunk = plan.decode(raw)
            except Exception as exc:
                raise _corrupt(exc, src.name, coords, key) from exc
            if chunk is None:
                out[tuple(dst)] = plan.fill_value
            else:
                _place(out, tuple(dst), chunk, tuple(srcsel))

        units = src.units(coords_list)
        if src.sync and out.nbytes <= _INLINE_BYTES:  # small: no thread hop at all
            for unit in units:
                try:
                    raws = src.fetch_sync(unit)
                except Exception as exc:  # noqa: BLE001 - rewrapped with the key
                    raise src.fetch_error(exc, unit)
                for (c, _), raw in zip(unit[1], raws, strict=True):
                    place(c, raw, unit[0])
            return
        run = _Run()
        self._register(run)
        try:
            batches, slots = self._launch(
                run, units, place, inline_first=src.sync and len(units) == 1
            )
            _wait_futures(batches, return_when=FIRST_EXCEPTION)
            if any(f.cancelled() or f.exception() is not None for f in batches if f.done()):
                run.cancel()
                _wait_futures(batches)  # running decodes finish writing into `out` first
            for fut, i in slots:  # the first error in chunk order
                if fut.cancelled():
                    raise ReaderClosedError(
                        f"ChunkReader for array {src.name!r} was closed during read_region"
                    )
                res = fut.result()[i]
                if type(res) is _Failed:
                    raise res.exc
        finally:
            run.cancel()
            self._runs.discard(run)

    # -- the engine --------------------------------------------------------------------------
    #
    # A fetch unit (one store key) is split, before its IO, into decode batches of about
    # _BATCH_BYTES decoded bytes; each batch has one Future, whose result is the list of what
    # ``consume`` returned for its chunks (a _Failed for a chunk that raised). One future per
    # batch rather than per chunk: futures, locks and GIL hand-offs cost more than small chunks.

    def _register(self, run: _Run) -> None:
        if self._pid != os.getpid():  # forked (the locks and cache: _after_fork_in_child)
            self._fresh_engine()
        with self._lock:
            if self._closed:
                raise ReaderClosedError(f"ChunkReader for array {self._src.name!r} is closed")
            self._runs.add(run)

    def _launch(
        self,
        run: _Run,
        units: list[_Unit],
        consume: Callable[[tuple[int, ...], Any, str], Any],
        *,
        inline_first: bool = False,
    ) -> tuple[list[Future], list[tuple[Future, int]]]:
        """Start fetching ``units`` and decoding their chunks.

        Returns the batch futures and, for every chunk in the order of the units' items, its
        (batch future, index in the batch's result). Every future is settled: result,
        exception (the fetch failed) or cancelled (a job that finds the run cancelled cancels
        its futures). The caller hands the batch futures to ``run.add``.
        """
        per = max(1, _BATCH_BYTES // max(1, self._plan.bound.nbytes))
        threads = options().threads  # the pool's size now: asking for another would resize it
        batches: list[Future] = []
        slots: list[tuple[Future, int]] = []
        jobs = []
        for unit in units:
            n = len(unit[1])
            unit_batches = []
            for start in range(0, n, per):
                fut: Future = Future()
                stop = min(n, start + per)
                unit_batches.append((fut, start, stop))
                batches.append(fut)
                slots.extend((fut, i) for i in range(stop - start))
            jobs.append((unit, unit_batches, threads))
        run.add(batches)
        for job in jobs:
            if inline_first:  # a single unit on a sync store: no hop for the IO
                self._fetch_then_decode(run, job, consume)
            elif self._src.sync:
                self._workers.submit(lambda job=job: self._fetch_then_decode(run, job, consume))
            else:
                self._io_limit.submit(
                    lambda done, job=job: self._fetch_async(run, job, consume, done)
                )
        return batches, slots

    @staticmethod
    def _cancel_job(job) -> None:
        for fut, _, _ in job[1]:
            _cancel(fut)

    def _fail_job(self, job, exc: BaseException) -> None:
        err = self._src.fetch_error(exc, job[0])
        for fut, _, _ in job[1]:
            _settle(fut, err)

    def _fetch_then_decode(self, run: _Run, job, consume) -> None:
        if run.cancelled:
            self._cancel_job(job)
            return
        try:
            raws = self._src.fetch_sync(job[0])
        except BaseException as exc:  # noqa: BLE001 - reported through the futures
            self._fail_job(job, exc)
            return
        self._decode(run, job, raws, consume)

    def _fetch_async(self, run: _Run, job, consume, done: Callable[[], None]) -> None:
        if run.cancelled:
            self._cancel_job(job)
            done()
            return
        try:
            cf = asyncio.run_coroutine_threadsafe(self._src.fetch_async(job[0]), _io_loop())
        except BaseException as exc:  # noqa: BLE001 - reported through the futures
            self._fail_job(job, exc)
            done()
            return
        if not run.track(cf):
            cf.cancel()

        def finished(f: Future) -> None:
            run.untrack(f)
            done()
            if f.cancelled():
                self._cancel_job(job)
            elif f.exception() is not None:
                self._fail_job(job, f.exception())
            else:
                self._decode(run, job, f.result(), consume)

        cf.add_done_callback(finished)

    def _decode(self, run: _Run, job, raws: list, consume) -> None:
        unit, unit_batches, threads = job
        key, items, _ = unit
        for fut, start, stop in unit_batches:

            def work(fut=fut, start=start, stop=stop) -> None:
                if run.cancelled:
                    _cancel(fut)
                    return
                if not _start(fut):
                    return
                out = []
                for pos in range(start, stop):
                    try:
                        out.append(consume(items[pos][0], raws[pos], key))
                    except Exception as exc:  # noqa: BLE001 - raised when the caller gets there
                        out.append(_Failed(exc))
                fut.set_result(out)

            def start_job(done, work=work) -> None:
                try:
                    pool = _executor.get_pool(threads)
                    pool.submit(work).add_done_callback(lambda _f: done())
                except RuntimeError:  # the pool is shut down (interpreter exit): run here
                    try:
                        work()
                    finally:
                        done()

            self._decode_limit.submit(start_job)

    # -- streams -----------------------------------------------------------------------------

    def iter_chunks(
        self, coords: Iterable[Any] | None = None, *, readahead_bytes: int = 64 << 20
    ) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Yield ``(coords, chunk)`` for read-grid chunks, in the order asked.

        Parameters
        ----------
        coords : iterable of tuple of int, optional
            Read-grid chunk coordinates (consumed lazily); default every chunk in C order.
        readahead_bytes : int
            Budget of decoded bytes fetched and decoded ahead of the caller (at least one chunk
            is always in flight). Refilled in batches once half of it has been consumed, so
            that a shard's inner chunks are fetched together with coalesced ranges.

        Yields
        ------
        tuple
            The normalised coordinates and the chunk, as :meth:`read_chunk` returns it.

        Notes
        -----
        Closing the iterator (``close()``, ``break`` out of a ``for`` loop, dropping it) or the
        reader cancels what is queued or in flight and returns at once. An error (corrupt data,
        coordinates out of range, an exception from ``coords`` itself) is raised when the stream
        reaches that chunk, with its original type, after the chunks before it.
        """
        self._check_open()
        readahead_bytes = _count("readahead_bytes", readahead_bytes, 0)
        if coords is None:
            return self._stream(_all_coords(self._plan.grid_shape), readahead_bytes, True)
        return self._stream(iter(coords), readahead_bytes, False)

    def _stream(self, source: Iterator[Any], budget: int, trusted: bool):
        plan, src = self._plan, self._src
        run = _Run()
        self._register(run)
        # (coords, batch future, index in its result, decoded bytes, admission token)
        pending: deque[tuple[Any, Future, int, int, int]] = deque()
        left: dict[int, int] = {}  # admission token -> chunks not yet yielded
        outstanding = 0
        exhausted = False
        norm = self._norm
        nbytes_of = plan.nbytes_of
        try:
            while True:
                if not exhausted and (not pending or outstanding <= budget // 2):
                    # admit a batch: up to the budget (at least one chunk)
                    admitted: list[tuple[Any, int, Future | None]] = []
                    wanted: list[tuple[int, ...]] = []
                    room = _MAX_AHEAD - len(pending)
                    while len(admitted) < room and (
                        outstanding < budget or not (pending or wanted)
                    ):
                        try:
                            c = next(source, _END)
                        except Exception as exc:  # noqa: BLE001 - the caller's iterable: raised
                            bad_src: Future = Future()  # after the chunks it gave before it
                            bad_src.set_exception(exc)
                            admitted.append((None, 0, bad_src))
                            exhausted = True
                            break
                        if c is _END:
                            exhausted = True
                            break
                        if not trusted:
                            try:
                                c = norm(c, "chunk")
                            except Exception as exc:  # noqa: BLE001 - raised in order
                                bad: Future = Future()
                                bad.set_exception(exc)
                                admitted.append((c, 0, bad))
                                continue
                        nb = nbytes_of(c)
                        outstanding += nb
                        admitted.append((c, nb, None))
                        wanted.append(c)
                    if admitted:
                        futures, slots = self._start_batch(run, wanted) if wanted else ([], [])
                        token = run.add(futures)
                        left[token] = len(admitted)
                        it = iter(slots)
                        for c, nb, bad in admitted:
                            fut, i = (bad, 0) if bad is not None else next(it)
                            pending.append((c, fut, i, nb, token))
                if not pending:
                    return
                c, fut, i, nb, token = pending.popleft()
                try:
                    results = fut.result()
                except CancelledError:
                    raise ReaderClosedError(
                        f"ChunkReader for array {src.name!r} was closed while streaming"
                    ) from None
                value, results[i] = (
                    results[i],
                    None,
                )  # the batch's list stops holding it
                left[token] -= 1
                if not left[token]:
                    del left[token]
                    run.drop(token)
                outstanding -= nb
                if type(value) is _Failed:
                    raise value.exc
                yield c, value
        finally:
            run.cancel()
            self._runs.discard(run)

    def _start_batch(self, run: _Run, batch: list[tuple[int, ...]]):
        """(futures, slots) for ``batch``: slots in the batch's order, fetched by store key."""
        if not self._plan.accelerated:  # codecs zkernels does not run: zarr reads each chunk
            futs = [Future() for _ in batch]
            for c, f in zip(batch, futs, strict=True):
                region = self._plan.region(c, self._plan.chunk_shape)

                def job(f=f, region=region) -> None:
                    if run.cancelled:
                        _cancel(f)
                        return
                    if not _start(f):
                        return
                    try:
                        f.set_result([self._zarr_read(region)])
                    except Exception as exc:  # noqa: BLE001 - raised when the caller gets there
                        f.set_result([_Failed(exc)])

                self._workers.submit(job)
            return futs, [(f, 0) for f in futs]
        src = self._src
        units = src.units(batch)
        futures, unit_slots = self._launch(run, units, src.materialize)
        # units group the chunks by key: hand each requested position its slot back
        by_coords: dict[tuple[int, ...], deque[tuple[Future, int]]] = {}
        it = iter(unit_slots)
        for unit in units:
            for c, _ in unit[1]:
                by_coords.setdefault(c, deque()).append(next(it))
        return futures, [by_coords[c].popleft() for c in batch]


def _norm_box(selection: Any, shape: tuple[int, ...], name: str):
    """(starts, stops, steps, is_int) of a box selection; stops are one past the last index."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    n_ell = sum(1 for s in selection if s is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ell:
        i = next(i for i, s in enumerate(selection) if s is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(selection) + 1)
        selection = selection[:i] + fill + selection[i + 1 :]
    if len(selection) > len(shape):
        raise IndexError(
            f"array {name!r}: too many indices: {len(selection)} for {len(shape)} dimension(s)"
        )
    selection = selection + (slice(None),) * (len(shape) - len(selection))
    starts, stops, steps, ints = [], [], [], []
    for s, n in zip(selection, shape, strict=True):
        if isinstance(s, slice):
            start, stop, step = s.indices(n)
            if step < 1:
                raise IndexError(f"array {name!r}: read_region takes positive steps only, got {s}")
            count = len(range(start, stop, step))
            stop = start + (count - 1) * step + 1 if count else start
            starts.append(start)
            stops.append(stop)
            steps.append(step)
            ints.append(False)
        elif isinstance(s, int | np.integer) and not isinstance(s, bool | np.bool_):
            i = int(s)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(
                    f"array {name!r}: index {int(s)} out of range for a dimension of length {n}"
                )
            starts.append(i)
            stops.append(i + 1)
            steps.append(1)
            ints.append(True)
        else:
            raise IndexError(
                f"array {name!r}: read_region takes a box (ints and slices), not {type(s).__name__}"
            )
    return starts, stops, steps, ints


# ---------------------------------------------------------------------------------------------
# the functional layer


_PLANS: OrderedDict[Any, tuple[Any, _ArrayPlan]] = OrderedDict()
_PLANS_MAX = 64
_PLANS_LOCK = threading.Lock()


def _split_store(store: Any, path: str) -> tuple[Store, str]:
    if isinstance(store, StorePath):
        path = f"{store.path}/{path}"
        store = store.store
    if not isinstance(store, Store):
        raise TypeError(f"expected a zarr Store or StorePath, got {type(store).__name__}")
    return store, "/".join(p for p in path.split("/") if p)


def _read_doc(store: Store, path: str) -> tuple[bytes, int]:
    """The array's metadata document as stored (zarr.json, else .zarray)."""
    probe = _Source(None, store, path, None)  # type: ignore[arg-type]
    for name, fmt in (("zarr.json", 3), (".zarray", 2)):
        raw = probe.get(_join(path, name))
        if raw is not None:
            return raw.tobytes(), fmt
    raise ArrayNotFoundError(
        f"no array metadata (zarr.json or .zarray) at path {path!r} in store {store!r}"
    )


def _parse_doc(doc: bytes, fmt: int, path: str) -> Any:
    data = json.loads(doc)
    if fmt == 3:
        if data.get("node_type") != "array":
            raise ArrayNotFoundError(f"the node at path {path!r} is not an array")
    else:
        data["attributes"] = {}
    return parse_array_metadata(data)


def _source_for(store: Any, path: str, metadata: Any) -> _Source:
    store, path = _split_store(store, path)
    config = parse_array_config(None)
    opts = options()
    setting = (
        config.order,
        config.write_empty_chunks,
        opts.validate_checksums,
        opts.coalesce_max_gap_bytes,
        opts.coalesce_max_bytes,
    )
    if metadata is None:
        doc, fmt = _read_doc(store, path)
        key: Any = ("doc", fmt, doc, setting)
        owner: Any = None
    elif isinstance(metadata, ArrayV2Metadata | ArrayV3Metadata):
        # frozen: the same object always means the same metadata (held, so its id stays unique)
        key, owner = ("obj", id(metadata), setting), metadata
    elif isinstance(metadata, dict):
        key, owner = (
            ("dict", json.dumps(metadata, sort_keys=True, default=str), setting),
            None,
        )
    else:
        raise TypeError(
            f"metadata must be None, a zarr array metadata object or its JSON dict, not "
            f"{type(metadata).__name__}"
        )
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
        if hit is not None and (owner is None or hit[0] is owner):
            _PLANS.move_to_end(key)
            return _Source(hit[1], store, path, None)
    if metadata is None:
        md = _parse_doc(doc, fmt, path)
    else:
        md = parse_array_metadata(metadata)
    plan = _ArrayPlan(md, config, opts)
    with _PLANS_LOCK:
        _PLANS[key] = (owner, plan)
        _PLANS.move_to_end(key)
        while len(_PLANS) > _PLANS_MAX:
            _PLANS.popitem(last=False)
    return _Source(plan, store, path, None)


def _zarr_array(src: _Source) -> zarr.Array:
    plan = src.plan
    return zarr.Array(AsyncArray(plan.metadata, StorePath(src.store, src.path), plan.config))


def read_chunk(store: Any, path: str, coords: Any, *, metadata: Any = None) -> np.ndarray:
    """Read one read-grid chunk of the array at ``path`` in ``store``, without opening it.

    Parameters
    ----------
    store : zarr Store or StorePath
    path : str
        The array's path in the store ("" for the root).
    coords : tuple of int
        Coordinates in the read grid (inner chunks of a sharded array).
    metadata : ArrayV2Metadata, ArrayV3Metadata or dict, optional
        The array's metadata; by default the metadata document is read from the store on each
        call (cheap), so a rewritten array is never decoded with stale metadata.

    Returns
    -------
    numpy.ndarray
        As :meth:`ChunkReader.read_chunk`. The decoding machinery is cached per metadata
        document (LRU of 64); shard indexes are not cached, so writes are always seen.
    """
    src = _source_for(store, path, metadata)
    plan = src.plan
    c = plan.norm_coords(coords, plan.grid_shape, "chunk", src.name)
    if not plan.accelerated:
        return _zarr_array(src)[plan.region(c, plan.chunk_shape)]
    return src.read_one(c)


def _as_value(data: Any, dtype: np.dtype) -> np.ndarray:
    """``data`` converted as zarr's ``Array.__setitem__`` converts a value."""
    if np.isscalar(data):
        return np.asanyarray(data, dtype=dtype)
    if not hasattr(data, "shape"):
        data = np.asarray(data, dtype)
    if not hasattr(data, "dtype") or data.dtype.name != dtype.name:
        data = data.astype(dtype=dtype, order="A")
    return np.asarray(data)


def write_chunk(store: Any, path: str, coords: Any, data: Any, *, metadata: Any = None) -> None:
    """Write one read-grid chunk of the array at ``path`` in ``store``.

    The stored bytes equal what ``array[region] = data`` writes with zarr's default pipeline:
    unsharded, the chunk is encoded (or its key deleted when it equals the fill value and
    ``write_empty_chunks`` is off); sharded, the shard is read, the inner chunk re-encoded, the
    other inner chunks' bytes kept, and the shard laid out again in morton order.

    Parameters
    ----------
    data : array-like or scalar
        Values of the chunk's (trimmed) shape, or anything that broadcasts to it.

    Notes
    -----
    Writes to one shard from several threads race (read-modify-write), as with zarr.
    """
    src = _source_for(store, path, metadata)
    plan = src.plan
    c = plan.norm_coords(coords, plan.grid_shape, "chunk", src.name)
    region = plan.region(c, plan.chunk_shape)
    if not plan.accelerated:
        _zarr_array(src)[region] = data
        return
    value = _as_value(data, plan.dtype)
    shape = plan.trimmed_shape(c)
    if value.ndim and value.shape != shape:
        try:
            value = np.broadcast_to(value, shape)
        except ValueError:
            raise ValueError(
                f"array {src.name!r}: data of shape {value.shape} does not fit chunk {c}, "
                f"of shape {shape}"
            ) from None
    opts = options()
    bound = plan.bound
    if not plan.sharded:
        key = src.key(c)
        sel = tuple(slice(0, n) for n in shape)
        try:
            chunk = _merge(bound, None, value, sel, sel if value.ndim else (), True, (), opts)
            empty = not bound.write_empty_chunks and _is_empty_chunk(chunk, bound)
            encoded = None if empty else bound.encode(chunk)
        except Exception as exc:
            raise _corrupt(exc, src.name, c, key) from exc
        _store_chunk(src, c, key, encoded)
        return
    shard, _inner = plan.split(c)
    key = src.key(shard)
    shard_lo = [s * n for s, n in zip(shard, plan.storage_shape, strict=True)]
    chunk_sel = tuple(
        slice(r.start - lo, r.stop - lo) for r, lo in zip(region, shard_lo, strict=True)
    )
    out_sel = tuple(slice(0, n) for n in shape)
    spec = chunk_spec(plan.metadata, plan.storage_shape, plan.config, _PROTO)
    item = (StorePath(src.store, key), spec, chunk_sel, out_sel, False)
    try:
        sw = _ShardWrite(plan.shard_plan, item, value, bound, opts)
        if sw.need_existing:
            try:
                existing = src.get(key)
            except Exception as exc:  # the store's own error: noted, re-raised
                _with_note(exc, f"array {src.name!r}, chunk {c}, key {key!r}")
                raise
            sw.set_existing(existing)
        new = sw.assemble(sw.encode_here())
    except ZKernelsError as exc:
        err = type(exc)(f"array {src.name!r}, chunk {c}, key {key!r}: {exc}")
        err.key = key
        raise err from exc
    _store_chunk(src, c, key, new)


def _store_chunk(src: _Source, c: tuple[int, ...], key: str, data: np.ndarray | None) -> None:
    try:
        src.set_blocking(key, data)
    except Exception as exc:  # the store's own error: noted, re-raised
        _with_note(exc, f"array {src.name!r}, chunk {c}, key {key!r}", "writing")
        raise
