# Chunk decode kernel: decode a run of compressed inner chunks and copy each one's part of an
# output box straight into the caller's array, in one call, without the GIL.
#
# The pipeline reads a shard (or the coalesced byte ranges of the chunks it needs) and hands this
# kernel the bytes, a table of (offset, nbytes) per inner chunk (the shard index itself, for a
# whole shard) and the box. Per chunk, in decode order: zero or more crc32c checks (4-byte
# little-endian checksum appended, zarr's `crc32c` codec), then at most one decompressor (zstd or
# blosc), then the copy into the box with an optional byte swap (the dense kernel's copy, see
# _dense.pxd). No Python object is touched per chunk; the pool runs one call per batch of chunks.
#
# zstd and blosc are called through function pointers found at import (see src/zk_codecs.h):
# numcodecs' own builds of the libraries, so decoding runs exactly the code zarr's codecs run.
#
# Layering (house style): `decode_box_c` is the nogil core (status code + DecodeError);
# `decode_chunks` validates, runs it inside `with nogil:`, and turns a status into our error.

from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cimport numpy as cnp

from zkernels._common cimport as_entry_table, zk_load_le32
from zkernels._crc32c cimport zk_crc32c
from zkernels._dense cimport (MAXDIM, DenseArgs, copy_box, copy_chunk_from,
                              fence_streaming_stores, init_box_args)

cdef extern from "zk_codecs.h" nogil:
    ctypedef struct zk_codec_api:
        void *(*zstd_createDCtx)() noexcept nogil
        size_t (*zstd_freeDCtx)(void *dctx) noexcept nogil
        size_t (*zstd_decompressDCtx)(void *dctx, void *dst, size_t dst_cap, const void *src,
                                      size_t src_size) noexcept nogil
        unsigned long long (*zstd_getFrameContentSize)(const void *src, size_t src_size) noexcept nogil
        unsigned (*zstd_isError)(size_t code) noexcept nogil
        const char *(*zstd_getErrorName)(size_t code) noexcept nogil
        unsigned (*zstd_versionNumber)() noexcept nogil
        int (*blosc_decompress_ctx)(const void *src, void *dest, size_t destsize, int nthreads) noexcept nogil
        void (*blosc_cbuffer_sizes)(const void *cbuffer, size_t *nbytes, size_t *cbytes,
                                    size_t *blocksize) noexcept nogil
        int (*lz4_decompress_safe)(const char *src, char *dst, int compressed_size,
                                   int dst_capacity) noexcept nogil
    zk_codec_api zk_api
    int zk_codecs_set(const char *name, uintptr_t addr)
    int zk_zstd_ready()
    int zk_blosc_ready()
    void *zk_zstd_dctx(int *owned)

cdef extern from "zk_blosc.h" nogil:
    int ZK_BLOSC_OTHER
    ctypedef int (*zk_lz4_decompress_safe_t)(const char *src, char *dst, int compressed_size,
                                              int dst_capacity) noexcept nogil
    int zk_blosc_lz4(zk_lz4_decompress_safe_t lz4, const uint8_t *src, uint8_t *dest,
                     int32_t destsize, uint8_t *tmp)

import operator

import numpy as np

from zkernels import _libs
from zkernels.errors import ChecksumError, CorruptChunkError, ShardIndexError

cnp.import_array()

__all__ = ["decode_chunks", "codec_libraries", "can_decode"]

# sharding_indexed: empty chunk = (2**64-1, 2**64-1)
cdef uint64_t EMPTY = 0xFFFFFFFFFFFFFFFFULL
# zstd.h: ZSTD_CONTENTSIZE_UNKNOWN, ZSTD_CONTENTSIZE_ERROR
cdef unsigned long long ZSTD_UNKNOWN = 0xFFFFFFFFFFFFFFFFULL
cdef unsigned long long ZSTD_ERROR = 0xFFFFFFFFFFFFFFFEULL
# blosc.h: BLOSC_MIN_HEADER_LENGTH
cdef size_t BLOSC_HEADER = 16

