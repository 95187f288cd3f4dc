# Chunk encode kernel: cut whole inner chunks out of an input box, drop those equal to the fill
# value (zarr's write_empty_chunks=False), compress the others and lay them out one after another
# in a single buffer, in one call, without the GIL.
#
# Per chunk, in encode order: gather the chunk from the (strided) input into a C-order scratch
# buffer (without a compressor: straight into the output), byte-swapped to the stored order (the
# dense kernel's box copy, see _dense.pxd); test it against the fill value exactly as zarr does
# (the _scatter kernel's test, see _scatter.pxd); compress with zstd (numcodecs' own libzstd,
# same parameters as numcodecs, through a context reused per thread) or blosc (numcodecs' own
# c-blosc, the very call numcodecs makes off the main thread: `blosc_compress_ctx` with one
# internal thread); append crc32c checksums. The pipeline then assembles the shard from these
# buffers and the kept chunks of the old shard with `concat_ranges`, or, for a whole new shard,
# writes the index into the room left for it (`head`/`tail`) and stores the buffer as it is.
#
# Layering (house style): `encode_box_c` is the nogil core (status code + error detail);
# `encode_chunks` validates, runs it inside `with nogil:`, and turns a status into our error.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cpython.pyport cimport PY_SSIZE_T_MAX

cimport numpy as cnp

from zkernels._common cimport zk_store_le32
from zkernels._crc32c cimport zk_crc32c
from zkernels._dense cimport MAXDIM, DenseArgs, copy_box, init_box_args
from zkernels._scatter cimport is_fill_c, make_fill_spec, zk_fillspec

cdef extern from "zk_codecs.h" nogil:
    ctypedef struct zk_codec_api:
        unsigned (*zstd_isError)(size_t code) noexcept nogil
        const char *(*zstd_getErrorName)(size_t code) noexcept nogil
        size_t (*zstd_freeCCtx)(void *cctx) noexcept nogil
        size_t (*zstd_CCtx_reset)(void *cctx, int reset) noexcept nogil
        size_t (*zstd_CCtx_setParameter)(void *cctx, int param, int value) noexcept nogil
        size_t (*zstd_compress2)(void *cctx, void *dst, size_t dst_cap, const void *src,
                                 size_t src_size) noexcept nogil
        size_t (*zstd_compressBound)(size_t src_size) noexcept nogil
        int (*blosc_compress_ctx)(int clevel, int doshuffle, size_t typesize, size_t nbytes,
                                  const void *src, void *dest, size_t destsize,
                                  const char *compressor, size_t blocksize,
                                  int numinternalthreads) noexcept nogil
    zk_codec_api zk_api
    int zk_codecs_set(const char *name, uintptr_t addr)
    int zk_zstd_encode_ready()
    int zk_blosc_encode_ready()
    void *zk_zstd_cctx(int *owned)

import operator

import numpy as np

from zkernels import _libs
from zkernels.errors import CorruptChunkError

cnp.import_array()

__all__ = ["blosc_bound", "can_encode", "can_test_fill", "concat_ranges", "encode_chunks",
           "zstd_bound"]

# zstd.h: ZSTD_reset_session_and_parameters, ZSTD_c_compressionLevel, ZSTD_c_checksumFlag
cdef int ZSTD_RESET_ALL = 3
cdef int ZSTD_C_LEVEL = 100
cdef int ZSTD_C_CHECKSUM = 201
# blosc.h: BLOSC_MAX_OVERHEAD, BLOSC_MAX_BUFFERSIZE, BLOSC_MAX_TYPESIZE
cdef size_t BLOSC_OVERHEAD = 16
BLOSC_MAX_BUFFERSIZE = 2**31 - 1 - 16

cdef enum:
    MAXSTEPS = 8

cdef enum Step:
    STEP_CRC32C = 1
    STEP_ZSTD = 2
    STEP_BLOSC = 3

cdef enum:
    ENC_OK = 0
    ENC_ZSTD = 1          # zstd error `code`
    ENC_NOMEM = 2
    ENC_FILL = 3          # the fill test failed (out of memory)
    ENC_BLOSC = 4         # blosc error: its return value in `blosc`

