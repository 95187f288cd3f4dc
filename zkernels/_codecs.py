"""Codec chains that zkernels decodes and encodes itself, one chunk at a time.

A :class:`ChunkChain` is built from a zarr codec list when every codec in it is one we know how to
run without zarr's async machinery: ``transpose`` (array to array), ``bytes`` or zarr v2's
compressor/filters (array to bytes), and any bytes-to-bytes codec with a synchronous path (zstd,
blosc, gzip, crc32c, numcodecs wrappers). :meth:`ChunkChain.bind` fixes it to one chunk spec.

Every transformation mirrors what zarr 3.1's codecs do, so that stored bytes are identical:
encoding goes through the very numcodecs objects zarr uses; only decoding of zstd (a reusable
context per thread), gzip (zlib in one call) and crc32c (our kernel) takes a different, faster,
route to the same result.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from math import prod
from typing import Any

import numcodecs
import numpy as np
from numcodecs.compat import ensure_bytes, ensure_ndarray_like
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, Codec
from zarr.codecs.blosc import BloscCodec
from zarr.codecs.bytes import BytesCodec
from zarr.codecs.crc32c_ import Crc32cCodec
from zarr.codecs.gzip import GzipCodec
from zarr.codecs.transpose import TransposeCodec
from zarr.codecs.zstd import ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer.cpu import as_numpy_array_wrapper
from zarr.core.codec_pipeline import fill_value_or_default
from zarr.core.dtype.common import HasEndianness

from zkernels import _executor
from zkernels._crc32c import crc32c
from zkernels._decode import can_decode
from zkernels._encode import can_encode, can_test_fill, encode_chunks
from zkernels.errors import ChecksumError, CorruptChunkError

try:  # reusable decompression contexts; numcodecs makes a new one per call
    import zstandard as _zstandard
except ImportError:  # pragma: no cover - optional
    _zstandard = None

try:
    from zarr.codecs._v2 import V2Codec
except ImportError:  # pragma: no cover
    V2Codec = None  # type: ignore[assignment,misc]

try:
    from zarr.codecs.numcodecs._codecs import _NumcodecsBytesBytesCodec
except ImportError:  # pragma: no cover
    _NumcodecsBytesBytesCodec = None  # type: ignore[assignment,misc]


class Unsupported(Exception):
    """Internal: a codec list zkernels does not run itself (the reason is the message)."""


def _u8(buf: Any) -> np.ndarray:
    """A 1-d uint8 view of any contiguous buffer (no copy)."""
    if isinstance(buf, np.ndarray):
        if buf.dtype == np.uint8 and buf.ndim == 1:
            return buf
        return buf.reshape(-1).view(np.uint8)
    return np.frombuffer(buf, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# bytes-to-bytes steps


class _ZstdStep:
    """zstd: decode through a per-thread reusable context; encode through numcodecs (as zarr)."""

    _local = threading.local()

    def __init__(self, codec: ZstdCodec) -> None:
        self.codec = codec
        self.numcodec = codec._zstd_codec

    def decode(self, buf: np.ndarray, validate: bool) -> np.ndarray:
        if _zstandard is not None:
            dctx = getattr(self._local, "dctx", None)
            if dctx is None:
                dctx = self._local.dctx = _zstandard.ZstdDecompressor()
            try:  # bytes after the frame are an error, as in numcodecs (and the kernel)
                out = dctx.decompress(buf, allow_extra_data=False)
            except _zstandard.ZstdError:
                out = b""  # e.g. a frame without its content size: numcodecs streams those
            if out:
                return np.frombuffer(out, dtype=np.uint8)
            # nothing: python-zstandard stops at a first frame that declares 0 bytes, without
            # looking at the frames after it, which numcodecs (and the kernel) decode
        return _u8(self.numcodec.decode(buf))

    def encode(self, buf: np.ndarray) -> np.ndarray:
        return _u8(self.numcodec.encode(buf))


class _Crc32cStep:
    """crc32c: 4-byte little-endian checksum appended to the data (zarr's crc32c codec)."""

    def __init__(self, codec: Crc32cCodec) -> None:
        self.codec = codec

    def decode(self, buf: np.ndarray, validate: bool) -> np.ndarray:
        if buf.size < 4:
            raise CorruptChunkError(
                f"chunk of {buf.size} bytes is too short to hold its 4-byte crc32c checksum"
            )
        inner = buf[:-4]
        if validate:
            stored = int.from_bytes(buf[-4:].tobytes(), "little")
            computed = crc32c(inner)
            if stored != computed:
                raise ChecksumError(
                    f"chunk crc32c mismatch: stored 0x{stored:08x}, computed 0x{computed:08x} "
                    f"over {inner.size} bytes"
                )
        return inner

    def encode(self, buf: np.ndarray) -> np.ndarray:
        out = np.empty(buf.size + 4, dtype=np.uint8)
        out[:-4] = buf
        out[-4:] = np.frombuffer(crc32c(buf).to_bytes(4, "little"), dtype=np.uint8)
        return out


class _SyncCodecStep:
    """Any zarr bytes-to-bytes codec with ``_decode_sync`` / ``_encode_sync`` (blosc, gzip...)."""

    def __init__(self, codec: BytesBytesCodec, spec: ArraySpec) -> None:
        self.codec = codec
        self.spec = spec
        self.buffer = spec.prototype.buffer

    def decode(self, buf: np.ndarray, validate: bool) -> np.ndarray:
        out = self.codec._decode_sync(self.buffer.from_array_like(buf), self.spec)
        return _u8(out.as_numpy_array())

    def encode(self, buf: np.ndarray) -> np.ndarray:
        out = self.codec._encode_sync(self.buffer.from_array_like(buf), self.spec)
        return _u8(out.as_numpy_array())


_NUMCODECS_BLOSC = getattr(numcodecs, "Blosc", ())  # () when numcodecs was built without it


def _blosc_frame_fits(buf: np.ndarray) -> None:
    """c-blosc trusts a frame's header: numcodecs decodes a frame cut short by reading past its
    end (and returns what lies there). The kernel refuses such a frame, and so does every Python
    path, before numcodecs sees it. Bytes after the frame are ignored, as by numcodecs."""
    if buf.size < 16 or int.from_bytes(buf[12:16].tobytes(), "little") > buf.size:
        raise CorruptChunkError(
            f"could not decode: blosc: bad header (a frame of {buf.size} bytes, shorter than its "
            "header or than the size the header gives)"
        )


class _BloscStep(_SyncCodecStep):
    """zarr's blosc codec: decoded after a check that the frame is whole, encoded off the main
    thread (see `_off_main_thread`)."""

    def decode(self, buf: np.ndarray, validate: bool) -> np.ndarray:
        _blosc_frame_fits(buf)
        return super().decode(buf, validate)

    def encode(self, buf: np.ndarray) -> np.ndarray:
        if _one_blosc_block(self.codec._blosc_codec, buf.nbytes):
            return super().encode(buf)
        return _off_main_thread(super().encode, buf)


class _NumcodecsStep:
    """A ``zarr.codecs.numcodecs`` wrapper: its numcodecs object, as zarr's wrapper calls it."""

    def __init__(self, codec: Any, spec: ArraySpec) -> None:
        self.codec = codec
        self.prototype = spec.prototype

    def decode(self, buf: np.ndarray, validate: bool) -> np.ndarray:
        if isinstance(self.codec._codec, _NUMCODECS_BLOSC):
            _blosc_frame_fits(buf)
        out = as_numpy_array_wrapper(
            self.codec._codec.decode, self.prototype.buffer.from_array_like(buf), self.prototype
        )
        return _u8(out.as_numpy_array())

    def encode(self, buf: np.ndarray) -> np.ndarray:
        args = (self.codec._codec.encode, self.prototype.buffer.from_array_like(buf),
                self.prototype)
        if isinstance(self.codec._codec, _NUMCODECS_BLOSC) and not _one_blosc_block(
                self.codec._codec, buf.nbytes):
            out = _off_main_thread(as_numpy_array_wrapper, *args)
        else:
            out = as_numpy_array_wrapper(*args)
        return _u8(out.as_numpy_array())


_BLOSC_AGREES: dict[tuple, bool] = {}


def _blosc_agrees(numcodec: Any, params: dict[str, Any]) -> bool:
    """Whether the encode kernel, given ``params`` (read from numcodecs' ``Blosc`` object, a
    private attribute among them), stores what ``numcodec.encode`` stores: checked once per
    set of parameters on 8 KiB of sample data, with numcodecs run off the main thread as zarr
    runs it. A numcodecs that renamed or reinterpreted a parameter then loses the kernel, not
    the bytes."""
    key = (type(numcodec), *sorted(params.items()))
    agrees = _BLOSC_AGREES.get(key)
    if agrees is None:
        sample = (np.arange(4096, dtype="<u4") * 2654435761 % 3001).astype("<u2").view(np.uint8)
        try:
            ours, _ = encode_chunks(sample, [0], steps=("blosc",), chunk_shape=sample.shape,
                                    region_start=(0,), chunks_per_shard=(1,), **params)
            theirs = _off_main_thread(numcodec.encode, sample)
            agrees = bytes(ours) == bytes(theirs)
        except Exception:  # noqa: BLE001 - numcodecs or the kernel refused: leave it to numcodecs
            agrees = False
        _BLOSC_AGREES[key] = agrees
    return agrees


def _one_blosc_block(numcodec: Any, nbytes: int) -> bool:
    """Whether c-blosc compresses ``nbytes`` as one block, which it does in the calling thread
    whatever its thread count (the same bytes on the main thread as off it): under 32 KiB (its
    L1 size, below which the automatic block size is the whole buffer), and not beyond a block
    size the codec forces."""
    forced = getattr(numcodec, "blocksize", 0) or 0
    return nbytes < 32768 and (forced <= 0 or nbytes <= forced)


def _off_main_thread(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, called from a thread other than the main one; its exception, if any,
    raised here. On the main thread numcodecs lets c-blosc compress with its own threads, which
    may store a large chunk's blocks in another order (and lets c-blosc's environment variables
    override the parameters); zarr always runs its codecs off the main thread
    (``asyncio.to_thread``), so the bytes it stores are the single-threaded ones. Our Python
    blosc encodes run here: in the calling thread (pool threads, zarr's event-loop thread)
    unless it is the main one, which happens when the caller drives zarr's async API from it:
    then on one of zkernels' IO threads (a hop of some 20 us; the encode kernel, which makes
    c-blosc's one-thread call itself, costs more than that per call for a single chunk). A
    chunk c-blosc compresses as one block needs no hop (`_one_blosc_block`)."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    return _executor.get_io_pool().submit(fn, *args).result()


def _defined_by(cls: type, name: str) -> type:
    return next(k for k in cls.__mro__ if name in vars(k))


def _zarr_calls_sync(codec: BytesBytesCodec) -> bool:
    """Whether zarr, running ``codec``, ends up in its ``_decode_sync`` / ``_encode_sync``: the
    batch ``decode`` / ``encode`` are zarr's, and the async ``_decode_single`` /
    ``_encode_single`` come from the class that defines the sync method or one above it (a
    subclass overriding only the async method is run by zarr's pipeline, which calls it)."""
    cls = type(codec)
    for d in ("decode", "encode"):
        if getattr(cls, d) is not getattr(BytesBytesCodec, d):
            return False
        single, sync = f"_{d}_single", f"_{d}_sync"
        if getattr(cls, single) is not getattr(_defined_by(cls, sync), single):
            return False
    return True


def _bytes_step(codec: BytesBytesCodec, spec: ArraySpec | None) -> Any:
    if type(codec) is ZstdCodec:
        return _ZstdStep(codec)
    if type(codec) is Crc32cCodec:
        return _Crc32cStep(codec)
    if type(codec) is GzipCodec:
        return None if spec is None else _GzipStep(codec, spec)
    name = type(codec).__name__
    overridden = Unsupported(f"bytes-to-bytes codec {name} overrides its decode or encode")
    if _NumcodecsBytesBytesCodec is not None and isinstance(codec, _NumcodecsBytesBytesCodec):
        base = _NumcodecsBytesBytesCodec
        if any(
            getattr(type(codec), m) is not getattr(base, m)
            for m in ("decode", "encode", "_decode_single", "_encode_single")
        ):
            raise overridden
        return None if spec is None else _NumcodecsStep(codec, spec)
    if hasattr(codec, "_decode_sync") and hasattr(codec, "_encode_sync"):
        if not _zarr_calls_sync(codec):
            raise overridden
        step = _BloscStep if type(codec) is BloscCodec else _SyncCodecStep
        return None if spec is None else step(codec, spec)
    raise Unsupported(f"bytes-to-bytes codec {name} has no synchronous path")


class _GzipStep(_SyncCodecStep):
    """gzip: a chunk that is one whole gzip member (what numcodecs writes) is inflated by zlib
    in one call, checked by zlib as by numcodecs (header, CRC-32 and length of the member);
    anything else (several members, padding after one, damage) goes to numcodecs, as zarr
    sends it, which gives its own result or error. numcodecs' ``GzipFile`` over a ``BytesIO``
    costs about 7 us more per chunk of 8 KiB. Encoding is numcodecs' (the stored bytes)."""

    def decode(self, buf: np.ndarray, validate: bool) -> np.ndarray:
        inflater = zlib.decompressobj(31)  # 16 + 15: a gzip header and trailer, 32 KiB window
        try:
            out = inflater.decompress(buf)
        except zlib.error:
            out = None
        if out is not None and inflater.eof and not inflater.unused_data:
            return np.frombuffer(out, dtype=np.uint8)
        return super().decode(buf, validate)


# ---------------------------------------------------------------------------------------------
# chains


def _split_codecs(codecs: tuple[Codec, ...]):
    aa = tuple(c for c in codecs if isinstance(c, ArrayArrayCodec))
    ab = [c for c in codecs if isinstance(c, ArrayBytesCodec)]
    bb = tuple(c for c in codecs if isinstance(c, BytesBytesCodec))
    if len(ab) != 1:
        raise Unsupported("codec list without exactly one array-to-bytes codec")
    return aa, ab[0], bb


def _native_dtype_ok(dtype: np.dtype) -> bool:
    # object and variable-width string dtypes are zarr's business
    return dtype.kind not in ("O", "T") and not dtype.hasobject


@dataclass(frozen=True)
class ChunkChain:
    """A codec list that zkernels runs itself (not yet bound to a chunk spec)."""

    codecs: tuple[Codec, ...]

    @classmethod
    def from_codecs(cls, codecs: tuple[Codec, ...]) -> ChunkChain:
        aa, ab, bb = _split_codecs(codecs)
        for c in aa:
            if type(c) is not TransposeCodec:
                raise Unsupported(f"array-to-array codec {type(c).__name__}")
        if type(ab) is not BytesCodec and not (V2Codec is not None and type(ab) is V2Codec):
            raise Unsupported(f"array-to-bytes codec {type(ab).__name__}")
        for c in bb:
            _bytes_step(c, None)  # raises Unsupported
        return cls(tuple(codecs))

    def bind(self, spec: ArraySpec) -> BoundChain:
        """The chain bound to ``spec`` (cached: binding costs tens of microseconds, a whole
        single-chunk read's worth; a BoundChain is never modified)."""
        try:
            # the fill value's bits too: specs with fill 0.0 and -0.0 compare (and hash) equal
            fill = spec.fill_value
            return _bind_cached(self, spec, (type(fill), np.asarray(fill).tobytes()))
        except (TypeError, ValueError):  # an unhashable part (a codec, a fill): bind afresh
            return BoundChain(self, spec)


@lru_cache(maxsize=256)
def _bind_cached(chain: ChunkChain, spec: ArraySpec, fill_bits: tuple) -> BoundChain:
    return BoundChain(chain, spec)


class BoundChain:
    """A :class:`ChunkChain` fixed to one chunk spec: decodes and encodes single chunks."""

    def __init__(self, chain: ChunkChain, spec: ArraySpec) -> None:
        aa, ab, bb = _split_codecs(chain.codecs)
        self.spec = spec
        self.shape = tuple(spec.shape)
        self.native_dtype = np.dtype(spec.dtype.to_native_dtype())
        if not _native_dtype_ok(self.native_dtype):
            raise Unsupported(f"data type {spec.dtype} (object or variable-length)")
        self.fill_value = fill_value_or_default(spec)
        self.order = spec.order
        self.write_empty_chunks = spec.config.write_empty_chunks
        # array-to-array: transposes, with the spec each one sees (zarr resolves in order)
        self.transposes: list[tuple[int, ...]] = []
        s = spec
        for c in aa:
            self.transposes.append(tuple(int(i) for i in c.order))
            s = c.resolve_metadata(s)
        self.encoded_shape = tuple(s.shape)
        self.v2 = V2Codec is not None and type(ab) is V2Codec
        if self.v2:
            if self.transposes:
                raise Unsupported("transpose before a zarr v2 codec")
            self.filters = tuple(ab.filters or ())
            self.compressor = ab.compressor
            self.stored_dtype = self.native_dtype
        else:
            endian = ab.endian.value if ab.endian is not None else None
            self.endian = endian
            if isinstance(spec.dtype, HasEndianness):
                self.stored_dtype = np.dtype(
                    replace(spec.dtype, endianness=endian).to_native_dtype()
                )
            else:
                self.stored_dtype = self.native_dtype
        s = ab.resolve_metadata(s)
        self.steps = []
        for c in bb:
            self.steps.append(_bytes_step(c, s))
            s = c.resolve_metadata(s)
        self.nbytes = prod(self.shape) * self.native_dtype.itemsize
        # The dense bulk path copies raw inner-chunk bytes: only a bare `bytes` codec qualifies.
        self.raw_bytes = not self.transposes and not self.steps and not self.v2
        self.swap_unit = self._swap_unit()
        # The chunk decode kernel (zkernels._decode) runs the whole chain in C: a bytes codec
        # followed by crc32c and at most one of zstd/blosc (crc32c outermost), nothing else.
        self.kernel_steps = self._kernel_steps(bb)
        self.encode_steps, self.encode_params = self._encode_steps(bb)
        # the fill value as the kernels write it: one element's bytes in the native dtype
        self.fill_bytes = np.asarray(self.fill_value, dtype=self.native_dtype).tobytes()

    def _kernel_steps(self, bb: tuple[Codec, ...]) -> tuple[str, ...] | None:
        if self.transposes or self.v2 or self.swap_unit is None:
            return None
        names = {ZstdCodec: "zstd", BloscCodec: "blosc", Crc32cCodec: "crc32c"}
        steps = tuple(names.get(type(c), "?") for c in reversed(bb))  # decode order
        return steps if can_decode(steps) else None

    def _encode_steps(self, bb: tuple[Codec, ...]) -> tuple[tuple[str, ...] | None, dict]:
        """The chain for the chunk encode kernel (zkernels._encode): a bytes codec, then
        optionally zstd or blosc, then crc32c; and the compressor's parameters, taken from the
        numcodecs object zarr's codec encodes with (the kernel calls the same library)."""
        if self.transposes or self.v2 or self.swap_unit is None:
            return None, {}
        names = {ZstdCodec: "zstd", BloscCodec: "blosc", Crc32cCodec: "crc32c"}
        steps = tuple(names.get(type(c), "?") for c in bb)
        params: dict[str, Any] = {}
        blosc = None
        for c in bb:
            if type(c) is ZstdCodec:
                params.update(zstd_level=int(c.level), zstd_checksum=bool(c.checksum))
            elif type(c) is BloscCodec:
                try:
                    blosc = c._blosc_codec
                except Exception:  # noqa: BLE001 - zarr's own encode raises it, in Python
                    return None, {}
                # numcodecs before 0.16 has no typesize: it then reads the buffer's, 1 (bytes)
                params.update(blosc_cname=blosc.cname, blosc_clevel=blosc.clevel,
                              blosc_shuffle=blosc.shuffle, blosc_blocksize=blosc.blocksize,
                              blosc_typesize=getattr(blosc, "_typesize", None) or 1)
        if not can_encode(steps, self.nbytes, **params):
            return None, {}
        if blosc is not None and not _blosc_agrees(
            blosc, {k: v for k, v in params.items() if k.startswith("blosc_")}
        ):
            return None, {}
        fill = np.asarray(self.fill_value, dtype=self.native_dtype)  # as the pipeline passes it
        if not self.write_empty_chunks and not can_test_fill(self.stored_dtype, fill):
            return None, {}
        return steps, params

    def _swap_unit(self) -> int | None:
        """Byte-swap unit from stored to native order; None if not a plain byte swap."""
        st, nt = self.stored_dtype, self.native_dtype
        if st == nt:
            return 0
        if st.newbyteorder("=") == nt.newbyteorder("=") and st.kind in "biufcmM":
            return st.itemsize // 2 if st.kind == "c" else st.itemsize
        return None

    # -- decode ---------------------------------------------------------------------------

    def decode(self, raw: Any, validate: bool = True) -> np.ndarray:
        """Decode one chunk's stored bytes to an array of the chunk's shape.

        The result may be a read-only, non-contiguous view (transposes) in the stored byte order.
        """
        buf = _u8(raw)
        for step in reversed(self.steps):
            buf = step.decode(buf, validate)
        if self.v2:
            return self._decode_v2(buf)
        expected = self.nbytes
        if buf.size != expected:
            raise CorruptChunkError(
                f"chunk decodes to {buf.size} bytes, expected {expected} "
                f"({self.encoded_shape} x {self.stored_dtype.itemsize} bytes)"
            )
        arr = buf.view(self.stored_dtype).reshape(self.encoded_shape)
        for order in reversed(self.transposes):
            arr = arr.transpose(np.argsort(order))
        return arr

    def _decode_v2(self, buf: np.ndarray) -> np.ndarray:
        chunk: Any = buf
        if self.compressor is not None:
            if isinstance(self.compressor, _NUMCODECS_BLOSC):
                _blosc_frame_fits(buf)
            chunk = self.compressor.decode(chunk)
        for f in reversed(self.filters):
            chunk = f.decode(chunk)
        chunk = ensure_ndarray_like(chunk)
        try:
            chunk = chunk.view(self.native_dtype)
        except TypeError:
            # as zarr's V2Codec: filters that decode to objects (VLenUTF8 under a fixed-width
            # string dtype, Categorize to object labels) are converted to the array's dtype
            chunk = np.array(chunk).astype(self.native_dtype)
        if chunk.size != prod(self.shape):
            raise CorruptChunkError(
                f"chunk decodes to {chunk.size} elements, expected {prod(self.shape)}"
            )
        chunk = chunk.reshape(-1, order="A")
        return chunk.reshape(self.shape, order=self.order)

    # -- encode ---------------------------------------------------------------------------

    def encode(self, arr: np.ndarray) -> np.ndarray:
        """Encode one chunk (an array of the chunk's shape, native dtype) to its stored bytes."""
        if self.v2:
            return self._encode_v2(arr)
        for order in self.transposes:
            arr = arr.transpose(order)
        dtype = arr.dtype
        if dtype.itemsize > 1 and self.endian is not None and dtype != self.stored_dtype:
            arr = arr.astype(self.stored_dtype)
        buf = arr.ravel().view(np.uint8)
        for step in self.steps:
            buf = step.encode(buf)
        return buf

    def _encode_v2(self, arr: np.ndarray) -> np.ndarray:
        chunk: Any = arr.astype(self.native_dtype, order=self.order, copy=False)
        for f in self.filters:
            chunk = f.encode(chunk)
        if ensure_ndarray_like(chunk).dtype == object:  # zarr's V2Codec refuses it alike
            raise RuntimeError("cannot write object array without object codec")
        if self.compressor is not None:
            if isinstance(self.compressor, _NUMCODECS_BLOSC) and not _one_blosc_block(
                    self.compressor, ensure_ndarray_like(chunk).nbytes):
                chunk = _off_main_thread(self.compressor.encode, chunk)
            else:
                chunk = self.compressor.encode(chunk)
        return np.frombuffer(ensure_bytes(chunk), dtype=np.uint8)

    def new_chunk(self) -> np.ndarray:
        """A chunk filled with the fill value, in the spec's memory order (as zarr creates it)."""
        out = np.empty(self.shape, dtype=self.native_dtype, order=self.order)
        out.fill(self.fill_value)
        return out