cdef enum:
    MAXSTEPS = 8

cdef enum Step:
    STEP_CRC32C = 1
    STEP_ZSTD = 2
    STEP_BLOSC = 3

cdef enum:
    DEC_EMPTY = -1        # not an error: the chunk is empty (chunk_bytes)
    DEC_OK = 0
    DEC_HALF_EMPTY = 1
    DEC_PAST_END = 2
    DEC_BAD_GROUP = 3
    DEC_CRC_SHORT = 4
    DEC_CRC = 5
    DEC_SIZE = 6          # decodes to `got` bytes (or, got == -1, to more than expected)
    DEC_ZSTD = 7          # zstd error `code`
    DEC_BLOSC = 8         # blosc error: `got` < 0 its return value, else a bad header
    DEC_NOMEM = 9

_STEP_CODES = {"crc32c": STEP_CRC32C, "zstd": STEP_ZSTD, "blosc": STEP_BLOSC}


cdef struct DecodeArgs:
    DenseArgs box                      # the output box over the chunk grid (index unused)
    const uint64_t *locs               # (offset, nbytes) per chunk in its source, C order
    const int32_t *groups              # source number per chunk; NULL: every chunk in source 0
    const uint8_t **srcs
    const uint64_t *src_nbytes
    Py_ssize_t n_srcs
    int steps[MAXSTEPS]                # decode order: crc32c checks, then one decompressor
    int n_steps
    bint validate                      # compare crc32c checksums (else only strip them)
    Py_ssize_t first                   # ordinals [first, last) of the box's chunks, C order
    Py_ssize_t last                    # (list mode: of `chunk_list`)
    const int64_t *chunk_list          # list mode: linear chunk numbers; chunk i goes whole to
                                       # box.out + i * chunk_nbytes (C order); NULL: box mode
    const int64_t *box_list            # box mode over a subset: linear numbers of chunks inside
                                       # the box, [first, last) of them decoded; NULL: ordinals


cdef struct DecodeError:
    Py_ssize_t chunk                   # linear (C-order) index of the offending chunk
    uint64_t offset
    uint64_t nbytes
    long long got
    size_t code
    uint32_t stored
    uint32_t computed


# ------------------------------------------------------------------------------------------------
# one chunk

cdef int decode_one(const DecodeArgs *d, const uint8_t *p, uint64_t n, uint8_t *scratch,
                    uint8_t *tmp, void *dctx, const uint8_t **result,
                    DecodeError *err) noexcept nogil:
    """Run the steps over one chunk's stored bytes; `*result` = its decoded bytes (`scratch`
    after a decompressor). `tmp`: a second chunk-sized buffer for blosc's lz4 frames (NULL:
    c-blosc does them all)."""
    cdef uint64_t expected = d.box.chunk_nbytes
    cdef uint32_t stored, computed
    cdef unsigned long long fcs
    cdef size_t r, nb, cb, bs
    cdef int i, ret
    for i in range(d.n_steps):
        if d.steps[i] == STEP_CRC32C:
            if n < 4:
                err.got = <long long>n
                return DEC_CRC_SHORT
            n -= 4
            if d.validate:
                stored = zk_load_le32(p + n)
                computed = zk_crc32c(0, p, <size_t>n)
                if stored != computed:
                    err.stored = stored
                    err.computed = computed
                    err.got = <long long>n
                    return DEC_CRC
        elif d.steps[i] == STEP_ZSTD:
            r = zk_api.zstd_decompressDCtx(dctx, scratch, <size_t>expected, p, <size_t>n)
            if zk_api.zstd_isError(r):
                fcs = zk_api.zstd_getFrameContentSize(p, <size_t>n)
                if fcs != ZSTD_UNKNOWN and fcs != ZSTD_ERROR and fcs != expected:
                    err.got = <long long>fcs
                    return DEC_SIZE
                err.code = r
                return DEC_ZSTD
            p = scratch
            n = r
        else:  # STEP_BLOSC
            if n < BLOSC_HEADER:
                err.got = -1
                return DEC_BLOSC
            zk_api.blosc_cbuffer_sizes(p, &nb, &cb, &bs)
            if cb > n or cb < BLOSC_HEADER:  # blosc trusts the header: never read past our bytes
                err.got = -1
                return DEC_BLOSC
            if nb != expected:
                err.got = <long long>zk_load_le32(p + 4)  # the header's nbytes, unsigned
                return DEC_SIZE
            ret = ZK_BLOSC_OTHER
            if tmp != NULL and expected <= 0x7FFFFFFF:  # lz4 frames: see zk_blosc.h
                ret = zk_blosc_lz4(zk_api.lz4_decompress_safe, p, scratch, <int32_t>expected,
                                   tmp)
            if ret == ZK_BLOSC_OTHER:
                ret = zk_api.blosc_decompress_ctx(p, scratch, <size_t>expected, 1)
            if ret < 0 or <uint64_t>ret != expected:
                err.got = ret if ret < 0 else -2
                return DEC_BLOSC
            p = scratch
            n = expected
    if n != expected:
        err.got = <long long>n
        return DEC_SIZE
    result[0] = p
    return DEC_OK