_STEP_CODES = {"crc32c": STEP_CRC32C, "zstd": STEP_ZSTD, "blosc": STEP_BLOSC}
_COMPRESSORS = (STEP_ZSTD, STEP_BLOSC)


cdef struct EncodeArgs:
    DenseArgs box                      # the input box: `out` is its first element (read only)
    const int64_t *chunks              # linear (C-order) chunk numbers to encode, in this order
    Py_ssize_t n_chunks
    int steps[MAXSTEPS]                # encode order: at most one zstd or blosc, then crc32c
    int n_steps
    int level                          # zstd
    int checksum
    int clevel                         # blosc: numcodecs' Blosc(cname, clevel, shuffle,
    int shuffle                        #   blocksize, typesize)
    size_t typesize
    size_t blocksize
    char cname[16]
    bint check_fill
    zk_fillspec spec                   # the fill test, on the stored representation
    uint8_t *dst
    int64_t *sizes                     # OUT encoded size per chunk, -1: equal to the fill


cdef struct EncodeError:
    Py_ssize_t chunk
    size_t code                        # zstd's error code
    int blosc                          # blosc's return value


_ZSTD_SYMBOLS = ("ZSTD_createCCtx", "ZSTD_freeCCtx", "ZSTD_CCtx_reset", "ZSTD_CCtx_setParameter",
                 "ZSTD_compress2", "ZSTD_compressBound", "ZSTD_isError", "ZSTD_getErrorName")
# numcodecs' copy only: the stored bytes must be those numcodecs (hence zarr) writes
_found = _libs.find("numcodecs.zstd", None, _ZSTD_SYMBOLS)
if _found is not None:
    for _sym, _addr in _found[1].items():
        zk_codecs_set(_sym.encode(), <uintptr_t>_addr)
_found = _libs.find("numcodecs.blosc", None, ("blosc_compress_ctx",))
_BLOSC_CNAMES = ()
if _found is not None:
    zk_codecs_set(b"blosc_compress_ctx", <uintptr_t>_found[1]["blosc_compress_ctx"])
    import numcodecs.blosc
    _BLOSC_CNAMES = tuple(numcodecs.blosc.list_compressors())  # those this c-blosc was built with


