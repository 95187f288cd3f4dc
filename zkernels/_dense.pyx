# Dense-shard bulk reconstruction: copy every inner chunk's part of a box straight from the raw
# shard bytes into the caller's output array, in one pass, without the GIL.
#
# An uncompressed inner chunk (inner codecs = `bytes` only) is stored as a C-order array of
# `chunk_shape` elements; sharding_indexed gives its (offset, nbytes) in the shard index, an empty
# chunk being (2**64-1, 2**64-1), whose part of the box takes the fill value.
#
# Layering (house style): the nogil cores (`dense_validate_c`, `dense_copy_c`) work over a struct
# of caller-owned pointers and return a status code; `reconstruct_dense` validates the arguments,
# runs both cores in one `with nogil:` block (validation of every chunk touched comes first, so a
# bad index raises before anything is written), then turns a status into a zkernels error.

from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cimport numpy as cnp

from zkernels._common cimport zk_bswap16, zk_bswap32, zk_bswap64

# Streaming (non-temporal) stores for large outputs. A whole-shard copy writes each output row in
# short pieces far apart (one chunk row at a time); with ordinary stores every output cache line is
# first read from memory (read for ownership), so past the cache the copy runs at a third of memory
# bandwidth. Streaming stores skip that read: measured 11 -> 28 GB/s on a 32 MiB shard. SSE2 only
# (every x86-64); elsewhere these fall back to ordinary copies.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    #define ZK_HAVE_NT 1
    #else
    #define ZK_HAVE_NT 0
    #endif

    #if ZK_HAVE_NT
    /* reverse every unit of `unit` bytes (2, 4 or 8) in 16 bytes, SSE2 only (no pshufb) */
    static inline __m128i zk_swap_m128(__m128i v, int unit) {
        v = _mm_or_si128(_mm_slli_epi16(v, 8), _mm_srli_epi16(v, 8));
        if (unit == 2) return v;
        v = _mm_shufflehi_epi16(_mm_shufflelo_epi16(v, 0xB1), 0xB1);
        if (unit == 4) return v;
        return _mm_shuffle_epi32(v, 0xB1);
    }
    #endif

    /* 4-byte units, 16 bytes at a time (gcc vectorises the 2- and 8-byte scalar loops itself but
       not this one: 18 -> 45 GB/s in cache). Returns the bytes done; the caller finishes. */
    static inline Py_ssize_t zk_swap4_sse(uint8_t *d, const uint8_t *s, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if ZK_HAVE_NT
        for (; i + 16 <= n; i += 16)
            _mm_storeu_si128((__m128i *)(d + i),
                             zk_swap_m128(_mm_loadu_si128((const __m128i *)(s + i)), 4));
    #else
        (void)d; (void)s; (void)n;
    #endif
        return i;
    }

    /* n bytes, src -> dst, dst written with streaming stores once 16-byte aligned */
    static inline void zk_copy_nt(uint8_t *d, const uint8_t *s, Py_ssize_t n) {
    #if ZK_HAVE_NT
        if (n >= 64) {
            Py_ssize_t head = (Py_ssize_t)((16 - ((uintptr_t)d & 15)) & 15);
            memcpy(d, s, (size_t)head);
            d += head; s += head; n -= head;
            for (; n >= 64; n -= 64, d += 64, s += 64) {
                __m128i a = _mm_loadu_si128((const __m128i *)s);
                __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
                __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
                __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
                _mm_stream_si128((__m128i *)d, a);
                _mm_stream_si128((__m128i *)(d + 16), b);
                _mm_stream_si128((__m128i *)(d + 32), c);
                _mm_stream_si128((__m128i *)(d + 48), e);
            }
            for (; n >= 16; n -= 16, d += 16, s += 16)
                _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
        }
    #endif
        memcpy(d, s, (size_t)n);
    }

    /* n bytes (a multiple of unit), every unit byte-reversed; streaming stores when the output
       can be 16-byte aligned on a unit boundary. Returns the bytes done (the caller finishes). */
    static inline Py_ssize_t zk_swap_nt(uint8_t *d, const uint8_t *s, Py_ssize_t n, int unit) {
    #if ZK_HAVE_NT
        Py_ssize_t done = 0, head, i;
        if (n < 64 || ((uintptr_t)d % (uintptr_t)unit) != 0) return 0;
        head = (Py_ssize_t)((16 - ((uintptr_t)d & 15)) & 15);
        /* the head is a whole number of units: d is unit-aligned and unit divides 16 */
        for (i = 0; i < head; i += unit) {
            if (unit == 2) {
                uint16_t v; memcpy(&v, s + i, 2); v = __builtin_bswap16(v); memcpy(d + i, &v, 2);
            } else if (unit == 4) {
                uint32_t v; memcpy(&v, s + i, 4); v = __builtin_bswap32(v); memcpy(d + i, &v, 4);
            } else {
                uint64_t v; memcpy(&v, s + i, 8); v = __builtin_bswap64(v); memcpy(d + i, &v, 8);
            }
        }
        done = head;
        for (; done + 16 <= n; done += 16)
            _mm_stream_si128((__m128i *)(d + done),
                             zk_swap_m128(_mm_loadu_si128((const __m128i *)(s + done)), unit));
        return done;
    #else
        (void)d; (void)s; (void)n; (void)unit;
        return 0;
    #endif
    }

    static inline void zk_sfence(void) {
    #if ZK_HAVE_NT
        _mm_sfence();
    #endif
    }
    """
    const int ZK_HAVE_NT
    void zk_copy_nt(uint8_t *d, const uint8_t *s, Py_ssize_t n) noexcept nogil
    Py_ssize_t zk_swap_nt(uint8_t *d, const uint8_t *s, Py_ssize_t n, int unit) noexcept nogil
    Py_ssize_t zk_swap4_sse(uint8_t *d, const uint8_t *s, Py_ssize_t n) noexcept nogil
    void zk_sfence() noexcept nogil

import operator

import numpy as np

from zkernels.errors import CorruptChunkError, ShardIndexError

cnp.import_array()

__all__ = ["reconstruct_dense"]

# sharding_indexed: empty chunk = (2**64-1, 2**64-1)
cdef uint64_t EMPTY = 0xFFFFFFFFFFFFFFFFULL

cdef enum:
    DENSE_OK = 0
    DENSE_HALF_EMPTY = 1
    DENSE_BAD_NBYTES = 2
    DENSE_OVERFLOW = 3
    DENSE_PAST_END = 4


# With `streaming=None`, outputs of at least this many bytes are written with streaming stores
# (see zk_copy_nt): past the last-level cache they are 2-3x faster; below it ordinary stores leave
# `out` in the cache for whoever reads it next.
cdef Py_ssize_t STREAMING_THRESHOLD = 16 << 20


cdef struct DenseError:
    Py_ssize_t chunk                   # linear (C-order) index of the offending chunk
    uint64_t offset
    uint64_t nbytes


# ------------------------------------------------------------------------------------------------
# innermost runs: `n` elements, contiguous in the source, `dst_step` bytes apart in the output

cdef inline void swap_units_contig(uint8_t *dst, const uint8_t *src, Py_ssize_t nbytes,
                                   int unit) noexcept nogil:
    # memcpy loads/stores: alignment-free; gcc vectorises the 2- and 8-byte loops (SSE2 shifts and
    # shuffles), the 4-byte one goes through zk_swap4_sse.
    cdef Py_ssize_t i
    cdef uint16_t v16
    cdef uint32_t v32
    cdef uint64_t v64
    if unit == 2:
        for i in range(0, nbytes, 2):
            memcpy(&v16, src + i, 2)
            v16 = zk_bswap16(v16)
            memcpy(dst + i, &v16, 2)
    elif unit == 4:
        i = zk_swap4_sse(dst, src, nbytes)
        while i < nbytes:
            memcpy(&v32, src + i, 4)
            v32 = zk_bswap32(v32)
            memcpy(dst + i, &v32, 4)
            i += 4
    else:
        for i in range(0, nbytes, 8):
            memcpy(&v64, src + i, 8)
            v64 = zk_bswap64(v64)
            memcpy(dst + i, &v64, 8)


cdef inline void copy_bytes(uint8_t *dst, const uint8_t *src, Py_ssize_t n) noexcept nogil:
    # Rows of a few hundred bytes are the common case (a 64-element row of a uint16 chunk is 128
    # bytes): constant-size 16-byte moves inline, where a libc memcpy call costs as much as the
    # copy.
    cdef Py_ssize_t i = 0
    if n > 512:
        memcpy(dst, src, <size_t>n)
        return
    while i + 16 <= n:
        memcpy(dst + i, src + i, 16)
        i += 16
    while i < n:
        dst[i] = src[i]
        i += 1


cdef inline void copy_run(uint8_t *dst, Py_ssize_t dst_step, const uint8_t *src, Py_ssize_t n,
                          Py_ssize_t itemsize, int unit, bint nt) noexcept nogil:
    cdef Py_ssize_t i, done
    cdef uint16_t v16
    cdef uint32_t v32
    cdef uint64_t v64
    if dst_step == itemsize:
        if unit == 0:
            if nt:
                zk_copy_nt(dst, src, n * itemsize)
            else:
                copy_bytes(dst, src, n * itemsize)
        else:
            done = zk_swap_nt(dst, src, n * itemsize, unit) if nt else 0
            swap_units_contig(dst + done, src + done, n * itemsize - done, unit)
        return
    if unit == 0:
        # constant-size memcpy compiles to one move
        if itemsize == 1:
            for i in range(n):
                dst[i * dst_step] = src[i]
        elif itemsize == 2:
            for i in range(n):
                memcpy(dst + i * dst_step, src + 2 * i, 2)
        elif itemsize == 4:
            for i in range(n):
                memcpy(dst + i * dst_step, src + 4 * i, 4)
        elif itemsize == 8:
            for i in range(n):
                memcpy(dst + i * dst_step, src + 8 * i, 8)
        elif itemsize == 16:
            for i in range(n):
                memcpy(dst + i * dst_step, src + 16 * i, 16)
        else:
            for i in range(n):
                memcpy(dst + i * dst_step, src + i * itemsize, <size_t>itemsize)
        return
    if itemsize == unit:
        if unit == 2:
            for i in range(n):
                memcpy(&v16, src + 2 * i, 2)
                v16 = zk_bswap16(v16)
                memcpy(dst + i * dst_step, &v16, 2)
        elif unit == 4:
            for i in range(n):
                memcpy(&v32, src + 4 * i, 4)
                v32 = zk_bswap32(v32)
                memcpy(dst + i * dst_step, &v32, 4)
        else:
            for i in range(n):
                memcpy(&v64, src + 8 * i, 8)
                v64 = zk_bswap64(v64)
                memcpy(dst + i * dst_step, &v64, 8)
        return
    # several units per element (complex, structured): swap each unit of each element
    for i in range(n):
        swap_units_contig(dst + i * dst_step, src + i * itemsize, itemsize, unit)


cdef inline void fill_run(uint8_t *dst, Py_ssize_t dst_step, Py_ssize_t n, Py_ssize_t itemsize,
                          const DenseArgs *a) noexcept nogil:
    cdef Py_ssize_t i, m, total
    if dst_step == itemsize:
        total = n * itemsize
        if a.fill_zero:
            memset(dst, 0, <size_t>total)
            return
        while total > 0:
            m = total if total < a.fill_nbytes else a.fill_nbytes
            memcpy(dst, a.fill, <size_t>m)
            dst += m
            total -= m
        return
    if a.fill_zero:
        for i in range(n):
            memset(dst + i * dst_step, 0, <size_t>itemsize)
    else:
        for i in range(n):
            memcpy(dst + i * dst_step, a.fill, <size_t>itemsize)


# ------------------------------------------------------------------------------------------------
# one chunk's part of the box

cdef void copy_box(
    uint8_t *dst,               # OUT first output element of the part
    const Py_ssize_t *dst_st,   # IN  output strides (bytes)
    const uint8_t *src,         # IN  first source element (NULL: write the fill value)
    const Py_ssize_t *src_st,   # IN  source strides (bytes), last one == itemsize
    const Py_ssize_t *extent,   # IN  elements along each dimension, all > 0
    int ndim,
    const DenseArgs *a,
) noexcept nogil:
    cdef Py_ssize_t ext[MAXDIM]
    cdef Py_ssize_t dst_s[MAXDIM]
    cdef Py_ssize_t src_s[MAXDIM]
    cdef Py_ssize_t ctr[MAXDIM]
    cdef int k, nd = 0
    cdef Py_ssize_t itemsize = a.itemsize, run, run_dst_step
    # Merge neighbouring dimensions that are laid out uniformly in both source and output (a whole
    # chunk into a matching contiguous output becomes one run), innermost first; drop size-1 dims.
    for k in range(ndim - 1, -1, -1):
        if extent[k] == 1:
            continue
        if nd > 0 and src_st[k] == ext[nd - 1] * src_s[nd - 1] and \
                dst_st[k] == ext[nd - 1] * dst_s[nd - 1]:
            ext[nd - 1] *= extent[k]
            continue
        ext[nd] = extent[k]
        dst_s[nd] = dst_st[k]
        src_s[nd] = src_st[k]
        nd += 1
    # now dimension 0 of ext/dst_s/src_s is the innermost
    if nd == 0:
        run = 1
        run_dst_step = itemsize
    else:
        run = ext[0]
        run_dst_step = dst_s[0]
        if src_s[0] != itemsize:
            # the innermost non-trivial source dimension is not the last chunk axis: a gather
            # whose runs are single elements
            run = 1
            run_dst_step = itemsize
            # keep dimension 0 as an outer loop: shift everything up by one
            for k in range(nd, 0, -1):
                ext[k] = ext[k - 1]
                dst_s[k] = dst_s[k - 1]
                src_s[k] = src_s[k - 1]
            nd += 1
    # odometer over the outer dimensions 1..nd-1
    for k in range(nd):
        ctr[k] = 0
    while True:
        if src == NULL:
            fill_run(dst, run_dst_step, run, itemsize, a)
        else:
            copy_run(dst, run_dst_step, src, run, itemsize, a.swap_unit, a.nontemporal)
        k = 1
        while k < nd:
            ctr[k] += 1
            dst += dst_s[k]
            if src != NULL:
                src += src_s[k]
            if ctr[k] < ext[k]:
                break
            dst -= ext[k] * dst_s[k]
            if src != NULL:
                src -= ext[k] * src_s[k]
            ctr[k] = 0
            k += 1
        if k >= nd:
            return


# ------------------------------------------------------------------------------------------------
# the cores: iterate over the chunks that intersect the box

cdef struct DenseScan:
    # what dense_validate_c learns about the non-empty chunks touching the box
    Py_ssize_t n_full
    Py_ssize_t n_empty
    uint64_t min_offset
    uint64_t max_offset
    bint on_grid                       # every (offset - min_offset) is a multiple of chunk_nbytes


cdef inline bint chunk_range(const DenseArgs *a, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """Chunk coordinates [lo, hi) touching the box; False when the box is empty."""
    cdef int k
    for k in range(a.ndim):
        if a.out_shape[k] == 0:
            return False
        lo[k] = a.region_start[k] // a.chunk_shape[k]
        hi[k] = (a.region_start[k] + a.out_shape[k] - 1) // a.chunk_shape[k] + 1
    return True


cdef inline bint next_coords(Py_ssize_t *c, const Py_ssize_t *lo, const Py_ssize_t *hi,
                             int nd) noexcept nogil:
    """Advance chunk coordinates `c` in C order within [lo, hi); False when done."""
    cdef int k = nd - 1
    while k >= 0:
        c[k] += 1
        if c[k] < hi[k]:
            return True
        c[k] = lo[k]
        k -= 1
    return False


cdef inline Py_ssize_t linear(const DenseArgs *a, const Py_ssize_t *c) noexcept nogil:
    cdef Py_ssize_t lin = 0
    cdef int k
    for k in range(a.ndim):
        lin = lin * a.chunks_per_shard[k] + c[k]
    return lin


cdef int dense_validate_c(
    const DenseArgs *a,   # IN
    DenseError *err,      # OUT the first bad chunk
    DenseScan *scan,      # OUT counts and offset range of the chunks touching the box
) noexcept nogil:
    """Check every chunk that intersects the box before anything is written."""
    cdef Py_ssize_t lo[MAXDIM]
    cdef Py_ssize_t hi[MAXDIM]
    cdef Py_ssize_t c[MAXDIM]
    cdef Py_ssize_t lin
    cdef uint64_t off, nb, first = 0
    cdef int k, nd = a.ndim
    scan.n_full = 0
    scan.n_empty = 0
    scan.min_offset = EMPTY
    scan.max_offset = 0
    scan.on_grid = True
    if not chunk_range(a, lo, hi):
        return DENSE_OK
    for k in range(nd):
        c[k] = lo[k]
    while True:
        lin = linear(a, c)
        off = a.index[2 * lin]
        nb = a.index[2 * lin + 1]
        if off == EMPTY and nb == EMPTY:
            scan.n_empty += 1
        else:
            err.chunk = lin
            err.offset = off
            err.nbytes = nb
            if off == EMPTY or nb == EMPTY:
                return DENSE_HALF_EMPTY
            if nb > EMPTY - off:
                return DENSE_OVERFLOW
            if off + nb > a.shard_nbytes:
                return DENSE_PAST_END
            if nb != a.chunk_nbytes:
                return DENSE_BAD_NBYTES
            # on the grid of the first chunk seen (only steers the traversal order)
            if scan.n_full > 0:
                if off >= first:
                    if (off - first) % a.chunk_nbytes != 0:
                        scan.on_grid = False
                elif (first - off) % a.chunk_nbytes != 0:
                    scan.on_grid = False
            else:
                first = off
            if off < scan.min_offset:
                scan.min_offset = off
            if off > scan.max_offset:
                scan.max_offset = off
            scan.n_full += 1
        if not next_coords(c, lo, hi, nd):
            return DENSE_OK


cdef void copy_chunk_from(const DenseArgs *a, const Py_ssize_t *c,
                         const uint8_t *chunk) noexcept nogil:
    """Copy chunk `c`'s intersection with the box from `chunk` (fill it when NULL)."""
    cdef Py_ssize_t extent[MAXDIM]
    cdef Py_ssize_t start, stop, cstart, box_end, src_off = 0, dst_off = 0
    cdef int k
    for k in range(a.ndim):
        cstart = c[k] * a.chunk_shape[k]
        box_end = a.region_start[k] + a.out_shape[k]
        start = cstart if cstart > a.region_start[k] else a.region_start[k]
        stop = cstart + a.chunk_shape[k]
        if stop > box_end:
            stop = box_end
        extent[k] = stop - start
        src_off += (start - cstart) * a.chunk_strides[k]
        dst_off += (start - a.region_start[k]) * a.out_strides[k]
    if chunk != NULL:
        chunk += src_off
    copy_box(a.out + dst_off, a.out_strides, chunk, a.chunk_strides, extent, a.ndim, a)