# ------------------------------------------------------------------------------------------------
# the core: chunks [first, last) of the box, in C order

cdef int chunk_bytes(const DecodeArgs *d, Py_ssize_t lin, const uint8_t **p, uint64_t *n,
                     DecodeError *err) noexcept nogil:
    """Where chunk `lin`'s stored bytes are, checked against its source; DEC_EMPTY when the
    chunk is empty. (A chunk of 0 bytes in an empty source may have `*p` NULL: not empty.)"""
    cdef uint64_t off = d.locs[2 * lin], nb = d.locs[2 * lin + 1]
    cdef int32_t g
    err.chunk = lin
    err.offset = off
    err.nbytes = nb
    if off == EMPTY and nb == EMPTY:
        return DEC_EMPTY
    if off == EMPTY or nb == EMPTY:
        return DEC_HALF_EMPTY
    g = d.groups[lin] if d.groups != NULL else 0
    if g < 0 or g >= d.n_srcs:
        return DEC_BAD_GROUP
    if nb > EMPTY - off or off + nb > d.src_nbytes[g]:
        return DEC_PAST_END
    p[0] = d.srcs[g] + off
    n[0] = nb
    return DEC_OK


cdef int decode_list_c(const DecodeArgs *d, DecodeError *err) noexcept nogil:
    """List mode: chunks chunk_list[first:last], each decoded whole into its own slot."""
    cdef const DenseArgs *a = &d.box
    cdef Py_ssize_t i, lin
    cdef uint64_t nb = 0
    cdef int k, status = DEC_OK, owned = 0
    cdef const uint8_t *chunk
    cdef const uint8_t *src
    cdef uint8_t *slot
    cdef uint8_t *tmp = NULL
    cdef void *dctx = NULL
    for k in range(d.n_steps):
        if d.steps[k] == STEP_BLOSC and tmp == NULL and zk_api.lz4_decompress_safe != NULL:
            tmp = <uint8_t *>malloc(<size_t>a.chunk_nbytes if a.chunk_nbytes > 0 else 1)
            if tmp == NULL:
                return DEC_NOMEM
        if d.steps[k] == STEP_ZSTD and dctx == NULL:
            dctx = zk_zstd_dctx(&owned)
            if dctx == NULL:
                free(tmp)
                return DEC_NOMEM
    for i in range(d.first, d.last):
        lin = <Py_ssize_t>d.chunk_list[i]
        slot = a.out + i * <Py_ssize_t>a.chunk_nbytes
        status = chunk_bytes(d, lin, &src, &nb, err)
        if status == DEC_EMPTY:
            status = DEC_OK
            copy_box(slot, a.chunk_strides, NULL, a.chunk_strides, a.chunk_shape, a.ndim, a)
            continue
        if status != DEC_OK:
            break
        # the slot is the decompressor's output: no copy after it
        status = decode_one(d, src, nb, slot, tmp, dctx, &chunk, err)
        if status != DEC_OK:
            break
        if chunk != slot:
            memcpy(slot, chunk, <size_t>a.chunk_nbytes)
        if a.swap_unit != 0:  # in place: every unit is loaded before it is stored
            copy_box(slot, a.chunk_strides, slot, a.chunk_strides, a.chunk_shape, a.ndim, a)
    free(tmp)
    if owned:
        zk_api.zstd_freeDCtx(dctx)
    return status