cdef int encode_box_c(const EncodeArgs *e, EncodeError *err) noexcept nogil:
    cdef const DenseArgs *a = &e.box
    cdef Py_ssize_t c[MAXDIM]
    cdef Py_ssize_t shape1[1]
    cdef Py_ssize_t strides1[1]
    cdef Py_ssize_t i, rem, k, src_off
    cdef int nd = a.ndim, owned = 0, j, rc, ret, status = ENC_OK
    cdef size_t nbytes = <size_t>a.chunk_nbytes, n, r, cap = 0
    cdef uint8_t *scratch = NULL
    cdef uint8_t *raw                  # the gathered chunk: scratch, or in place (no compressor)
    cdef uint8_t *p = e.dst
    cdef void *cctx = NULL
    cdef bint zstd = e.n_steps > 0 and e.steps[0] == STEP_ZSTD
    cdef bint compress = e.n_steps > 0 and e.steps[0] != STEP_CRC32C
    if compress:
        scratch = <uint8_t *>malloc(nbytes if nbytes > 0 else 1)
        if scratch == NULL:
            return ENC_NOMEM
    if zstd:
        cctx = zk_zstd_cctx(&owned)
        if cctx == NULL:
            free(scratch)
            return ENC_NOMEM
        zk_api.zstd_CCtx_reset(cctx, ZSTD_RESET_ALL)
        zk_api.zstd_CCtx_setParameter(cctx, ZSTD_C_LEVEL, e.level)
        zk_api.zstd_CCtx_setParameter(cctx, ZSTD_C_CHECKSUM, e.checksum)
        cap = zk_api.zstd_compressBound(nbytes)
    for i in range(e.n_chunks):
        err.chunk = i
        rem = e.chunks[i]
        src_off = 0
        for k in range(nd - 1, -1, -1):
            c[k] = rem % a.chunks_per_shard[k]
            rem = rem // a.chunks_per_shard[k]
            src_off += (c[k] * a.chunk_shape[k] - a.region_start[k]) * a.out_strides[k]
        raw = scratch if compress else p  # crc32c alone appends to the chunk where it lies
        copy_box(raw, a.chunk_strides, a.out + src_off, a.out_strides, a.chunk_shape, nd, a)
        if e.check_fill:
            shape1[0] = <Py_ssize_t>(nbytes // <size_t>a.itemsize)
            strides1[0] = a.itemsize
            rc = is_fill_c(<const char *>raw, 1, shape1, strides1, &e.spec)
            if rc < 0:
                status = ENC_FILL
                break
            if rc == 1:
                e.sizes[i] = -1
                continue
        n = nbytes
        for j in range(e.n_steps):
            if e.steps[j] == STEP_ZSTD:
                r = zk_api.zstd_compress2(cctx, p, cap, scratch, nbytes)
                if zk_api.zstd_isError(r):
                    err.code = r
                    status = ENC_ZSTD
                    break
                n = r
            elif e.steps[j] == STEP_BLOSC:
                # numcodecs' destination size exactly: blosc stores a chunk it cannot shrink
                # below it as a copy, so the size decides the bytes
                ret = zk_api.blosc_compress_ctx(e.clevel, e.shuffle, e.typesize, nbytes,
                                                scratch, p, nbytes + BLOSC_OVERHEAD, e.cname,
                                                e.blocksize, 1)
                if ret <= 0:
                    err.blosc = ret
                    status = ENC_BLOSC
                    break
                n = <size_t>ret
            else:  # STEP_CRC32C, over what is there so far
                zk_store_le32(p + n, zk_crc32c(0, p, n))
                n += 4
        if status != ENC_OK:
            break
        e.sizes[i] = <int64_t>n
        p += n
    free(scratch)
    if owned:
        zk_api.zstd_freeCCtx(cctx)
    return status


cdef list _step_codes(object steps):
    try:
        codes = [_STEP_CODES[s] for s in steps]
    except KeyError as exc:
        raise ValueError(
            f"unknown step {exc.args[0]!r}, expected one of {sorted(_STEP_CODES)}"
        ) from None
    if len(codes) > MAXSTEPS:
        raise ValueError(f"at most {MAXSTEPS} steps, got {len(codes)}")
    for j, code in enumerate(codes):
        if code in _COMPRESSORS:
            name = steps[j]
            if j != 0:
                raise ValueError(f"{name} must come first (encode order), before any crc32c")
            if code == STEP_ZSTD and not zk_zstd_encode_ready():
                raise LookupError("numcodecs' libzstd not found")
            if code == STEP_BLOSC and not zk_blosc_encode_ready():
                raise LookupError("numcodecs' c-blosc not found")
    return codes


cdef tuple _blosc_params(object cname, object clevel, object shuffle, object typesize,
                         object blocksize, Py_ssize_t nbytes):
    """numcodecs' Blosc parameters as its `compress` hands them to c-blosc, checked as
    numcodecs and c-blosc check them (so that the kernel never meets an error they would
    report; the caller leaves such chunks to numcodecs): (cname bytes, clevel, shuffle,
    typesize, blocksize)."""
    if cname not in _BLOSC_CNAMES:
        raise ValueError(f"blosc compressor {cname!r} is not one of this c-blosc's: "
                         f"{list(_BLOSC_CNAMES)}")
    clevel = operator.index(clevel)
    shuffle = operator.index(shuffle)
    typesize = operator.index(typesize)
    blocksize = operator.index(blocksize)
    if not 0 <= clevel <= 9:
        raise ValueError(f"blosc clevel must be 0 to 9, got {clevel}")
    if typesize < 1:
        raise ValueError(f"blosc typesize must be at least 1, got {typesize}")
    if shuffle == -1:  # numcodecs' AUTOSHUFFLE
        shuffle = 2 if typesize == 1 else 1
    if shuffle not in (0, 1, 2):
        raise ValueError(f"blosc shuffle must be -1, 0, 1 or 2, got {shuffle}")
    if not 0 <= blocksize <= 2**31 - 1:  # numcodecs passes it as a C int
        raise ValueError(f"blosc blocksize must be 0 (automatic) to 2**31 - 1, got {blocksize}")
    if nbytes > BLOSC_MAX_BUFFERSIZE:
        raise ValueError(f"blosc takes at most {BLOSC_MAX_BUFFERSIZE} bytes per chunk, "
                         f"not {nbytes}")
    return cname.encode("ascii"), clevel, shuffle, typesize, blocksize


def can_encode(steps, chunk_nbytes=0, *, zstd_level=0, zstd_checksum=False, blosc_cname="lz4",
               blosc_clevel=5, blosc_shuffle=1, blosc_typesize=1, blosc_blocksize=0):
    """True if `encode_chunks` runs this chain of steps (encode order) with the libraries found
    and, with blosc, these parameters on chunks of `chunk_nbytes` bytes (the compressor
    keywords are encode_chunks'; zstd takes any level and checksum flag, as numcodecs does)."""
    try:
        codes = _step_codes(steps)
        if STEP_BLOSC in codes:
            _blosc_params(blosc_cname, blosc_clevel, blosc_shuffle, blosc_typesize,
                          blosc_blocksize, operator.index(chunk_nbytes))
    except (ValueError, LookupError, TypeError):
        return False
    return True


def can_test_fill(dtype, fill_value):
    """True if the kernel decides "chunk equals the fill value" itself for this dtype and fill
    (else zarr's numpy expression must, and the caller cannot use `skip_fill`)."""
    cdef zk_fillspec spec
    return make_fill_spec(&spec, np.empty(0, dtype=dtype), fill_value) is not None


def zstd_bound(nbytes):
    """ZSTD_compressBound: the most bytes zstd may produce for `nbytes` of input."""
    if not zk_zstd_encode_ready():
        raise LookupError("numcodecs' libzstd not found")
    return zk_api.zstd_compressBound(<size_t>operator.index(nbytes))


def blosc_bound(nbytes):
    """The most bytes blosc may produce for `nbytes` of input (BLOSC_MAX_OVERHEAD more), and the
    destination size numcodecs gives it."""
    return operator.index(nbytes) + BLOSC_OVERHEAD


def encode_chunks(value, chunks, *, steps, chunk_shape, region_start, chunks_per_shard,
                  swap_unit=0, stored_dtype=None, fill_value=None, skip_fill=False,
                  zstd_level=0, zstd_checksum=False, blosc_cname="lz4", blosc_clevel=5,
                  blosc_shuffle=1, blosc_typesize=1, blosc_blocksize=0, head=0, tail=0):
    """Encode whole inner chunks of an input box into one buffer, one after another.

    Parameters
    ----------
    value : numpy.ndarray
        The input box, any strides, native byte order; ``value[0, ..., 0]`` lies at
        `region_start` in the shard's element coordinates.
    chunks : 1-d integer array
        Linear (C-order) numbers of the chunks to encode, in the order to lay them out; each
        must lie wholly inside the box.
    steps : sequence of str
        Encode order: optionally ``"zstd"`` or ``"blosc"`` first, then any number of
        ``"crc32c"``.
    chunk_shape, region_start, chunks_per_shard : tuple of int
        The chunk grid of the shard.
    swap_unit : {0, 2, 4, 8}
        Byte-swap unit from the native to the stored order (0: none).
    stored_dtype : numpy.dtype, optional
        The stored dtype (for the fill test); by default ``value.dtype``.
    fill_value : scalar
        The array's fill value; with `skip_fill`, chunks equal to it (as zarr decides) are not
        encoded and get size -1.
    zstd_level, zstd_checksum : int, bool
        zstd parameters, as numcodecs' ``Zstd(level, checksum)``.
    blosc_cname, blosc_clevel, blosc_shuffle, blosc_typesize, blosc_blocksize : str, int
        blosc parameters, as numcodecs' ``Blosc(cname, clevel, shuffle, blocksize, typesize)``
        (shuffle -1: bit shuffle for typesize 1, else byte shuffle). The bytes are those
        numcodecs writes off the main thread (zarr encodes in worker threads); on the main
        thread numcodecs may let c-blosc use its own threads, which can order the blocks of
        a large chunk differently.
    head, tail : int
        Bytes left free before the first chunk and after the last (room for a shard index,
        so that a whole shard needs no second copy).

    Returns
    -------
    data : numpy.ndarray
        uint8: `head` free bytes, the encoded chunks back to back, `tail` free bytes (a view
        of a larger allocation).
    sizes : numpy.ndarray
        int64, the encoded size of each chunk, -1 where skipped.
    """
    cdef EncodeArgs e
    cdef EncodeError err
    cdef int k, status
    codes = _step_codes(steps)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"value must be a numpy array, not {type(value).__name__}")
    chunk_shape = tuple(operator.index(v) for v in chunk_shape)
    region_start = tuple(operator.index(v) for v in region_start)
    cps = tuple(operator.index(v) for v in chunks_per_shard)
    # init_box_args wants a writable array; the kernel only reads `value` through it
    box = value if value.flags.writeable else value.view()
    if not box.flags.writeable:
        try:
            box.flags.writeable = True
        except ValueError:
            box = np.array(value)
    keep = init_box_args(&e.box, box, chunk_shape, region_start, cps, None, swap_unit, False)
    chunks = np.ascontiguousarray(chunks, dtype=np.int64)
    if chunks.ndim != 1:
        raise ValueError("chunks must be 1-d")
    n = chunks.shape[0]
    # every chunk wholly inside the box
    if n and e.box.ndim == 0:  # np.unravel_index refuses the shape ()
        if (chunks != 0).any():
            raise ValueError("a 0-d shard has one chunk, number 0")
    elif n:
        coords = np.unravel_index(chunks, cps)
        for k in range(e.box.ndim):
            first = coords[k].min() * chunk_shape[k]
            stop = (coords[k].max() + 1) * chunk_shape[k]
            if first < region_start[k] or stop > region_start[k] + value.shape[k]:
                raise ValueError(
                    f"chunks must lie wholly inside the box: dimension {k} needs "
                    f"[{first}, {stop}), the box covers [{region_start[k]}, "
                    f"{region_start[k] + value.shape[k]})"
                )
    nbytes = e.box.chunk_nbytes
    if STEP_BLOSC in codes:
        cname, e.clevel, e.shuffle, e.typesize, e.blocksize = _blosc_params(
            blosc_cname, blosc_clevel, blosc_shuffle, blosc_typesize, blosc_blocksize, nbytes)
        memcpy(e.cname, <const char *>cname, len(cname) + 1)
    if STEP_ZSTD in codes:
        per = zk_api.zstd_compressBound(nbytes)
    elif STEP_BLOSC in codes:
        per = nbytes + BLOSC_OVERHEAD
    else:
        per = nbytes
    per += 4 * sum(1 for c in codes if c == STEP_CRC32C)
    head = operator.index(head)
    tail = operator.index(tail)
    if head < 0 or tail < 0:
        raise ValueError(f"head and tail must be 0 or more, got {head} and {tail}")
    data = np.empty(max(1, head + n * per + tail), dtype=np.uint8)
    sizes = np.empty(n, dtype=np.int64)
    e.chunks = <const int64_t *>cnp.PyArray_DATA(chunks)
    e.n_chunks = n
    e.n_steps = len(codes)
    for k in range(e.n_steps):
        e.steps[k] = codes[k]
    e.level = zstd_level
    e.checksum = 1 if zstd_checksum else 0
    cdef Py_ssize_t head_c = head
    e.dst = <uint8_t *>cnp.PyArray_DATA(data) + head_c
    e.sizes = <int64_t *>cnp.PyArray_DATA(sizes)
    e.check_fill = False
    spec_keep = None
    if skip_fill:
        sample = np.empty(0, dtype=value.dtype if stored_dtype is None else stored_dtype)
        if sample.dtype.itemsize != value.itemsize:  # the fill test reads stored-dtype items
            raise ValueError(f"stored_dtype {sample.dtype} and value.dtype {value.dtype} differ in "
                             f"itemsize")
        spec_keep = make_fill_spec(&e.spec, sample, fill_value)
        if spec_keep is None:
            raise ValueError(f"no kernel fill test for dtype {sample.dtype} and fill {fill_value!r}")
        e.check_fill = spec_keep is not False
    with nogil:
        status = encode_box_c(&e, &err)
    if status == ENC_OK:
        total = int(sizes[sizes > 0].sum())
        return data[: head + total + tail], sizes
    coords = tuple(int(c) for c in np.unravel_index(int(chunks[err.chunk]), cps)) if cps else ()
    if status == ENC_ZSTD:
        name = zk_api.zstd_getErrorName(err.code).decode("utf-8", "replace")
        raise CorruptChunkError(f"inner chunk {coords}: zstd compression failed: {name}")
    if status == ENC_BLOSC:
        raise CorruptChunkError(f"inner chunk {coords}: blosc compression failed: error "
                                f"{err.blosc}")
    raise MemoryError(f"encoding inner chunk {coords}: out of memory")


