"""KernelCodecPipeline: zarr's reads and writes through zkernels' kernels and thread pool.

The pipeline runs a codec list itself when it knows every codec in it (see ``_codecs``) and hands
everything else to zarr's own ``BatchedCodecPipeline``, per call. :attr:`fallback_reason` (and
:func:`zkernels.explain`) says which, and the ``strict`` option turns a fallback into an error.

Layout of the work, for a sharded array (one batch item per shard):

1. IO: the whole shard when the selection touches every inner chunk, otherwise its index and then
   coalesced byte ranges of the inner chunks needed. Local and memory stores are read synchronously
   on pool threads; other stores through their async API, concurrently.
2. The index is parsed by the ``_shard_index`` kernel (checksum, bounds). An uncompressed shard laid
   out densely is copied into the output in one pass by the ``_dense`` kernel; otherwise the inner
   chunks are decoded in batches on the pool and scattered straight into the output.
3. Writes re-encode only the inner chunks the selection touches (in parallel), keep the others'
   stored bytes, and lay the shard out in morton order with its index, as zarr does.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import ceil, prod
from typing import Any

import numpy as np
import zarr
from zarr.abc.codec import Codec, CodecPipeline
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.codecs.bytes import BytesCodec
from zarr.codecs.crc32c_ import Crc32cCodec
from zarr.codecs.sharding import ShardingCodec, ShardingCodecIndexLocation
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import (
    BufferPrototype,
    NDBuffer,
    default_buffer_prototype,
    numpy_buffer_prototype,
)
from zarr.core.buffer.cpu import Buffer as _CPU_BUFFER
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.indexing import _morton_order, get_indexer, is_scalar
from zarr.storage import LocalStore, MemoryStore, StorePath

from zkernels import _executor
from zkernels._coalesce import coalesce_ranges, plan_chunk_reads
from zkernels._codecs import BoundChain, ChunkChain, Unsupported
from zkernels._compat import read_results, regular_grid
from zkernels._decode import decode_chunks
from zkernels._dense import reconstruct_dense
from zkernels._encode import concat_ranges, encode_chunks
from zkernels._localio import LocalFile, read_file, set_sync
from zkernels._scatter import is_fill, scatter
from zkernels._selection import is_basic, is_slices, iter_chunks, project
from zkernels._shard_index import check_dense, encode_shard_index, parse_shard_index
from zkernels.config import Options, options
from zkernels.errors import (
    CorruptChunkError,
    ShardIndexError,
    UnsupportedError,
    ZKernelsError,
)

__all__ = ["KernelCodecPipeline"]

_SYNC_STORES = (LocalStore, MemoryStore)
_INDEX_PROTO = numpy_buffer_prototype()
_IMMUTABLE_FILLS = (bool, int, float, complex, str, bytes, np.generic)
_EMPTY = np.uint64(2**64 - 1)
_STREAMING_OUTPUT_BYTES = 1 << 25

# One buffer per thread for the pieces of whole-shard reads (``_read_pieces``), reused from
# piece to piece: a fresh 2 MiB allocation per piece may come back from glibc as fresh pages
# (its arena trimmed in between), and faulting those in cost ~10% of a blosc read.
_piece_buffers = threading.local()


def _piece_buffer(nbytes: int, piece_bytes: int) -> np.ndarray | None:
    """This thread's reusable buffer of at least ``nbytes`` (None above 2 pieces: a rare
    oversized chunk gets a buffer of its own, not kept)."""
    if nbytes > 2 * piece_bytes:
        return None
    buf = getattr(_piece_buffers, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(max(nbytes, piece_bytes), dtype=np.uint8)
        _piece_buffers.buf = buf
    return buf


# ---------------------------------------------------------------------------------------------
# plans: what a codec list is, for us


@dataclass(frozen=True)
class _ShardPlan:
    chunk_shape: tuple[int, ...]
    inner: ChunkChain
    index_little: bool
    index_checksum: bool
    index_at_start: bool

    def bind_inner(self, shard_spec: ArraySpec) -> BoundChain:
        """The inner chain bound to the inner chunks of a shard with ``shard_spec`` (cached by
        the shard's spec: a small read should not rebuild a spec to find its cached chain)."""
        try:
            fill = shard_spec.fill_value
            return _bind_inner_cached(self, shard_spec, (type(fill), np.asarray(fill).tobytes()))
        except (TypeError, ValueError):  # an unhashable part: bind afresh
            return self.inner.bind(replace(shard_spec, shape=self.chunk_shape))

    def index_nbytes(self, n_chunks: int) -> int:
        return 16 * n_chunks + (4 if self.index_checksum else 0)

    def index_range(self, n_chunks: int) -> Any:
        """The byte request that fetches only a shard's index."""
        return _index_request(self.index_at_start, self.index_nbytes(n_chunks))

    def parse_index(
        self, raw: np.ndarray, cps: tuple[int, ...], shard_nbytes: int | None, validate: bool
    ) -> np.ndarray:
        """Parse a stored index (the kernel checks length, checksum and bounds)."""
        checksum = self.index_checksum
        if checksum and not validate and raw.size >= 4:
            raw, checksum = raw[:-4], False  # checksum validation off: drop it unread
        return parse_shard_index(
            raw,
            cps,
            byteorder="little" if self.index_little else "big",
            checksum=checksum,
            shard_nbytes=shard_nbytes,
            index_location="start" if self.index_at_start else "end",
        )

    def index_of_range(self, raw: np.ndarray, cps: tuple[int, ...], validate: bool) -> np.ndarray:
        """Parse the bytes returned for :meth:`index_range` (shard size unknown)."""
        n = self.index_nbytes(prod(cps))
        if raw.size != n:
            raise ShardIndexError(
                f"shard too short: got {raw.size} bytes where its {n}-byte index should be"
            )
        return self.parse_index(raw, cps, None, validate)

    def index_of_shard(self, shard: np.ndarray, cps: tuple[int, ...], validate: bool) -> np.ndarray:
        """Parse the index of a whole shard's bytes."""
        n = self.index_nbytes(prod(cps))
        if shard.size < n:
            raise ShardIndexError(
                f"shard of {shard.size} bytes is too short for its {n}-byte index"
            )
        raw = shard[:n] if self.index_at_start else shard[shard.size - n :]
        return self.parse_index(raw, cps, shard.size, validate)


@lru_cache(maxsize=64)
def _index_request(at_start: bool, nbytes: int) -> Any:
    return RangeByteRequest(0, nbytes) if at_start else SuffixByteRequest(nbytes)


@lru_cache(maxsize=256)
def _bind_inner_cached(plan: _ShardPlan, shard_spec: ArraySpec, fill_bits: tuple) -> BoundChain:
    return plan.inner.bind(replace(shard_spec, shape=plan.chunk_shape))


def _make_plan(codecs: tuple[Codec, ...]) -> _ShardPlan | ChunkChain:
    """Raises ``Unsupported`` (with the reason) for codec lists we leave to zarr."""
    sharding = [c for c in codecs if isinstance(c, ShardingCodec)]
    if not sharding:
        return ChunkChain.from_codecs(codecs)
    if len(codecs) != 1:
        raise Unsupported("codecs outside the sharding_indexed codec")
    sc = sharding[0]
    if any(isinstance(c, ShardingCodec) for c in sc.codecs):
        raise Unsupported("nested sharding")
    index_codecs = tuple(sc.index_codecs)
    if not index_codecs or type(index_codecs[0]) is not BytesCodec:
        raise Unsupported(f"shard index codecs {index_codecs}")
    rest = index_codecs[1:]
    if rest and (len(rest) != 1 or type(rest[0]) is not Crc32cCodec):
        raise Unsupported(f"shard index codecs {index_codecs}")
    endian = index_codecs[0].endian
    return _ShardPlan(
        chunk_shape=tuple(sc.chunk_shape),
        inner=ChunkChain.from_codecs(tuple(sc.codecs)),
        index_little=endian is None or endian.value == "little",
        index_checksum=bool(rest),
        index_at_start=sc.index_location == ShardingCodecIndexLocation.start,
    )


def _key(getter: Any) -> str:
    path = getattr(getter, "path", None)
    return str(path) if path is not None else repr(getter)


def _is_sync(getter: Any) -> bool:
    return type(getter) is StorePath and type(getter.store) in _SYNC_STORES


def _noted(exc: Exception, key: str, doing: str) -> Exception:
    """A store's own error (an OSError, a timeout) keeps its type, as zarr's pipeline lets it
    through; a note names the key (once, however many layers see it)."""
    note = f"while {doing} {key!r}"
    if isinstance(exc, ZKernelsError) or not hasattr(exc, "add_note"):
        return exc
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc


def _get_sync(
    getter: StorePath, proto: BufferPrototype, byte_range: Any = None
) -> np.ndarray | None:
    store = getter.store
    try:
        if type(store) is LocalStore and proto.buffer is _CPU_BUFFER:
            # open + pread: a few system calls where the store's own path (pathlib, buffered
            # IO) costs several times the read of a small chunk
            return read_file(os.path.join(store.root, getter.path), byte_range)
        buf = store.get_sync(getter.path, prototype=proto, byte_range=byte_range)
    except Exception as exc:  # the store's own error: noted, re-raised
        _noted(exc, getter.path, "reading")
        raise
    return None if buf is None else buf.as_numpy_array()


class _SyncGets:
    """The synchronous reads of one store key: a LocalStore file is opened once for all of
    them (a small shard read asks for the index, then the chunks)."""

    __slots__ = ("file", "getter", "opened")

    def __init__(self, getter: StorePath) -> None:
        self.getter, self.file, self.opened = getter, None, False

    @property
    def local(self) -> bool:
        """Whether the key is a local file (read with ``pread``, any byte range for free)."""
        return type(self.getter.store) is LocalStore

    def __call__(self, proto: BufferPrototype, byte_range: Any = None) -> np.ndarray | None:
        getter = self.getter
        if type(getter.store) is LocalStore and proto.buffer is _CPU_BUFFER:
            if not self.opened:
                self.opened = True
                self.file = LocalFile.open(os.path.join(getter.store.root, getter.path))
            return None if self.file is None else self.file.read(byte_range)
        return _get_sync(getter, proto, byte_range)

    def ranges(self, proto: BufferPrototype, table: np.ndarray) -> list[np.ndarray] | None:
        """The coalesced ranges ``table`` (uint64 rows ``[start, stop)``) of an open local file
        read in one call that releases the GIL once (``LocalFile.read_ranges``); None where
        that does not apply or a range reaches past the end (the caller reads one by one)."""
        if self.file is None or proto.buffer is not _CPU_BUFFER:
            return None
        return self.file.read_ranges(table)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


async def _get_async(
    getter: Any, proto: BufferPrototype, byte_range: Any = None,
    limit: asyncio.Semaphore | None = None,
) -> np.ndarray | None:
    try:
        async with limit if limit is not None else nullcontext():
            buf = await getter.get(prototype=proto, byte_range=byte_range)
    except Exception as exc:  # the store's own error: noted, re-raised
        _noted(exc, _key(getter), "reading")
        raise
    return None if buf is None else buf.as_numpy_array()


def _request_limit() -> asyncio.Semaphore | None:
    """zarr's ``async.concurrency``: at most this many requests in flight to an asynchronous
    store during one read or write, as zarr's pipeline does (None: no bound)."""
    n = zarr.config.get("async.concurrency", None)
    return asyncio.Semaphore(n) if n else None


def _set_sync(
    getter: StorePath, proto: BufferPrototype, data: np.ndarray | None, swap: bool
) -> None:
    try:
        set_sync(getter.store, getter.path, data, proto, swap)
    except Exception as exc:  # the store's own error: noted, re-raised
        _noted(exc, getter.path, "writing" if data is not None else "deleting")
        raise


async def _set_async(
    getter: Any, proto: BufferPrototype, data: np.ndarray | None,
    limit: asyncio.Semaphore | None = None,
) -> None:
    try:
        async with limit if limit is not None else nullcontext():
            if data is None:
                await getter.delete()
            else:
                await getter.set(proto.buffer.from_array_like(data))
    except Exception as exc:  # the store's own error: noted, re-raised
        _noted(exc, _key(getter), "writing" if data is not None else "deleting")
        raise


def _rekey(exc: Exception, key: str, coords: tuple[int, ...] | None = None) -> Exception:
    """Our error for ``exc``, naming the store key (and the inner chunk), to ``raise`` as it
    is: a new error has ``exc`` as its cause; one already keyed comes back unchanged, its own
    cause kept (``raise ... from exc`` would make it its own cause)."""
    where = key if coords is None else f"{key} (inner chunk {coords})"
    if isinstance(exc, ZKernelsError):
        err = exc.with_key(where)
    else:
        err = CorruptChunkError(f"{where}: could not decode: {type(exc).__name__}: {exc}")
        err.key = where
    if err is not exc:
        err.__cause__ = exc
    return err


def _fetch_error(exc: Exception, key: str) -> Exception:
    """An error met while fetching a shard and parsing its index: ours get the key; anything
    else is the store's own (an OSError, a timeout) and goes to the caller with its type, as
    zarr's pipeline lets it through, with a note naming the key."""
    if isinstance(exc, ZKernelsError):
        return _rekey(exc, key)
    return _noted(exc, key, "reading")


def _assign(
    out: np.ndarray, out_sel: Any, chunk: np.ndarray, chunk_sel: Any, drop_axes: tuple[int, ...]
) -> None:
    """``out[out_sel] = chunk[chunk_sel]`` (squeezing ``drop_axes``), as zarr's read does."""
    if (
        not drop_axes
        and chunk.dtype == out.dtype
        and is_basic(chunk_sel)
        and is_basic(out_sel)
        and len(chunk_sel) == chunk.ndim
    ):
        scatter(chunk, chunk_sel, out, out_sel)
        return
    tmp = chunk[chunk_sel]
    if drop_axes:
        tmp = tmp.squeeze(axis=drop_axes)
    out[out_sel] = tmp


def _fill(out: np.ndarray, out_sel: Any, value: Any) -> None:
    out[out_sel] = value


def _is_empty_chunk(arr: np.ndarray, bound: BoundChain) -> bool:
    """zarr's ``write_empty_chunks=False`` test: the chunk equals the fill value everywhere."""
    return is_fill(arr, np.asarray(bound.fill_value, dtype=arr.dtype))


def _parts(n_units: int, unit_nbytes: int, n_items: int, threads: int) -> int:
    min_units = max(1, (1 << 18) // max(1, unit_nbytes))
    return max(1, min(ceil(n_units / min_units), ceil(2 * threads / max(1, n_items))))


def _run_batches(fn: Any, units: list, bound: BoundChain, opts: Options, inline: bool,
                 n_items: int = 1):
    """Run ``fn`` over ``units`` cut into pool-sized batches (see ``_parts``); results per batch."""
    parts = _parts(len(units), bound.nbytes, n_items, opts.threads)
    return _executor.run_all(opts.threads, fn, _executor.split(units, parts), inline=inline)


def _by_store(items: list, getter: Any = lambda it: it[0]) -> tuple[list, list]:
    """Batch items whose store we reach synchronously, and the others."""
    sync = [it for it in items if _is_sync(getter(it))]
    return sync, [it for it in items if not _is_sync(getter(it))]


async def _gather(coros: Iterable[Any]) -> None:
    """Await all; re-raise the first error only once every task has stopped."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _in_pool(fn: Any, opts: Options, inline: bool) -> Any:
    if inline or opts.threads <= 1:
        return fn()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor.get_pool(opts.threads), fn)


# ---------------------------------------------------------------------------------------------
# one shard, read


@lru_cache(maxsize=64)
def _shard_geometry(chunk_shape: tuple[int, ...], shard_shape: tuple[int, ...]):
    """(inner chunks per shard along each axis, their number)."""
    cps = tuple(s // c for s, c in zip(shard_shape, chunk_shape, strict=True))
    return cps, prod(cps)


class _ShardJob:
    """What a shard read and a shard write share: where the shard is and how it is cut."""

    def __init__(self, plan: _ShardPlan, item, bound: BoundChain, opts: Options) -> None:
        self.getter = item[0]
        self.sync = _is_sync(self.getter)
        self.plan = plan
        self.bound = bound
        self.opts = opts
        self.shard_shape = shape = tuple(item[1].shape)
        self.cps, self.n_chunks = _shard_geometry(plan.chunk_shape, shape)
        self.limit: asyncio.Semaphore | None = None  # an async store's requests (the caller's)

    @property
    def key(self) -> str:
        """The store key, for error messages."""
        return _key(self.getter)


class _ShardRead(_ShardJob):
    """Reads one shard of a batch into ``out`` (IO, index, dense copy or decode units)."""

    def __init__(self, plan: _ShardPlan, item, out, drop_axes, bound, opts) -> None:
        super().__init__(plan, item, bound, opts)
        _getter, spec, chunk_sel, out_sel, _ = item
        # zarr's sharding codec: shard and inner chunks in the spec's prototype, index in numpy's
        self.proto = spec.prototype
        self.index_proto = _INDEX_PROTO
        self.out = out
        self.out_sel = out_sel
        self.drop_axes = drop_axes
        self.units: list[tuple[tuple[int, ...], Any, Any, Any]] = []
        self.dense_ready = False
        self.missing = False
        self.fast = (
            not drop_axes
            and is_basic(chunk_sel)
            and is_slices(out_sel)
            and out.dtype == bound.native_dtype
        )
        self.box: tuple[np.ndarray, tuple[int, ...]] | None = None
        self.points = None
        if self.fast:
            self.target = out[(*out_sel, Ellipsis)]  # a view, even when 0-d
            self.chunk_sel = chunk_sel
            if bound.kernel_steps is not None:
                self.box = self._box(chunk_sel)
        if self.box is not None:
            # the chunk decode kernel reads the touched chunks of the box itself: no per-chunk
            # entries in Python
            self.whole = self.n_touched == self.n_chunks
            return
        self.points = None if self.fast else self._points(chunk_sel, out_sel, out, drop_axes)
        if self.points is not None:
            # coordinate selection: the touched chunks decoded whole by the kernel (list mode),
            # then every point gathered from them in one numpy step
            self.n_touched = len(self.points[0])
            self.whole = self.n_touched == self.n_chunks
            self.scratch = np.empty(
                (self.n_touched, *plan.chunk_shape), dtype=bound.native_dtype
            )
            return
        if self.fast:
            dims = project(chunk_sel, self.shard_shape, plan.chunk_shape)
            self.entries = list(iter_chunks(dims))
        else:
            indexer = get_indexer(
                chunk_sel,
                shape=self.shard_shape,
                chunk_grid=regular_grid(self.shard_shape, plan.chunk_shape),
            )
            self.indexer = indexer
            self.target = np.empty(indexer.shape, dtype=bound.native_dtype, order=spec.order)
            self.entries = [(c, cs, os, comp) for c, cs, os, comp in indexer]
        coords = {e[0] for e in self.entries}
        self.n_touched = len(coords)
        self.whole = len(coords) == self.n_chunks

    def _points(self, chunk_sel, out_sel, out, drop_axes):
        """A coordinate selection (zarr's vindex: one 1-d integer array per axis, all of one
        length, into a 1-d output) as (touched chunks, chunk slot and offset of each point)."""
        bound, nd = self.bound, len(self.shard_shape)
        if (
            bound.kernel_steps is None
            or drop_axes
            or nd == 0
            or out.ndim != 1
            or out.dtype != bound.native_dtype
            or not isinstance(chunk_sel, tuple)
            or len(chunk_sel) != nd
            or not isinstance(out_sel, np.ndarray)
            or out_sel.ndim != 1
            or out_sel.dtype.kind not in "iu"
        ):
            return None
        n = out_sel.shape[0]
        for a in chunk_sel:
            if not (isinstance(a, np.ndarray) and a.shape == (n,) and a.dtype.kind in "iu"):
                return None
        if n == 0:
            return None
        c = np.stack(chunk_sel).astype(np.intp, copy=False)
        if (c < 0).any() or (c >= np.array(self.shard_shape, dtype=np.intp)[:, None]).any():
            return None  # zarr's indexer raises its own error
        cs = np.array(self.plan.chunk_shape, dtype=np.intp)[:, None]
        lin = np.ravel_multi_index(tuple(c // cs), self.cps)
        within = np.ravel_multi_index(tuple(c % cs), self.plan.chunk_shape)
        uniq, slot = np.unique(lin, return_inverse=True)
        return uniq, slot.reshape(-1), within

    def _box(self, chunk_sel) -> tuple[np.ndarray, tuple[int, ...]] | None:
        """The selection as a box (see ``_box_of``); sets the touched chunk ranges."""
        box = _box_of(chunk_sel, self.shard_shape, self.target)
        if box is None:
            return None
        target, start, ext = box
        self.chunk_lo, self.chunk_hi, self.n_touched = _chunk_span(
            start, ext, self.plan.chunk_shape
        )
        return target, start

    # -- IO (sync and async variants share the CPU steps) ------------------------------------

    def set_whole(self, shard: np.ndarray | None) -> None:
        if shard is None:
            self.missing = True
            return
        index = self.plan.index_of_shard(shard, self.cps, self.opts.validate_checksums)
        if self._try_dense(shard, index):
            return
        if self.box is not None or self.points is not None:
            self.sources, self.locs, self.groups = [shard], _zero_as_empty(index), None
            self.units = range(self.n_touched)
            return
        flat = index.reshape(-1, 2)
        strides = _c_strides(self.cps)
        for entry in self.entries:
            coords = entry[0]
            off, nb = flat[_linear(coords, strides)]
            raw = None if off == _EMPTY or nb == 0 else shard[int(off) : int(off) + int(nb)]
            self.units.append((coords, raw, entry[1], entry[2]))

    def ranges_after_index(self, raw_index: np.ndarray | None, max_bytes: int | None = None):
        """Parse the index; return the coalesced groups of byte ranges still to fetch (each at
        most ``max_bytes`` long where given, else ``coalesce_max_bytes``)."""
        if raw_index is None:
            self.missing = True
            return None
        index = self.plan.index_of_range(raw_index, self.cps, self.opts.validate_checksums)
        if self.box is not None or self.points is not None:
            return self._box_ranges(index, max_bytes)
        flat = index.reshape(-1, 2)
        strides = _c_strides(self.cps)
        wanted = []
        for entry in self.entries:
            off, nb = flat[_linear(entry[0], strides)]
            if off == _EMPTY or nb == 0:
                self.units.append((entry[0], None, entry[1], entry[2]))
            else:
                wanted.append((entry, int(off), int(nb)))
        self._wanted = wanted
        if not wanted:
            return None
        plan = coalesce_ranges(
            [w[1] for w in wanted],
            [w[2] for w in wanted],
            max_gap_bytes=self.opts.coalesce_max_gap_bytes,
            max_coalesced_bytes=self.opts.coalesce_max_bytes,
        )
        self._plan = plan
        self._range_table = plan.groups
        return [RangeByteRequest(int(a), int(b)) for a, b in plan.groups]

    def _box_ranges(self, index: np.ndarray, max_bytes: int | None = None):
        """Kernel mode: the touched non-empty chunks in coalesced reads (one kernel call)."""
        if self.points is not None:
            where = {"chunks": self.points[0]}
        else:
            where = {"box": (self.chunk_lo, self.chunk_hi)}
        plan = plan_chunk_reads(
            index,
            **where,
            max_gap_bytes=self.opts.coalesce_max_gap_bytes,
            max_coalesced_bytes=max_bytes or self.opts.coalesce_max_bytes,
        )
        self.units = range(self.n_touched)
        self.locs, self.groups = plan.locs, plan.groups
        if plan.ranges.shape[0] == 0:
            self.sources = [b""]
            return None
        self._range_table = plan.ranges
        self._ranges = plan.ranges.tolist()
        return [RangeByteRequest(a, b) for a, b in self._ranges]

    def set_groups(self, groups: list[np.ndarray | None]) -> None:
        if self.box is not None or self.points is not None:
            for rng, data in zip(self._ranges, groups, strict=True):
                _check_range(rng, data)
            self.sources = groups
            return
        plan = self._plan
        for i, (entry, _off, nb) in enumerate(self._wanted):
            g = int(plan.request_group[i])
            data = groups[g]
            start = int(plan.request_offset[i])
            req = plan.groups[g]
            want = int(req[1] - req[0])
            if data is None or data.size < want:
                got = 0 if data is None else data.size
                raise CorruptChunkError(
                    f"inner chunk {entry[0]} lies past the end of the shard: bytes "
                    f"[{int(req[0])}, {int(req[1])}) requested, {got} returned"
                )
            self.units.append((entry[0], data[start : start + nb], entry[1], entry[2]))

    def prepare_sync(self, decode_now: bool = False) -> None:
        """The IO; with ``decode_now`` a whole shard of a local file larger than ``piece_bytes``
        is also decoded, piece by piece as it is read (nothing left in ``units``)."""
        get = _SyncGets(self.getter)
        try:
            if self.whole and decode_now and self._pieces_apply(get):
                self._read_pieces(get)
            elif self.whole:
                self.set_whole(get(self.proto))
            else:
                groups = self.ranges_after_index(
                    get(self.index_proto, self.plan.index_range(self.n_chunks))
                )
                if groups:
                    data = get.ranges(self.proto, self._range_table)
                    if data is None:  # not a local file, or a range past its end
                        data = [get(self.proto, g) for g in groups]
                    self.set_groups(data)
        except Exception as exc:  # noqa: BLE001 - keyed or noted (_fetch_error), re-raised
            raise _fetch_error(exc, self.key)
        finally:
            get.close()

    def _pieces_apply(self, get: _SyncGets) -> bool:
        piece = self.opts.piece_bytes
        return (
            piece > 0
            and self.box is not None
            and get.local
            and self.proto.buffer is _CPU_BUFFER
            and self.n_chunks * self.bound.nbytes > piece
        )

    def _read_pieces(self, get: _SyncGets) -> None:
        """A whole shard read in pieces of about ``piece_bytes`` (coalesced ranges of its
        chunks), each decoded into the output as soon as it is read, then let go: the thread
        holds one piece, not the shard. Empty chunks are filled last."""
        requests = self.ranges_after_index(
            get(self.index_proto, self.plan.index_range(self.n_chunks)),
            self.opts.piece_bytes,
        )
        if self.missing:
            return
        (out, region_start) = self.box
        groups = self.groups.reshape(-1)
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(-1, len(requests or ()) + 1))
        sources: list[Any] = [b""] * max(1, len(requests or ()))
        streaming = self.out.nbytes >= _STREAMING_OUTPUT_BYTES
        try:
            for r, req in enumerate(requests or ()):
                buf = _piece_buffer(req.end - req.start, self.opts.piece_bytes)
                if buf is None or get.file is None:
                    data = get(self.proto, req)
                else:  # the file is open (the index came from it): read into our buffer
                    data = get.file.read_into(req.start, buf[: req.end - req.start])
                _check_range(self._ranges[r], data)
                sources[r] = data
                self._decode(sources, out, region_start,
                             subset=order[bounds[r + 1] : bounds[r + 2]], streaming=streaming)
                sources[r] = b""
            self._decode(sources, out, region_start, subset=order[bounds[0] : bounds[1]],
                         streaming=streaming)
        except ZKernelsError as exc:
            raise _rekey(exc, self.key)
        self.units = ()

    async def prepare_async(self, inline: bool) -> None:
        try:
            if self.whole:
                shard = await _get_async(self.getter, self.proto, None, self.limit)
                await _in_pool(lambda: self.set_whole(shard), self.opts, inline)
            else:
                groups = self.ranges_after_index(
                    await _get_async(
                        self.getter, self.index_proto, self.plan.index_range(self.n_chunks),
                        self.limit,
                    )
                )
                if groups:
                    data = await asyncio.gather(
                        *(_get_async(self.getter, self.proto, g, self.limit) for g in groups)
                    )
                    self.set_groups(list(data))
        except Exception as exc:  # noqa: BLE001 - keyed or noted (_fetch_error), re-raised
            raise _fetch_error(exc, self.key)

    # -- CPU -----------------------------------------------------------------------------

    def _try_dense(self, shard: np.ndarray, index: np.ndarray) -> bool:
        bound = self.bound
        if self.box is None or not (self.opts.dense_path and bound.raw_bytes):
            return False
        dense, _order = check_dense(index, bound.nbytes)
        if not dense:
            return False
        target, region_start = self.box
        reconstruct_dense(
            shard,
            index,
            target,
            chunk_shape=self.plan.chunk_shape,
            region_start=region_start,
            fill_value=bound.fill_bytes,
            swap_unit=bound.swap_unit,
            # a large output will not be re-read from cache soon: bypass it (measured ~10%
            # faster for a 128 MiB read of 8 MiB shards; the kernel decides below 16 MiB boxes)
            streaming=True if self.out.nbytes >= _STREAMING_OUTPUT_BYTES else None,
        )
        self.dense_ready = True
        return True

    def _decode(self, sources: list, out: np.ndarray, region_start: tuple, **where: Any) -> None:
        _decode_box(self.plan, self.bound, self.opts, sources, self.locs, self.groups, out,
                    region_start, **where)

    def decode_units(self, units) -> None:
        bound, validate = self.bound, self.opts.validate_checksums
        if self.points is not None or self.box is not None:
            if self.points is not None:  # list mode: touched chunks whole into their slots
                out, region_start, chunks = self.scratch, (), self.points[0]
            else:
                (out, region_start), chunks = self.box, None
            try:
                self._decode(self.sources, out, region_start, first=units.start,
                             last=units.stop, chunks=chunks)
            except ZKernelsError as exc:
                raise _rekey(exc, self.key)
            return
        target, fill_value = self.target, bound.fill_value
        for coords, raw, chunk_sel, out_sel in units:
            if raw is None:
                _fill(target, out_sel, fill_value)
                continue
            try:
                chunk = bound.decode(raw, validate)
            except Exception as exc:  # noqa: BLE001 - our error, caused by it (_rekey)
                raise _rekey(exc, self.key, coords)
            _assign(target, out_sel, chunk, chunk_sel, ())

    def finish(self) -> None:
        """Fill a missing shard, or move the general path's temporary into the output; then
        let go of the shard's bytes (a whole read must not hold every shard until the end)."""
        try:
            self._finish()
        finally:
            self.sources = self.locs = self.groups = self.scratch = None
            if not self.fast:
                self.target = None  # the general path's temporary
            self.units = ()

    def _finish(self) -> None:
        if self.points is not None:
            if self.missing:
                self.out[self.out_sel] = self.bound.fill_value
            else:
                _uniq, slot, within = self.points
                decoded = self.scratch.reshape(len(_uniq), -1)
                self.out[self.out_sel] = decoded[slot, within]
            return
        if self.fast:
            if self.missing:
                _fill(self.target, Ellipsis, self.bound.fill_value)
            return
        if self.missing:
            self.out[self.out_sel] = self.bound.fill_value
            return
        result = self.target
        if hasattr(self.indexer, "sel_shape"):
            result = result.reshape(self.indexer.sel_shape)
        if self.drop_axes:
            result = result.squeeze(axis=self.drop_axes)
        self.out[self.out_sel] = result


def _box_of(chunk_sel, shard_shape: tuple[int, ...], arr: np.ndarray, scalar: bool = False):
    """A selection of slices of step 1 and integers, as a box: (``arr`` viewed with every shard
    axis, the box's start, its extent); None for any other selection. With ``scalar``, ``arr``
    (a value written) is broadcast to the box."""
    if len(chunk_sel) != len(shard_shape):
        return None
    start, ext, int_axes = [], [], []
    for axis, s in enumerate(chunk_sel):
        if isinstance(s, slice):
            a, b, step = s.indices(shard_shape[axis])
            if step != 1:
                return None
            b = max(a, b)
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            a = int(s)
            b = a + 1
            int_axes.append(axis)
        else:
            return None
        start.append(a)
        ext.append(b - a)
    if scalar:
        return np.broadcast_to(arr, tuple(ext)), tuple(start), tuple(ext)
    for axis in int_axes:
        arr = np.expand_dims(arr, axis)
    if arr.shape != tuple(ext):
        return None
    return arr, tuple(start), tuple(ext)


def _chunk_span(start, ext, chunk_shape: tuple[int, ...]) -> tuple[list, list, int]:
    """The inner chunks a box touches: first and end chunk per axis, and their number."""
    lo, hi, n = [], [], 1
    for a, e, c in zip(start, ext, chunk_shape):
        first = a // c
        end = -(-(a + e) // c) if e else first
        lo.append(first)
        hi.append(end)
        n *= end - first
    return lo, hi, n


def _decode_box(plan: _ShardPlan, bound: BoundChain, opts: Options, sources: list, locs, groups,
                out: np.ndarray, region_start: tuple, **where: Any) -> None:
    """``decode_chunks`` over planned chunks (``locs``/``groups``) with the bound chain's steps,
    fill value and byte order; ``where`` picks the chunks."""
    decode_chunks(
        sources,
        locs,
        out,
        groups=groups,
        steps=bound.kernel_steps,
        chunk_shape=plan.chunk_shape,
        region_start=region_start,
        fill_value=bound.fill_bytes,
        swap_unit=bound.swap_unit,
        validate=opts.validate_checksums,
        **where,
    )


def _check_range(rng: tuple[int, int], data: np.ndarray | None) -> None:
    """A coalesced range must come back whole (else the index points past the shard's end)."""
    start, stop = rng
    if data is None or data.size < stop - start:
        got = 0 if data is None else data.size
        raise CorruptChunkError(
            f"inner chunks lie past the end of the shard: bytes [{start}, {stop}) "
            f"requested, {got} returned"
        )


def _read_small_local(plan: _ShardPlan, item, out: np.ndarray, drop_axes, bound: BoundChain,
                      opts: Options) -> bool | None:
    """A small box of one shard in a local file, read in one straight line: the steps a
    ``_ShardRead`` takes for it (index, coalesced ranges, decode into the output), without its
    bookkeeping, which cost a single-chunk ``arr[...]`` more than its IO and decode together.
    Returns whether the shard is missing; None where this does not apply (the caller goes the
    general way)."""
    getter, spec, chunk_sel, out_sel, _ = item
    if (
        drop_axes
        or bound.kernel_steps is None
        or type(getter) is not StorePath
        or type(getter.store) is not LocalStore
        or spec.prototype.buffer is not _CPU_BUFFER
        or out.dtype != bound.native_dtype
        or not is_slices(out_sel)
    ):
        return None
    shard_shape = tuple(spec.shape)
    box = _box_of(chunk_sel, shard_shape, out[(*out_sel, Ellipsis)])
    if box is None:
        return None
    target, start, ext = box
    cps, n_chunks = _shard_geometry(plan.chunk_shape, shard_shape)
    lo, hi, n_touched = _chunk_span(start, ext, plan.chunk_shape)
    if not 0 < n_touched < n_chunks or n_touched * bound.nbytes > opts.inline_bytes:
        return None
    f = LocalFile.open(os.path.join(getter.store.root, getter.path))
    raw = None if f is None else f.read(plan.index_range(n_chunks))
    if raw is None:  # no shard (no file, or a directory where it would be): the fill value
        if f is not None:
            f.close()
        _fill(target, Ellipsis, bound.fill_value)
        return True
    try:
        index = plan.index_of_range(raw, cps, opts.validate_checksums)
        reads = plan_chunk_reads(
            index,
            box=(lo, hi),
            max_gap_bytes=opts.coalesce_max_gap_bytes,
            max_coalesced_bytes=opts.coalesce_max_bytes,
        )
        sources: list[Any] = []
        for rng in reads.ranges.tolist():
            data = f.read_range(*rng)
            _check_range(rng, data)
            sources.append(data)
    except Exception as exc:  # noqa: BLE001 - as prepare_sync (_fetch_error)
        raise _fetch_error(exc, _key(getter))
    finally:
        f.close()
    try:
        _decode_box(plan, bound, opts, sources or [b""], reads.locs, reads.groups, target, start)
    except ZKernelsError as exc:  # as decode_units: the kernel's own errors, by key
        raise _rekey(exc, _key(getter))
    return False


def _zero_as_empty(index: np.ndarray) -> np.ndarray:
    """The index with zero-length entries marked empty (they read as the fill value)."""
    zero = (index[..., 1] == 0) & (index[..., 0] != _EMPTY)
    if not zero.any():
        return index
    index = index.copy()
    index[zero] = _EMPTY
    return index


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


def _linear(coords: tuple[int, ...], strides: tuple[int, ...]) -> int:
    return sum(c * s for c, s in zip(coords, strides, strict=True))


# ---------------------------------------------------------------------------------------------
# one shard, written


def _inverted(selection: tuple[Any, ...], shape: tuple[int, ...]) -> bool:
    """A slice whose stop comes before its start: selects nothing, but zarr's indexer yields the
    chunk holding both ends (a negative item count), so a write stores that inner chunk (fill,
    with ``write_empty_chunks``) and the shard; zkernels must store the same."""
    for s, n in zip(selection, shape, strict=False):
        if isinstance(s, slice):
            start, stop, _ = s.indices(n)
            if stop < start:
                return True
    return False


class _ShardWrite(_ShardJob):
    """Writes one shard: merge touched inner chunks, keep the rest, lay out in morton order."""

    def __init__(self, plan: _ShardPlan, item, value: np.ndarray, bound, opts) -> None:
        super().__init__(plan, item, bound, opts)
        _setter, _spec, chunk_sel, out_sel, _ = item
        self.setter = self.getter
        # zarr's sharding codec reads and writes a shard it rewrites in the default prototype
        self.proto = default_buffer_prototype()
        # zarr: a scalar value is passed as is, otherwise value[out_selection]
        self.value = value if value.ndim == 0 else value[out_sel]
        self.existing: dict[tuple[int, ...], np.ndarray] = {}
        self.encoded: dict[tuple[int, ...], np.ndarray | None] = {}
        self.old_shard: np.ndarray | None = None
        self.old_index: np.ndarray | None = None
        # The chunk encode kernel takes writes of whole inner chunks (a box on the chunk grid).
        self.kbox = self._kernel_box(chunk_sel)
        if self.kbox is not None:
            self.entries = []
            self.need_existing = not self.touched.all()
            return
        if is_basic(chunk_sel) and not _inverted(chunk_sel, self.shard_shape):
            entries = list(iter_chunks(project(chunk_sel, self.shard_shape, plan.chunk_shape)))
        else:  # zarr's own indexer (an inverted slice, 2:1, still touches a chunk in zarr's)
            entries = list(
                get_indexer(
                    chunk_sel,
                    shape=self.shard_shape,
                    chunk_grid=regular_grid(self.shard_shape, plan.chunk_shape),
                )
            )
        self.entries = [tuple(e) for e in entries]
        touched = {e[0] for e in self.entries}
        complete = all(e[3] for e in self.entries)
        self.need_existing = not (complete and len(touched) == self.n_chunks)

    def _kernel_box(self, chunk_sel):
        bound = self.bound
        if bound.encode_steps is None or self.value.dtype != bound.native_dtype:
            return None
        box = _box_of(chunk_sel, self.shard_shape, self.value, scalar=self.value.ndim == 0)
        if box is None:
            return None
        arr, start, ext = box
        cs = self.plan.chunk_shape
        if any(a % c or n % c or n == 0 for a, n, c in zip(start, ext, cs)):
            return None  # not on the chunk grid: partial chunks are merged in Python
        axes = [np.arange(a // c, (a + n) // c) for a, n, c in zip(start, ext, cs)]
        touched = np.zeros(self.n_chunks, dtype=bool)
        touched[np.ravel_multi_index(np.ix_(*axes), self.cps).reshape(-1)] = True
        self.touched = touched
        order = _morton_linear(self.cps)
        self.kchunks = order[touched[order]]  # in storage (morton) order
        return arr, start

    def encode_kernel(self, chunks: np.ndarray, room: bool = False) -> tuple:
        """Encode whole chunks (linear numbers, in layout order) with the chunk encode kernel:
        (chunks, data, sizes, head), the encoded chunks lying back to back in ``data`` from
        ``head``. With ``room``, ``data`` keeps free bytes for the shard index before or after
        them, so that a shard made of these chunks alone is ``data`` itself (no copy)."""
        bound = self.bound
        arr, start = self.kbox
        n_index = self.plan.index_nbytes(self.n_chunks) if room else 0
        head = n_index if self.plan.index_at_start else 0
        data, sizes = encode_chunks(
            arr,
            chunks,
            steps=bound.encode_steps,
            chunk_shape=self.plan.chunk_shape,
            region_start=start,
            chunks_per_shard=self.cps,
            swap_unit=bound.swap_unit,
            stored_dtype=bound.stored_dtype,
            fill_value=np.asarray(bound.fill_value, dtype=bound.native_dtype),  # as _is_empty_chunk
            skip_fill=not bound.write_empty_chunks,
            **bound.encode_params,
            head=head,
            tail=n_index - head,
        )
        return chunks, data, sizes, head

    def set_existing(self, shard: np.ndarray | None) -> None:
        if shard is None:
            return
        index = self.plan.index_of_shard(shard, self.cps, self.opts.validate_checksums)
        if self.kbox is not None:
            self.old_shard, self.old_index = shard, index.reshape(-1, 2)
            return
        flat = index.reshape(-1, 2)
        nonempty = np.flatnonzero(flat[:, 0] != _EMPTY)
        for lin in nonempty.tolist():
            off, nb = int(flat[lin, 0]), int(flat[lin, 1])
            coords = tuple(int(x) for x in np.unravel_index(lin, self.cps))
            self.existing[coords] = shard[off : off + nb]

    def encode_entries(self, entries) -> list[tuple[tuple[int, ...], np.ndarray | None]]:
        bound, value = self.bound, self.value
        results = []
        for coords, chunk_sel, out_sel, complete in entries:
            try:
                chunk = _merge(bound, self.existing.get(coords), value, chunk_sel, out_sel,
                               complete, (), self.opts, self.key, coords)
                if not bound.write_empty_chunks and _is_empty_chunk(chunk, bound):
                    results.append((coords, None))
                else:
                    results.append((coords, bound.encode(chunk)))
            except ZKernelsError as exc:
                raise _rekey(exc, self.key, coords)
        return results

    def encode_here(self) -> list:
        """Encode every touched chunk in this thread; returns what ``assemble`` takes."""
        if self.kbox is not None:
            return [self.encode_kernel(self.kchunks, room=True)]
        self.encoded.update(self.encode_entries(self.entries))
        return []

    def assemble(self, kernel_results=()) -> np.ndarray | None:
        """The new shard's bytes (chunks in morton order, then/after the index), or None.

        Every chunk is a byte range of one of ``sources``: the old shard (kept chunks), the
        kernel's buffers, or single chunks encoded in Python. ``src`` -1: no chunk.
        """
        n = self.n_chunks
        src = np.full(n, -1, dtype=np.int32)
        off = np.zeros(n, dtype=np.int64)
        nb = np.zeros(n, dtype=np.int64)
        sources: list[Any] = []
        if self.kbox is not None:
            if self.old_index is not None:
                flat = self.old_index
                keep = (flat[:, 0] != _EMPTY) & (flat[:, 1] != 0) & ~self.touched
                sources.append(self.old_shard)
                src[keep] = 0
                off[keep] = flat[keep, 0].astype(np.int64)
                nb[keep] = flat[keep, 1].astype(np.int64)
            for chunks, data, sizes, head in kernel_results:
                written = sizes >= 0
                ends = np.cumsum(np.where(written, sizes, 0)) + head
                src[chunks] = -1
                src[chunks[written]] = len(sources)
                off[chunks[written]] = (ends - sizes)[written]
                nb[chunks[written]] = sizes[written]
                sources.append(data)
        else:
            chunks: dict[tuple[int, ...], Any] = dict(self.existing)
            for coords, data in self.encoded.items():
                if data is None:
                    chunks.pop(coords, None)
                else:
                    chunks[coords] = data
            for coords, data in chunks.items():
                if data is None or len(data) == 0:
                    continue
                lin = _linear(coords, _c_strides(self.cps))
                src[lin], nb[lin] = len(sources), len(data)
                sources.append(data)
        order = _morton_linear(self.cps)
        order = order[src[order] >= 0]
        if order.size == 0:
            return None
        sizes = nb[order]
        total = int(sizes.sum())
        n_index = self.plan.index_nbytes(n)
        base = n_index if self.plan.index_at_start else 0
        starts = np.cumsum(sizes) - sizes + base  # each chunk's offset in the new shard
        index = np.full((n, 2), _EMPTY, dtype=np.uint64)
        index[order, 0] = starts.astype(np.uint64)
        index[order, 1] = sizes.astype(np.uint64)
        out = None
        if self.kbox is not None and len(sources) == 1:  # a kernel buffer, no old shard
            # a file is written and the buffer dropped; a memory store keeps the buffer as the
            # value, and the kernel's is sized for the worst case: a compressed shard is copied
            kept = type(getattr(self.setter, "store", None)) is not LocalStore
            out = _in_place(sources[0], off[order], starts, total + n_index, kept)
        if out is None:
            out = np.empty(total + n_index, dtype=np.uint8)
            concat_ranges(sources, src[order], off[order], sizes, out, base)
        index_bytes = encode_shard_index(
            index.reshape(*self.cps, 2),
            byteorder="little" if self.plan.index_little else "big",
            checksum=self.plan.index_checksum,
        )
        at = 0 if self.plan.index_at_start else total
        out[at : at + n_index] = np.frombuffer(index_bytes, dtype=np.uint8)
        return out


def _in_place(data: np.ndarray, offsets: np.ndarray, starts: np.ndarray, nbytes: int,
              kept: bool) -> np.ndarray | None:
    """``data`` itself as the new shard's bytes, when every chunk already lies where the shard
    has it (its ``offsets`` in ``data`` are its ``starts`` in the shard) and ``data`` is exactly
    ``nbytes`` long (the encode kernel left room for the index); else None. With ``kept`` (the
    store keeps the buffer), only where its allocation is at most 1/8 larger than the shard."""
    if data.nbytes != nbytes or not data.flags.c_contiguous or starts.size == 0:
        return None
    allocated = data.base.nbytes if isinstance(data.base, np.ndarray) else data.nbytes
    if kept and allocated > nbytes + nbytes // 8:
        return None
    return data if np.array_equal(offsets, starts) else None


_MORTON: dict[tuple[int, ...], np.ndarray] = {}


def _morton_linear(cps: tuple[int, ...]) -> np.ndarray:
    """Linear (C-order) chunk numbers in zarr's storage (morton) order, cached per grid."""
    order = _MORTON.get(cps)
    if order is None:
        if not cps:
            return np.zeros(1, np.intp)  # a 0-d shard: one chunk
        coords = np.asarray(_morton_order(cps), dtype=np.intp).reshape(-1, len(cps))
        order = np.ravel_multi_index(tuple(coords.T), cps)
        order = np.asarray(order, dtype=np.intp)
        if len(_MORTON) < 64:
            _MORTON[cps] = order
    return order


def _merge(
    bound: BoundChain,
    existing_raw: np.ndarray | None,
    value: np.ndarray,
    chunk_sel: Any,
    out_sel: Any,
    complete: bool,
    drop_axes: tuple[int, ...],
    opts: Options,
    key: str = "",
    coords: tuple[int, ...] | None = None,
) -> np.ndarray:
    """The new contents of one chunk, exactly as zarr's ``_merge_chunk_array`` computes them.

    An existing chunk that does not decode raises our error naming `key` (and `coords`, an inner
    chunk's); a `value` that does not fit the selection raises numpy's error, as in zarr."""
    shape = bound.shape
    if complete and value.shape == shape and value[out_sel].shape == shape:
        return value
    if existing_raw is None or complete:
        chunk = bound.new_chunk()
    else:
        try:
            decoded = bound.decode(existing_raw, opts.validate_checksums)
        except Exception as exc:  # noqa: BLE001 - our error, caused by it (_rekey)
            raise _rekey(exc, key, coords)
        chunk = np.empty(shape, dtype=bound.native_dtype, order=bound.order)
        chunk[...] = decoded
    if chunk_sel == () or is_scalar(value, bound.native_dtype):
        chunk_value = value
    else:
        chunk_value = value[out_sel]
        if drop_axes:
            item = tuple(None if i in drop_axes else slice(None) for i in range(len(shape)))
            chunk_value = chunk_value[item]
    chunk[chunk_sel] = chunk_value
    return chunk


# ---------------------------------------------------------------------------------------------
# the pipeline


@dataclass(frozen=True)
class KernelCodecPipeline(CodecPipeline):
    """A zarr codec pipeline that runs reads and writes through zkernels' kernels.

    Turn it on with :func:`zkernels.enable` or
    ``zarr.config.set({"codec_pipeline.path": "zkernels.KernelCodecPipeline"})``. Codec lists it
    does not run itself go to zarr's ``BatchedCodecPipeline``; :attr:`fallback_reason` says why.
    """

    codecs: tuple[Codec, ...]
    _plan: Any = field(default=None, compare=False, repr=False)
    fallback_reason: str | None = field(default=None, compare=False, repr=False)
    _fallback: BatchedCodecPipeline = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    _bind_memo: tuple | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        codecs = tuple(self.codecs)
        object.__setattr__(self, "codecs", codecs)
        if self._fallback is None:
            object.__setattr__(self, "_fallback", BatchedCodecPipeline.from_codecs(codecs))
        if self._plan is None and self.fallback_reason is None:
            try:
                object.__setattr__(self, "_plan", _make_plan(codecs))
            except Unsupported as exc:
                object.__setattr__(self, "fallback_reason", str(exc))

    def __getstate__(self) -> dict[str, Any]:
        return {"codecs": self.codecs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "codecs", tuple(state["codecs"]))
        object.__setattr__(self, "_plan", None)
        object.__setattr__(self, "fallback_reason", None)
        object.__setattr__(self, "_fallback", None)
        object.__setattr__(self, "_bind_memo", None)
        self.__post_init__()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_codecs(cls, codecs: Iterable[Codec]) -> KernelCodecPipeline:
        return cls(codecs=tuple(codecs))

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> KernelCodecPipeline:
        # as zarr >= 3.2.1: each codec against the spec the codecs before it produce (they may
        # change the dtype: cast_value). zarr 3.1's own fails for a generator of codecs.
        evolved, spec = [], array_spec
        for c in self.codecs:
            c = c.evolve_from_array_spec(array_spec=spec)
            evolved.append(c)
            spec = c.resolve_metadata(spec)
        return type(self).from_codecs(evolved)

    def __iter__(self) -> Iterator[Codec]:
        return iter(self._fallback)

    @property
    def accelerated(self) -> bool:
        """Whether this codec list runs through zkernels (else zarr's default pipeline)."""
        return self._plan is not None

    @property
    def supports_partial_decode(self) -> bool:
        return self._fallback.supports_partial_decode

    @property
    def supports_partial_encode(self) -> bool:
        return self._fallback.supports_partial_encode

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        self._fallback.validate(shape=shape, dtype=dtype, chunk_grid=chunk_grid)

    def compute_encoded_size(self, byte_length: int, array_spec: ArraySpec) -> int:
        return self._fallback.compute_encoded_size(byte_length, array_spec)

    async def decode(self, chunk_bytes_and_specs):
        return await self._fallback.decode(chunk_bytes_and_specs)

    async def encode(self, chunk_arrays_and_specs):
        return await self._fallback.encode(chunk_arrays_and_specs)

    # -- dispatch --------------------------------------------------------------------------

    def _bind(self, spec: ArraySpec) -> BoundChain:
        # zarr builds a new spec for every read, from its metadata's own dtype, fill value and
        # config: the same (immutable) objects as last time bind to the same chain, without
        # hashing the whole spec for the cache below (a few microseconds of a small read)
        memo, fill = self._bind_memo, spec.fill_value
        if (
            memo is not None
            and memo[0] is spec.dtype
            and memo[1] is fill
            and memo[2] is spec.config
            and memo[3] == spec.shape
            and memo[4] == spec.prototype
        ):
            return memo[5]
        plan = self._plan
        bound = plan.bind_inner(spec) if isinstance(plan, _ShardPlan) else plan.bind(spec)
        if isinstance(fill, _IMMUTABLE_FILLS) and not isinstance(fill, np.void):
            memo = (spec.dtype, fill, spec.config, spec.shape, spec.prototype, bound)
            object.__setattr__(self, "_bind_memo", memo)
        return bound

    def _why_not(self, items: list, buffer: NDBuffer, opts: Options) -> tuple[str | None, Any]:
        """(reason to fall back for this call, bound chain)."""
        if self._plan is None:
            return self.fallback_reason, None
        if not items:
            return None, None
        arr = buffer.as_ndarray_like()
        if type(arr) is not np.ndarray:
            return f"output buffer of type {type(arr).__name__} (only numpy is accelerated)", None
        try:
            bound = self._bind(items[0][1])
        except Unsupported as exc:
            return str(exc), None
        return None, bound

    async def _fall_back(self, reason: str, opts: Options, method: str, *args: Any) -> Any:
        if opts.strict:
            raise UnsupportedError(
                f"zkernels does not accelerate this {method} ({reason}) and "
                "codec_pipeline.zkernels.strict is set"
            )
        return await getattr(self._fallback, method)(*args)

    async def read(self, batch_info, out: NDBuffer, drop_axes: tuple[int, ...] = ()) -> Any:
        """Read the batch into ``out``. Returns what zarr's own pipeline returns: None with
        zarr 3.1; with zarr >= 3.2 one ``GetResult`` per item, ``"missing"`` where the chunk
        (shard) is not in the store."""
        opts = options()
        items = list(batch_info)
        reason, bound = self._why_not(items, out, opts)
        if reason is not None:
            return await self._fall_back(reason, opts, "read", items, out, drop_axes)
        if not items:
            return read_results((), 0)
        out_arr = out.as_ndarray_like()
        if isinstance(self._plan, _ShardPlan):
            missing = await self._read_shards(items, out_arr, drop_axes, bound, opts)
        elif (groups := self._shape_groups(items, bound)) is None:
            missing = await self._read_chunks(items, out_arr, drop_axes, bound, opts)
        else:
            missing = [False] * len(items)

            async def group_read(positions, group, group_bound) -> None:
                got = await self._read_chunks(group, out_arr, drop_axes, group_bound, opts)
                for i, m in zip(positions, got, strict=True):
                    missing[i] = m

            await _gather(group_read(*g) for g in groups)
        return read_results(missing, len(items))

    async def write(self, batch_info, value: NDBuffer, drop_axes: tuple[int, ...] = ()) -> None:
        opts = options()
        items = list(batch_info)
        reason, bound = self._why_not(items, value, opts)
        if reason is not None:
            return await self._fall_back(reason, opts, "write", items, value, drop_axes)
        if not items:
            return None
        value_arr = value.as_ndarray_like()
        if isinstance(self._plan, _ShardPlan):
            await self._write_shards(items, value_arr, bound, opts)
        elif (groups := self._shape_groups(items, bound)) is None:
            await self._write_chunks(items, value_arr, drop_axes, bound, opts)
        else:
            await _gather(
                self._write_chunks(group, value_arr, drop_axes, group_bound, opts)
                for _positions, group, group_bound in groups
            )
        return None

    def _shape_groups(self, items: list, bound: BoundChain) -> list | None:
        """None when every item's chunk has ``bound``'s shape (regular grids); else, for a
        rectilinear grid (zarr >= 3.2), (positions, items, bound chain) per chunk shape."""
        shape = bound.shape
        if all(it[1].shape == shape for it in items):
            return None
        by_shape: dict[tuple[int, ...], tuple[list[int], list]] = {}
        for i, it in enumerate(items):
            positions, group = by_shape.setdefault(tuple(it[1].shape), ([], []))
            positions.append(i)
            group.append(it)
        return [(pos, group, self._bind(group[0][1])) for pos, group in by_shape.values()]

    # -- reads -----------------------------------------------------------------------------

    async def _read_shards(self, items, out_arr, drop_axes, bound, opts) -> list[bool]:
        """Read each shard; return which were missing from the store."""
        n_items = len(items)
        if n_items == 1:
            missing = _read_small_local(self._plan, items[0], out_arr, drop_axes, bound, opts)
            if missing is not None:
                return [missing]

        def read_sync(sr: _ShardRead) -> bool:
            """IO, and the decode too when it is one batch: True when nothing is left."""
            one_batch = _parts(sr.n_touched, bound.nbytes, n_items, opts.threads) == 1
            sr.prepare_sync(decode_now=one_batch)
            units = sr.units
            if units and not one_batch:
                return False
            if units:
                sr.decode_units(units)
            sr.finish()
            return True

        # Shards of a sync store go to the pool as soon as they are set up (one task each: IO
        # and a one-batch decode), so that the first is read while the next is prepared. Small
        # reads stay on this thread: the work is the chunks decoded, not the output (10,000
        # points may touch 8,000 chunks), and it is known once enough shards are set up.
        reads: list[_ShardRead] = []
        batch = None
        work = 0
        try:
            for it in items:
                sr = _ShardRead(self._plan, it, out_arr, drop_axes, bound, opts)
                reads.append(sr)
                if batch is not None:
                    if sr.sync:
                        batch.submit(read_sync, sr)
                    continue
                work += sr.n_touched * bound.nbytes
                if work > opts.inline_bytes and opts.threads > 1:
                    batch = _executor.Batch(opts.threads)
                    for r in reads:
                        if r.sync:
                            batch.submit(read_sync, r)
        except BaseException:
            if batch is not None:  # nothing may still write into the output once we raise
                with suppress(BaseException):
                    await batch.results()
            raise
        inline = batch is None
        if batch is not None:
            done = iter(await batch.results())
            left = [sr for sr in reads if not sr.sync or not next(done)]
        else:
            left = [sr for sr in reads if not sr.sync or not read_sync(sr)]

        limit = _request_limit() if any(not sr.sync for sr in left) else None

        async def rest(sr: _ShardRead) -> None:
            if not sr.sync:
                sr.limit = limit
                await sr.prepare_async(inline)
            if sr.units:
                await _run_batches(sr.decode_units, sr.units, bound, opts, inline, n_items)
            sr.finish()

        if len(left) == 1:
            await rest(left[0])
        elif left:
            await _gather(rest(sr) for sr in left)
        return [sr.missing for sr in reads]

    async def _read_chunks(self, items, out_arr, drop_axes, bound, opts) -> list[bool]:
        """Read each chunk; return which were missing from the store (by item position)."""
        inline = len(items) * bound.nbytes <= opts.inline_bytes
        validate = opts.validate_checksums
        missing = [False] * len(items)
        kernel = (
            bound.kernel_steps is not None
            and not drop_axes
            and len(bound.shape) > 0
            and out_arr.dtype == bound.native_dtype
        )
        chunk_shape = tuple(bound.shape)
        one_chunk = (1,) * len(chunk_shape) + (2,)
        origin = (0,) * len(chunk_shape)
        whole = tuple(slice(0, n, 1) for n in chunk_shape)

        def decode_into(entry) -> None:
            (i, (getter, _spec, chunk_sel, out_sel, complete)), raw = entry
            if raw is None:
                missing[i] = True
                _fill(out_arr, out_sel, bound.fill_value)
                return
            if kernel and is_slices(out_sel):
                target = out_arr[(*out_sel, Ellipsis)]
                # only slices compare with ==: an array in chunk_sel (orthogonal selections)
                # would be compared element by element
                if (complete and is_slices(chunk_sel) and chunk_sel == whole
                        and target.shape == chunk_shape):
                    box = (target, origin)  # the whole chunk, as zarr's indexers write it
                else:
                    box = _box_of(chunk_sel, chunk_shape, target)
                if box is not None:  # decode straight into the output, no temporary
                    try:
                        decode_chunks(
                            [raw],
                            np.array([0, raw.size], dtype=np.uint64).reshape(one_chunk),
                            box[0],
                            steps=bound.kernel_steps,
                            chunk_shape=bound.shape,
                            region_start=box[1],
                            fill_value=bound.fill_bytes,
                            swap_unit=bound.swap_unit,
                            validate=validate,
                            name_chunks=False,
                        )
                    except ZKernelsError as exc:
                        raise _rekey(exc, _key(getter))
                    return
            try:
                chunk = bound.decode(raw, validate)
            except Exception as exc:  # noqa: BLE001 - our error, caused by it (_rekey)
                raise _rekey(exc, _key(getter))
            _assign(out_arr, out_sel, chunk, chunk_sel, drop_axes)

        def fetch_decode(batch) -> None:
            for entry in batch:
                decode_into((entry, _get_sync(entry[1][0], entry[1][1].prototype)))

        sync_items, async_items = _by_store(list(enumerate(items)), lambda e: e[1][0])
        tasks = []
        if sync_items:
            tasks.append(_run_batches(fetch_decode, sync_items, bound, opts, inline))
        if async_items:

            async def fetch_then_decode() -> None:
                limit = _request_limit()
                raws = await asyncio.gather(
                    *(_get_async(e[1][0], e[1][1].prototype, None, limit) for e in async_items)
                )
                entries = list(zip(async_items, raws, strict=True))

                def run(batch):
                    for e in batch:
                        decode_into(e)

                await _run_batches(run, entries, bound, opts, inline)

            tasks.append(fetch_then_decode())
        await _gather(tasks)
        return missing

    # -- writes ----------------------------------------------------------------------------

    async def _write_shards(self, items, value_arr, bound, opts) -> None:
        inline = value_arr.nbytes <= opts.inline_bytes
        writes = [_ShardWrite(self._plan, it, value_arr, bound, opts) for it in items]
        # new shards assembled and waiting for the disk, at most this many at once
        in_flight = asyncio.Semaphore(2 * _executor.IO_THREADS)
        swap = opts.swap_writes
        limit = _request_limit() if any(not sw.sync for sw in writes) else None  # async stores

        async def write_out(sw: _ShardWrite, data: np.ndarray | None) -> None:
            if type(sw.setter.store) is not LocalStore:  # a memory store: no wait to hide
                _set_sync(sw.setter, sw.proto, data, swap)
                return
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                _executor.get_io_pool(), _set_sync, sw.setter, sw.proto, data, swap
            )

        def whole_job(sw: _ShardWrite) -> np.ndarray | None:
            """Read the old shard if needed, encode, assemble: one pool task, no hop."""
            if sw.need_existing:
                sw.set_existing(_get_sync(sw.setter, sw.proto))
            return sw.assemble(sw.encode_here())

        async def one(sw: _ShardWrite) -> None:
            try:
                if sw.sync and inline:
                    _set_sync(sw.setter, sw.proto, whole_job(sw), swap)
                    return
                n_units = len(sw.kchunks) if sw.kbox is not None else len(sw.entries)
                if sw.sync and _parts(n_units, bound.nbytes, len(writes), opts.threads) == 1:
                    if type(sw.setter.store) is LocalStore and swap:
                        # the file written by the task that made it: with swapped writes
                        # nothing waits on the disk, and a hop to the IO threads cost more
                        # than it hid (docs/performance.md, session 9)
                        await _in_pool(
                            lambda: _set_sync(sw.setter, sw.proto, whole_job(sw), swap),
                            opts, False,
                        )
                        return
                    # assembled shards wait for the disk on the IO threads (bounded), while the
                    # pool goes on encoding the next ones
                    async with in_flight:
                        data = await _in_pool(lambda: whole_job(sw), opts, False)
                        await write_out(sw, data)
                    return
                if sw.need_existing:
                    if sw.sync:
                        shard = await _in_pool(
                            lambda: _get_sync(sw.setter, sw.proto), opts, inline
                        )
                    else:
                        shard = await _get_async(sw.setter, sw.proto, None, limit)
                    sw.set_existing(shard)
                kernel_results = []
                if sw.kbox is not None:
                    kernel_results = await _run_batches(
                        sw.encode_kernel, sw.kchunks, bound, opts, inline, len(writes)
                    )
                else:
                    results = await _run_batches(
                        sw.encode_entries, sw.entries, bound, opts, inline, len(writes)
                    )
                    for batch in results:
                        sw.encoded.update(batch)
                data = await _in_pool(lambda: sw.assemble(kernel_results), opts, inline)
                if sw.sync:
                    await write_out(sw, data)
                else:
                    await _set_async(sw.setter, sw.proto, data, limit)
            except ZKernelsError as exc:
                raise _rekey(exc, sw.key)

        await _gather(one(sw) for sw in writes)

    async def _write_chunks(self, items, value_arr, drop_axes, bound, opts) -> None:
        inline = len(items) * bound.nbytes <= opts.inline_bytes

        def new_bytes(item, existing_raw) -> np.ndarray | None:
            setter, _spec, chunk_sel, out_sel, complete = item
            try:
                chunk = _merge(bound, existing_raw, value_arr, chunk_sel, out_sel, complete,
                               drop_axes, opts, _key(setter))
                if not bound.write_empty_chunks and _is_empty_chunk(chunk, bound):
                    return None
                return bound.encode(chunk)
            except ZKernelsError as exc:
                raise _rekey(exc, _key(setter))

        def sync_batch(batch) -> None:
            for item in batch:
                proto = item[1].prototype
                existing = None if item[4] else _get_sync(item[0], proto)
                _set_sync(item[0], proto, new_bytes(item, existing), opts.swap_writes)

        sync_items, async_items = _by_store(items)
        tasks = []
        if sync_items:
            tasks.append(_run_batches(sync_batch, sync_items, bound, opts, inline))
        if async_items:

            async def async_write() -> None:
                limit = _request_limit()

                async def existing_of(item):
                    if item[4]:
                        return None
                    return await _get_async(item[0], item[1].prototype, None, limit)

                existing = await asyncio.gather(*(existing_of(it) for it in async_items))
                pairs = list(zip(async_items, existing, strict=True))

                def run(batch):
                    return [new_bytes(it, ex) for it, ex in batch]

                encoded = await _run_batches(run, pairs, bound, opts, inline)
                flat = [e for b in encoded for e in b]
                await asyncio.gather(
                    *(
                        _set_async(it[0], it[1].prototype, data, limit)
                        for it, data in zip(async_items, flat, strict=True)
                    )
                )

            tasks.append(async_write())
        await _gather(tasks)


# zarr finds pipelines by "module.qualname"; users write zkernels.KernelCodecPipeline.
KernelCodecPipeline.__module__ = "zkernels"
zarr.registry.register_pipeline(KernelCodecPipeline)