cdef int decode_box_c(const DecodeArgs *d, DecodeError *err) noexcept nogil:
    cdef const DenseArgs *a = &d.box
    cdef Py_ssize_t lo[MAXDIM]
    cdef Py_ssize_t cnt[MAXDIM]
    cdef Py_ssize_t c[MAXDIM]
    cdef Py_ssize_t ordinal, rem, lin
    cdef uint64_t nb = 0
    cdef int k, nd = a.ndim, status = DEC_OK, owned = 0
    cdef const uint8_t *chunk
    cdef const uint8_t *src
    cdef uint8_t *scratch = NULL
    cdef uint8_t *tmp = NULL
    cdef void *dctx = NULL
    cdef size_t chunk_cap = <size_t>a.chunk_nbytes if a.chunk_nbytes > 0 else 1
    cdef bint blosc_tmp = False
    if d.first >= d.last:
        return DEC_OK
    for k in range(nd):
        lo[k] = a.region_start[k] // a.chunk_shape[k]
        cnt[k] = (a.region_start[k] + a.out_shape[k] - 1) // a.chunk_shape[k] + 1 - lo[k]
    for k in range(d.n_steps):
        if d.steps[k] == STEP_BLOSC and zk_api.lz4_decompress_safe != NULL:
            blosc_tmp = True
    for k in range(d.n_steps):
        if d.steps[k] != STEP_CRC32C and scratch == NULL:
            # with blosc, a second chunk-sized buffer after it: zk_blosc_lz4's `tmp`
            scratch = <uint8_t *>malloc(chunk_cap * (2 if blosc_tmp else 1))
            if scratch == NULL:
                return DEC_NOMEM
            if blosc_tmp:
                tmp = scratch + chunk_cap
        if d.steps[k] == STEP_ZSTD and dctx == NULL:
            dctx = zk_zstd_dctx(&owned)
            if dctx == NULL:
                free(scratch)
                return DEC_NOMEM
    # chunk coordinates of ordinal `first`
    rem = d.first
    for k in range(nd - 1, -1, -1):
        c[k] = lo[k] + rem % cnt[k]
        rem = rem // cnt[k]
    for ordinal in range(d.first, d.last):
        if d.box_list != NULL:  # the wrapper checked that every listed chunk is in the box
            lin = <Py_ssize_t>d.box_list[ordinal]
            rem = lin
            for k in range(nd - 1, -1, -1):
                c[k] = rem % a.chunks_per_shard[k]
                rem = rem // a.chunks_per_shard[k]
        else:
            lin = 0
            for k in range(nd):
                lin = lin * a.chunks_per_shard[k] + c[k]
        status = chunk_bytes(d, lin, &src, &nb, err)
        if status == DEC_EMPTY:
            status = DEC_OK
            copy_chunk_from(a, c, NULL)
        elif status != DEC_OK:
            break
        else:
            status = decode_one(d, src, nb, scratch, tmp, dctx, &chunk, err)
            if status != DEC_OK:
                break
            copy_chunk_from(a, c, chunk)
        if d.box_list == NULL:  # next chunk of the box, C order
            k = nd - 1
            while k >= 0:
                c[k] += 1
                if c[k] < lo[k] + cnt[k]:
                    break
                c[k] = lo[k]
                k -= 1
    free(scratch)
    if owned:
        zk_api.zstd_freeDCtx(dctx)
    return status