cdef inline void copy_chunk(const DenseArgs *a, const Py_ssize_t *c, uint64_t off) noexcept nogil:
    """Copy chunk `c`'s intersection with the box from the shard (fill it when `off` is EMPTY)."""
    if off == EMPTY:
        copy_chunk_from(a, c, NULL)
    else:
        copy_chunk_from(a, c, a.shard + off)


cdef void dense_copy_c(const DenseArgs *a, bint empty_only) noexcept nogil:
    """Copy (or fill) every chunk's part of the box in C order of the chunks (only the empty
    ones when `empty_only`)."""
    cdef Py_ssize_t lo[MAXDIM]
    cdef Py_ssize_t hi[MAXDIM]
    cdef Py_ssize_t c[MAXDIM]
    cdef Py_ssize_t lin
    cdef uint64_t off
    cdef int k
    if not chunk_range(a, lo, hi):
        return
    for k in range(a.ndim):
        c[k] = lo[k]
    while True:
        lin = linear(a, c)
        off = a.index[2 * lin]
        if not empty_only or off == EMPTY:
            copy_chunk(a, c, off)
        if not next_coords(c, lo, hi, a.ndim):
            return


cdef bint dense_copy_storage_order_c(const DenseArgs *a, const DenseScan *scan) noexcept nogil:
    """Copy the non-empty chunks in the order they lie in the shard, then fill the empty ones.

    Reading the shard front to back keeps the hardware prefetcher streaming; the output side is
    scattered either way (measured on a 32 MiB morton-ordered shard: 13 -> 28 GB/s with streaming
    stores). Sorting is a slot table, O(n): zarr writes chunks back to back, so slot
    (offset - min_offset) / chunk_nbytes is exact. Returns False (nothing written) when the
    offsets are not on that grid, collide, or spread too far; the caller then copies in C order.
    """
    cdef Py_ssize_t lo[MAXDIM]
    cdef Py_ssize_t hi[MAXDIM]
    cdef Py_ssize_t c[MAXDIM]
    cdef Py_ssize_t lin, n_slots, slot, j, rem
    cdef Py_ssize_t *slots
    cdef uint64_t off, span
    cdef int k, nd = a.ndim
    if scan.n_full < 2 or not scan.on_grid:
        return False
    span = (scan.max_offset - scan.min_offset) // a.chunk_nbytes
    if span >= <uint64_t>(4 * scan.n_full + 64):
        return False
    n_slots = <Py_ssize_t>span + 1
    slots = <Py_ssize_t *>malloc(n_slots * sizeof(Py_ssize_t))
    if slots == NULL:
        return False
    for j in range(n_slots):
        slots[j] = -1
    chunk_range(a, lo, hi)
    for k in range(nd):
        c[k] = lo[k]
    while True:
        lin = linear(a, c)
        off = a.index[2 * lin]
        if off != EMPTY:
            slot = <Py_ssize_t>((off - scan.min_offset) // a.chunk_nbytes)
            if slots[slot] != -1:
                free(slots)
                return False  # two entries share a chunk's bytes: legal to read, not sortable
            slots[slot] = lin
        if not next_coords(c, lo, hi, nd):
            break
    for j in range(n_slots):
        lin = slots[j]
        if lin < 0:
            continue
        rem = lin
        for k in range(nd - 1, -1, -1):
            c[k] = rem % a.chunks_per_shard[k]
            rem = rem // a.chunks_per_shard[k]
        copy_chunk(a, c, a.index[2 * lin])
    free(slots)
    if scan.n_empty > 0:
        dense_copy_c(a, True)
    return True


cdef void dense_copy_rows_c(const DenseArgs *a) noexcept nogil:
    """Copy (or fill) the box row by row, in the output's memory order (C order, last axis
    contiguous): each output row is written front to back, one chunk segment after another.

    With ordinary stores this is the fastest order while the data fit in the cache (measured
    on an 8 MiB shard of 64x64 uint16 chunks: 43-52 GB/s, against 17-33 GB/s chunk by chunk,
    whose rows lie a power-of-two stride apart and collide in the cache sets).
    """
    cdef Py_ssize_t i[MAXDIM]       # element position in the box, dimensions 0..L-1
    cdef Py_ssize_t c[MAXDIM]       # chunk coordinate
    cdef Py_ssize_t w[MAXDIM]       # position inside that chunk
    cdef Py_ssize_t base_lin, src_row, x, x_end, cx, seg, within
    cdef int k, nd = a.ndim, L = a.ndim - 1
    cdef Py_ssize_t itemsize = a.itemsize, last_cs = a.chunk_shape[L]
    cdef Py_ssize_t last_cps = a.chunks_per_shard[L], dst_step = a.out_strides[L]
    cdef Py_ssize_t x0 = a.region_start[L], nx = a.out_shape[L]
    cdef int unit = a.swap_unit
    cdef bint plain = unit == 0 and dst_step == itemsize
    cdef const uint64_t *index = a.index
    cdef const uint8_t *shard = a.shard
    cdef uint8_t *dst
    cdef uint64_t off
    for k in range(nd):
        if a.out_shape[k] == 0:
            return
    for k in range(L):
        i[k] = 0
        c[k] = a.region_start[k] // a.chunk_shape[k]
        w[k] = a.region_start[k] - c[k] * a.chunk_shape[k]
    while True:
        base_lin = 0
        src_row = 0
        dst = a.out
        for k in range(L):
            base_lin = base_lin * a.chunks_per_shard[k] + c[k]
            src_row += w[k] * a.chunk_strides[k]
            dst += i[k] * a.out_strides[k]
        base_lin *= last_cps
        x = x0
        x_end = x0 + nx
        cx = x0 // last_cs
        within = x0 - cx * last_cs
        while x < x_end:
            seg = last_cs - within
            if seg > x_end - x:
                seg = x_end - x
            off = index[2 * (base_lin + cx)]
            if off == EMPTY:
                fill_run(dst, dst_step, seg, itemsize, a)
            elif plain:
                copy_bytes(dst, shard + off + src_row + within * itemsize, seg * itemsize)
            elif dst_step == itemsize:
                swap_units_contig(dst, shard + off + src_row + within * itemsize, seg * itemsize,
                                  unit)
            else:
                copy_run(dst, dst_step, shard + off + src_row + within * itemsize, seg,
                         itemsize, unit, False)
            dst += seg * dst_step
            x += seg
            cx += 1
            within = 0
        k = L - 1
        while k >= 0:
            i[k] += 1
            w[k] += 1
            if w[k] == a.chunk_shape[k]:
                w[k] = 0
                c[k] += 1
            if i[k] < a.out_shape[k]:
                break
            i[k] = 0
            c[k] = a.region_start[k] // a.chunk_shape[k]
            w[k] = a.region_start[k] - c[k] * a.chunk_shape[k]
            k -= 1
        if k < 0:
            return


cdef int reconstruct_dense_c(const DenseArgs *a, DenseError *err) noexcept nogil:
    cdef DenseScan scan
    cdef int status = dense_validate_c(a, err, &scan)
    if status != DENSE_OK:
        return status
    # Traversal order (measured on 8-32 MiB shards of 64x64 chunks, see the module docs):
    # - streaming stores: the output order no longer matters (no read for ownership), reading the
    #   shard front to back does: storage order.
    # - ordinary stores into a C-order output: row by row, the output's own memory order.
    # - otherwise (element-strided output): storage order, then C order of the chunks.
    if a.ndim > 0 and not a.nontemporal and a.out_strides[a.ndim - 1] == a.itemsize:
        dense_copy_rows_c(a)
    elif not dense_copy_storage_order_c(a, &scan):
        dense_copy_c(a, False)
    if a.nontemporal:
        zk_sfence()  # streaming stores are weakly ordered: publish them before returning
    return DENSE_OK


# ------------------------------------------------------------------------------------------------
# wrapper

cdef const uint8_t[::1] _as_bytes(object buf, str what):
    """A read-only byte view of any C-contiguous buffer (bytes, memoryview, numpy array...)."""
    cdef const uint8_t[::1] view
    try:
        view = buf
    except (ValueError, TypeError):
        try:
            view = memoryview(buf).cast("B")
        except TypeError as exc:
            raise TypeError(f"{what} must be a C-contiguous bytes-like object: {exc}") from None
    return view


cdef tuple _int_tuple(object seq, str what):
    try:
        return tuple(operator.index(v) for v in seq)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints, not {seq!r}") from None


cdef void fence_streaming_stores() noexcept nogil:
    zk_sfence()


cdef object init_box_args(DenseArgs *a, object out, tuple chunk_shape, tuple region_start,
                          tuple cps, object fill_value, object swap_unit, object streaming):
    """Validate the box arguments the wrappers share and fill `a` (all but the shard, index).

    Returns the fill pattern, which must outlive every use of `a`.
    """
    cdef int k, nd
    cdef const uint8_t[::1] fill_view
    cdef Py_ssize_t itemsize, stride
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if out.dtype.hasobject:  # raw bytes into object pointers would crash the interpreter later
        raise TypeError(f"out must hold plain data, not {out.dtype}")
    nd = out.ndim
    if nd > MAXDIM:
        raise ValueError(f"at most {MAXDIM} dimensions are supported, out has {nd}")
    if not (len(chunk_shape) == nd and len(region_start) == nd and len(cps) == nd):
        raise ValueError(
            f"dimensions disagree: out.shape {out.shape}, chunk_shape {chunk_shape}, "
            f"region_start {region_start}, chunks_per_shard {cps}"
        )
    shard_shape = tuple(c * n for c, n in zip(chunk_shape, cps))
    for k in range(nd):
        if chunk_shape[k] <= 0:
            raise ValueError(f"chunk_shape must be positive, got {chunk_shape}")
        if shard_shape[k] > PY_SSIZE_T_MAX:  # keeps every coordinate in Py_ssize_t
            raise ValueError(f"shard of shape {shard_shape} is too large")
        if region_start[k] < 0 or region_start[k] + out.shape[k] > shard_shape[k]:
            raise ValueError(
                f"box [{region_start}, +{out.shape}) is outside the shard of shape {shard_shape} "
                f"(chunks_per_shard {cps} x chunk_shape {chunk_shape}), dimension {k}"
            )
    itemsize = out.itemsize
    if itemsize <= 0:
        raise ValueError(f"out has itemsize {itemsize}")
    swap_unit = operator.index(swap_unit)
    if swap_unit == 1:
        swap_unit = 0
    if swap_unit not in (0, 2, 4, 8) or (swap_unit and itemsize % swap_unit):
        raise ValueError(
            f"swap_unit must be 0, 2, 4 or 8 and divide the itemsize ({itemsize}), got {swap_unit}"
        )
    chunk_elems = 1
    for c in chunk_shape:
        chunk_elems *= c
    chunk_nbytes = chunk_elems * itemsize
    if chunk_nbytes > PY_SSIZE_T_MAX:  # keeps every byte offset inside a chunk in Py_ssize_t
        raise ValueError(f"chunk of {chunk_shape} x {itemsize} bytes is too large")

    # the fill pattern: whole elements, up to FILL_ROW_BYTES
    if fill_value is None:
        fill = b""
        a.fill_zero = True
    else:
        fill = bytes(memoryview(fill_value).cast("B"))
        if len(fill) != itemsize:
            raise ValueError(f"fill_value has {len(fill)} bytes, out.itemsize is {itemsize}")
        a.fill_zero = fill.count(0) == itemsize
        fill = fill * max(1, FILL_ROW_BYTES // itemsize)
    fill_view = fill

    box_nbytes = itemsize
    for k in range(nd):
        box_nbytes *= out.shape[k]
    if streaming is None:
        streaming = box_nbytes >= STREAMING_THRESHOLD
    a.nontemporal = ZK_HAVE_NT and bool(streaming) and nd > 0 and out.strides[nd - 1] == itemsize
    a.ndim = nd
    a.itemsize = itemsize
    a.swap_unit = swap_unit
    a.shard = NULL
    a.shard_nbytes = 0
    a.index = NULL
    a.chunk_nbytes = chunk_nbytes
    a.out = <uint8_t *>cnp.PyArray_DATA(out)
    a.fill = &fill_view[0] if fill_view.shape[0] > 0 else NULL
    a.fill_nbytes = fill_view.shape[0]
    stride = itemsize
    for k in range(nd - 1, -1, -1):
        a.out_shape[k] = out.shape[k]
        a.out_strides[k] = out.strides[k]
        a.chunk_shape[k] = chunk_shape[k]
        a.chunk_strides[k] = stride
        stride *= chunk_shape[k]
        a.chunks_per_shard[k] = cps[k]
        a.region_start[k] = region_start[k]
    return fill


def reconstruct_dense(shard, index, out, *, chunk_shape, region_start, fill_value=None,
                      swap_unit=0, streaming=None):
    """Copy the inner chunks of an uncompressed shard straight into an output box.

    Parameters
    ----------
    shard : bytes-like
        The raw shard bytes (any C-contiguous buffer).
    index : numpy.ndarray
        The parsed shard index: uint64, shape ``(*chunks_per_shard, 2)`` of (offset, nbytes).
    out : numpy.ndarray
        Writable output of any strides; its shape is the box it covers.
    chunk_shape : tuple of int
        Inner chunk shape; each non-empty chunk is stored as a C-order array of this shape with
        elements of ``out.itemsize`` bytes.
    region_start : tuple of int
        Position of ``out[0, ..., 0]`` in the shard's element coordinates.
    fill_value : bytes-like, optional
        Exactly ``out.itemsize`` bytes, in out's representation, written where a chunk is empty;
        None writes zero bytes.
    swap_unit : {0, 2, 4, 8}
        0 copies bytes as they are; 2, 4, 8 reverse the byte order of each unit of that size
        (stored byte order differs from out's; complex64 uses 4, complex128 8).
    streaming : bool, optional
        Write `out` with streaming (non-temporal) stores, which bypass the cache: much faster for
        outputs larger than the last-level cache, slower to read back for small ones. None (the
        default) streams boxes of 16 MiB and more. Only used where out's last axis is contiguous,
        on x86-64.

    Raises
    ------
    ShardIndexError
        A chunk touching the box is half empty or ends past the end of the shard.
    CorruptChunkError
        A chunk touching the box does not have ``prod(chunk_shape) * itemsize`` bytes.

    Nothing is written to `out` when an error is raised: every chunk that intersects the box is
    checked first.
    """
    cdef DenseArgs a
    cdef DenseError err
    cdef int k, nd, status
    cdef const uint8_t[::1] shard_view = _as_bytes(shard, "shard")

    if not isinstance(index, np.ndarray):
        raise ShardIndexError(f"index must be a numpy uint64 array, not {type(index).__name__}")
    if index.dtype.kind != "u" or index.dtype.itemsize != 8:
        raise ShardIndexError(f"index must have dtype uint64, not {index.dtype}")
    index = np.ascontiguousarray(index, dtype=np.uint64)
    chunk_shape = _int_tuple(chunk_shape, "chunk_shape")
    region_start = _int_tuple(region_start, "region_start")
    if index.ndim < 1 or index.shape[index.ndim - 1] != 2:
        raise ValueError(f"index must have shape (*chunks_per_shard, 2), got {index.shape}")
    keep = init_box_args(&a, out, chunk_shape, region_start, tuple(index.shape)[:index.ndim - 1], fill_value,
                         swap_unit, streaming)
    cps = tuple(index.shape)[:index.ndim - 1]
    chunk_nbytes = a.chunk_nbytes
    itemsize = a.itemsize
    a.shard = &shard_view[0] if shard_view.shape[0] > 0 else NULL
    a.shard_nbytes = shard_view.shape[0]
    a.index = <const uint64_t *>cnp.PyArray_DATA(index)

    with nogil:
        status = reconstruct_dense_c(&a, &err)
    if status == DENSE_OK:
        return None
    coords = tuple(int(c) for c in np.unravel_index(err.chunk, cps))
    where = f"inner chunk {coords} (offset={err.offset}, nbytes={err.nbytes})"
    if status == DENSE_HALF_EMPTY:
        raise ShardIndexError(f"{where}: half-empty index entry, only one field is 2**64-1")
    if status == DENSE_OVERFLOW:
        raise ShardIndexError(f"{where}: offset + nbytes overflows, offset past the end")
    if status == DENSE_PAST_END:
        raise ShardIndexError(
            f"{where} ends at byte {err.offset + err.nbytes}, offset past the end of the "
            f"{a.shard_nbytes}-byte shard"
        )
    if status == DENSE_BAD_NBYTES:
        raise CorruptChunkError(
            f"{where} has {err.nbytes} bytes, expected {chunk_nbytes} for an uncompressed chunk of "
            f"shape {chunk_shape} x {itemsize}-byte elements"
        )
    raise AssertionError(f"unexpected status {status}")  # pragma: no cover