def concat_ranges(sources, groups, offsets, nbytes, out, start=0):
    """Copy byte ranges one after another into `out` from `start`; returns the end position.

    Range ``i`` is ``sources[groups[i]][offsets[i] : offsets[i] + nbytes[i]]``; every range is
    checked against its source and `out` before anything is copied.
    """
    cdef Py_ssize_t i, n, pos
    cdef const uint8_t[::1] v
    cdef uint8_t[::1] dst = out
    groups = np.asarray(groups)
    if groups.size and (groups.min() < 0 or groups.max() >= len(sources)):  # before the int32 cast
        raise ValueError("source number out of range")
    groups = np.ascontiguousarray(groups, dtype=np.int32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    nbytes = np.ascontiguousarray(nbytes, dtype=np.int64)
    n = groups.shape[0]
    if offsets.shape[0] != n or nbytes.shape[0] != n:
        raise ValueError("groups, offsets and nbytes must have one entry per range")
    views = [memoryview(s).cast("B") if not isinstance(s, np.ndarray) else s.reshape(-1).view(np.uint8)
             for s in sources]
    ns = len(views)
    ptrs = np.empty(max(1, ns), dtype=np.uintp)
    lens = np.empty(max(1, ns), dtype=np.int64)
    cdef uintptr_t[::1] pv = ptrs
    for i in range(ns):
        v = views[i]
        pv[i] = <uintptr_t>&v[0] if v.shape[0] > 0 else 0
        lens[i] = v.shape[0]
    if n:
        if groups.min() < 0 or groups.max() >= ns:
            raise ValueError("source number out of range")
        # nbytes > lens - offsets, not offsets + nbytes > lens: the sum may wrap around int64
        if (offsets < 0).any() or (nbytes < 0).any() or (nbytes > lens[groups] - offsets).any():
            raise CorruptChunkError("a byte range lies past the end of its source")
    total = int(nbytes.sum()) if n else 0
    if n and int(nbytes.max()) > PY_SSIZE_T_MAX // n:  # the int64 sum may have wrapped
        total = sum(nbytes.tolist())
    pos = operator.index(start)
    if pos < 0 or pos + total > dst.shape[0]:
        raise ValueError(f"out has {dst.shape[0]} bytes, {pos + total} needed")
    cdef const int32_t *g = <const int32_t *>cnp.PyArray_DATA(groups)
    cdef const int64_t *o = <const int64_t *>cnp.PyArray_DATA(offsets)
    cdef const int64_t *m = <const int64_t *>cnp.PyArray_DATA(nbytes)
    cdef const uintptr_t *src = <const uintptr_t *>cnp.PyArray_DATA(ptrs)
    cdef uint8_t *d = &dst[0] if dst.shape[0] > 0 else NULL
    with nogil:
        for i in range(n):
            if m[i] > 0:
                memcpy(d + pos, <const uint8_t *>src[g[i]] + o[i], <size_t>m[i])
                pos += m[i]
    return pos