# ------------------------------------------------------------------------------------------------
# the libraries

_ZSTD_SYMBOLS = ("ZSTD_createDCtx", "ZSTD_freeDCtx", "ZSTD_decompressDCtx",
                 "ZSTD_getFrameContentSize", "ZSTD_isError", "ZSTD_getErrorName",
                 "ZSTD_versionNumber")
_BLOSC_SYMBOLS = ("blosc_decompress_ctx", "blosc_cbuffer_sizes")
_BLOSC_OPTIONAL = ("LZ4_decompress_safe",)  # lz4 frames decoded by zk_blosc.h
_LIBRARIES = {}


def _install(kind, module_name, system_name, symbols, optional=()):
    found = _libs.find(module_name, system_name, symbols, optional)
    if found is None:
        return
    label, addrs = found
    for sym, addr in addrs.items():
        zk_codecs_set(sym.encode(), <uintptr_t>addr)
    _LIBRARIES[kind] = label


_install("zstd", "numcodecs.zstd", "zstd", _ZSTD_SYMBOLS)
_install("blosc", "numcodecs.blosc", "blosc", _BLOSC_SYMBOLS, _BLOSC_OPTIONAL)
if "zstd" in _LIBRARIES and zk_api.zstd_versionNumber != NULL:
    _v = zk_api.zstd_versionNumber()
    _LIBRARIES["zstd"] += f", libzstd {_v // 10000}.{_v // 100 % 100}.{_v % 100}"


def codec_libraries():
    """Where the decode kernel found each compression library: ``{"zstd": ..., "blosc": ...}``.

    A library that is absent is missing from the dict; chunks using it are decoded in Python.
    """
    return dict(_LIBRARIES)


def blosc_lz4_frame(frame, Py_ssize_t nbytes):
    """zk_blosc.h's decoder alone (tests): the ``nbytes`` bytes a blosc1 frame decodes to, or
    None where it leaves the frame to c-blosc (another codec, bitshuffle, memcpyed, a failed
    check) or LZ4_decompress_safe was not found."""
    cdef const uint8_t[::1] src = memoryview(frame).cast("B")
    if src.shape[0] < 16 or nbytes < 0 or nbytes > 0x7FFFFFFF:
        return None
    if <Py_ssize_t>zk_load_le32(&src[0] + 12) > src.shape[0]:
        return None  # the header's compressed size: the caller's check
    out = bytearray(max(nbytes, 1))
    tmp = bytearray(max(nbytes, 1))
    cdef uint8_t[::1] o = out
    cdef uint8_t[::1] t = tmp
    cdef int ret
    with nogil:
        ret = zk_blosc_lz4(zk_api.lz4_decompress_safe, &src[0], &o[0], <int32_t>nbytes, &t[0])
    if ret == ZK_BLOSC_OTHER:
        return None
    return bytes(out[:ret])


def can_decode(steps):
    """True if `decode_chunks` runs this chain of steps (decode order) with the libraries found."""
    try:
        _step_codes(steps)
    except (ValueError, LookupError):
        return False
    return True


cdef list _step_codes(object steps):
    try:
        codes = [_STEP_CODES[s] for s in steps]
    except KeyError as exc:
        raise ValueError(
            f"unknown step {exc.args[0]!r}, expected one of {sorted(_STEP_CODES)}"
        ) from None
    if len(codes) > MAXSTEPS:
        raise ValueError(f"at most {MAXSTEPS} steps, got {len(codes)}")
    seen_compressor = False
    for code in codes:
        if code == STEP_CRC32C:
            if seen_compressor:
                raise ValueError("crc32c after the decompressor (in decode order) is not run here")
        else:
            if seen_compressor:
                raise ValueError("at most one decompressor")
            seen_compressor = True
            if code == STEP_ZSTD and not zk_zstd_ready():
                raise LookupError("zstd library not found")
            if code == STEP_BLOSC and not zk_blosc_ready():
                raise LookupError("blosc library not found")
    return codes


# ------------------------------------------------------------------------------------------------
# wrapper

cdef object _box_subset(object subset, tuple cps, tuple chunk_shape, tuple region_start,
                        const Py_ssize_t *out_shape, int nd):
    """`subset` as int64 linear chunk numbers, every one a chunk that intersects the box."""
    subset = np.ascontiguousarray(subset, dtype=np.int64)
    if subset.ndim != 1:
        raise ValueError(f"subset must be 1-d, got shape {subset.shape}")
    if subset.shape[0] == 0:
        return subset
    n_all = 1
    for k in range(len(cps)):
        n_all *= cps[k]
    if subset.min() < 0 or subset.max() >= n_all:
        raise ValueError(f"subset: chunk numbers must lie in [0, {n_all})")
    coords = np.unravel_index(subset, cps)
    for k in range(nd):
        lo = region_start[k] // chunk_shape[k]
        hi = (region_start[k] + out_shape[k] - 1) // chunk_shape[k] + 1 if out_shape[k] else lo
        if (coords[k] < lo).any() or (coords[k] >= hi).any():
            raise ValueError(
                f"subset: a chunk lies outside the box (axis {k}: chunks [{lo}, {hi}))"
            )
    return subset


cdef const uint8_t[::1] _as_bytes(object buf):
    cdef const uint8_t[::1] view
    try:
        view = buf
    except (ValueError, TypeError):
        view = memoryview(buf).cast("B")
    return view


def decode_chunks(sources, locs, out, *, steps, chunk_shape, region_start, groups=None,
                  first=0, last=None, fill_value=None, swap_unit=0, validate=True, chunks=None,
                  subset=None, streaming=False, name_chunks=True):
    """Decode inner chunks and copy each one's part of a box into `out`.

    Parameters
    ----------
    sources : sequence of bytes-like
        The buffers holding the chunks' stored bytes (a whole shard, or coalesced ranges).
    locs : numpy.ndarray
        uint64, shape ``(*chunks_per_shard, 2)``: (offset, nbytes) of each inner chunk in its
        source; (2**64-1, 2**64-1) marks an empty chunk (its part of the box takes the fill
        value). For a whole shard this is the shard index itself. Only the chunks that intersect
        the box are read.
    out : numpy.ndarray
        Writable output of any strides; its shape is the box it covers.
    steps : sequence of str
        The chain in decode order: any number of ``"crc32c"``, then at most one of ``"zstd"``,
        ``"blosc"``. What remains must be a C-order array of `chunk_shape` elements of
        ``out.itemsize`` bytes (in stored byte order, see `swap_unit`).
    chunk_shape, region_start : tuple of int
        Inner chunk shape; position of ``out[0, ..., 0]`` in the shard's element coordinates.
    groups : numpy.ndarray, optional
        int32, shape ``chunks_per_shard``: the source of each chunk; None: all in ``sources[0]``.
    first, last : int
        Decode only the box's chunks with ordinals ``[first, last)`` in C order (a thread's
        share); by default all of them.
    fill_value : bytes-like, optional
        ``out.itemsize`` bytes written where a chunk is empty; None writes zero bytes.
    swap_unit : {0, 2, 4, 8}
        Reverse the byte order of each unit of this size while copying (0: copy as is).
    validate : bool
        Compare crc32c checksums (else they are only stripped).
    chunks : 1-d integer array, optional
        List mode: decode these chunks (linear C-order numbers) whole, chunk ``chunks[i]`` into
        ``out[i]``; `out` must be C-contiguous of shape ``(len(chunks), *chunk_shape)``,
        `region_start` is ignored and `first`, `last` index `chunks`. Used for coordinate
        selections, whose points are then gathered from `out`.
    subset : 1-d integer array, optional
        Box mode over some of the box's chunks: decode these (linear C-order numbers, each one
        intersecting the box) into their part of `out`, in this order, and leave the rest of
        `out` alone; `first`, `last` index `subset`. Used to decode a shard piece by piece as
        its byte ranges arrive. Not with `chunks`.
    streaming : bool
        Box mode: write `out` with streaming (non-temporal) stores, which bypass the cache
        (where its last axis is contiguous): faster for a large output nobody reads again soon.
    name_chunks : bool
        Errors name the inner chunk (``inner chunk (i, j): ...``); False for a lone chunk (an
        unsharded array's), whose errors then speak of "chunk" only.

    Raises
    ------
    ShardIndexError
        A chunk's entry is half empty or its bytes lie past the end of its source.
    ChecksumError
        A crc32c checksum does not match.
    CorruptChunkError
        A chunk does not decompress, or decodes to the wrong number of bytes.

    The error names the inner chunk; chunks before it may already be written to `out`.
    """
    cdef DecodeArgs d
    cdef DecodeError err
    cdef int k, status
    cdef Py_ssize_t n_touched = 1
    codes = _step_codes(steps)
    chunk_shape = tuple(operator.index(v) for v in chunk_shape)
    region_start = tuple(operator.index(v) for v in region_start)
    locs = as_entry_table(locs, "locs", ShardIndexError)
    cps = tuple(locs.shape)[:locs.ndim - 1]
    d.chunk_list = NULL
    d.box_list = NULL
    if chunks is not None and subset is not None:
        raise ValueError("chunks (list mode) and subset (box mode) exclude each other")
    if chunks is not None:
        chunks = np.ascontiguousarray(chunks, dtype=np.int64)
        n_list = chunks.shape[0] if chunks.ndim == 1 else -1
        if not isinstance(out, np.ndarray) or out.shape != (n_list, *chunk_shape) \
                or not out.flags.c_contiguous:
            raise ValueError(
                f"list mode: out must be C-contiguous of shape (len(chunks), *chunk_shape) = "
                f"({n_list}, {chunk_shape}), got {getattr(out, 'shape', None)}"
            )
        n_all = 1
        for k in range(len(cps)):
            n_all *= cps[k]
        if n_list and (chunks.min() < 0 or chunks.max() >= n_all):
            raise ValueError(f"list mode: chunk numbers must lie in [0, {n_all})")
        if n_list == 0:
            return None
        keep = init_box_args(&d.box, out[0], chunk_shape, (0,) * len(chunk_shape), cps,
                             fill_value, swap_unit, False)
        d.chunk_list = <const int64_t *>cnp.PyArray_DATA(chunks)
    else:
        keep = init_box_args(&d.box, out, chunk_shape, region_start, cps, fill_value, swap_unit,
                             bool(streaming))
    if groups is not None:
        groups = np.asarray(groups)
        if groups.dtype.kind not in "iu":  # no silent truncation (floats, bools)
            raise TypeError(f"groups must hold integers, not {groups.dtype}")
        if groups.size and (groups.min() < -2**31 or groups.max() >= 2**31):  # before the cast
            raise ValueError("groups names a source that does not exist")
        groups = np.ascontiguousarray(groups, dtype=np.int32)
        if groups.shape != cps:
            raise ValueError(f"groups has shape {groups.shape}, expected {cps}")
        d.groups = <const int32_t *>cnp.PyArray_DATA(groups)
    else:
        d.groups = NULL
    views = [_as_bytes(s) for s in sources]
    if not views:
        raise ValueError("no sources")
    n_srcs = len(views)
    ptrs = np.empty(n_srcs, dtype=np.uintp)
    sizes = np.empty(n_srcs, dtype=np.uint64)
    cdef const uint8_t[::1] v
    cdef uintptr_t[::1] ptr_view = ptrs
    for k in range(n_srcs):
        v = views[k]
        ptr_view[k] = <uintptr_t>&v[0] if v.shape[0] > 0 else 0
        sizes[k] = v.shape[0]
    d.srcs = <const uint8_t **>cnp.PyArray_DATA(ptrs)
    d.src_nbytes = <const uint64_t *>cnp.PyArray_DATA(sizes)
    d.n_srcs = n_srcs
    d.locs = <const uint64_t *>cnp.PyArray_DATA(locs)
    d.n_steps = len(codes)
    for k in range(d.n_steps):
        d.steps[k] = codes[k]
    d.validate = bool(validate)
    if chunks is not None:
        n_touched = chunks.shape[0]
    elif subset is not None:
        subset = _box_subset(subset, cps, chunk_shape, region_start, d.box.out_shape, d.box.ndim)
        n_touched = subset.shape[0]
        if n_touched:
            d.box_list = <const int64_t *>cnp.PyArray_DATA(subset)
    else:
        for k in range(d.box.ndim):
            if d.box.out_shape[k] == 0:
                n_touched = 0
                break
            n_touched *= ((region_start[k] + d.box.out_shape[k] - 1) // chunk_shape[k] + 1
                          - region_start[k] // chunk_shape[k])
    first = operator.index(first)
    last = n_touched if last is None else operator.index(last)
    if not 0 <= first <= last <= n_touched:
        raise ValueError(f"chunk ordinals [{first}, {last}) outside [0, {n_touched})")
    d.first = first
    d.last = last

    with nogil:
        if d.chunk_list != NULL:
            status = decode_list_c(&d, &err)
        else:
            status = decode_box_c(&d, &err)
        if d.box.nontemporal:
            fence_streaming_stores()  # streaming stores are weakly ordered
    if status == DEC_OK:
        return None
    coords = tuple(int(c) for c in np.unravel_index(err.chunk, cps))
    where = f"inner chunk {coords}" if name_chunks else "chunk"
    pre = f"{where}: " if name_chunks else ""
    at = f"{where} (offset={err.offset}, nbytes={err.nbytes})"
    if status == DEC_HALF_EMPTY:
        raise ShardIndexError(f"{at}: half-empty index entry, only one field is 2**64-1")
    if status == DEC_PAST_END:
        g = int(groups[coords]) if groups is not None else 0  # noqa
        raise ShardIndexError(f"{at}: offset past the end of its {int(sizes[g])}-byte buffer")
    if status == DEC_BAD_GROUP:
        raise ValueError(f"{where}: source number out of range")
    if status == DEC_CRC_SHORT:
        raise CorruptChunkError(
            f"{pre}chunk of {err.got} bytes is too short to hold its 4-byte crc32c checksum"
        )
    if status == DEC_CRC:
        raise ChecksumError(
            f"{pre}chunk crc32c mismatch: stored 0x{err.stored:08x}, computed "
            f"0x{err.computed:08x} over {err.got} bytes"
        )
    expected = d.box.chunk_nbytes
    if status == DEC_SIZE:
        got = "more than that" if err.got == -1 else f"{err.got} bytes"
        raise CorruptChunkError(
            f"{pre}chunk decodes to {got}, expected {expected} "
            f"({chunk_shape} x {d.box.itemsize} bytes)"
        )
    if status == DEC_ZSTD:
        name = zk_api.zstd_getErrorName(err.code).decode("utf-8", "replace")
        raise CorruptChunkError(f"{pre}could not decode: zstd: {name}")
    if status == DEC_BLOSC:
        why = "bad header" if err.got == -1 else (
            "wrong size" if err.got == -2 else f"error {err.got}")
        raise CorruptChunkError(f"{pre}could not decode: blosc: {why}")
    if status == DEC_NOMEM:
        raise MemoryError(f"decoding {where}: out of memory")
    raise AssertionError(f"unexpected status {status}")  # pragma: no cover
