# cython: language_level=3
"""Strided N-d copies between chunk and output arrays, fills and fill checks, GIL released.

These are the inner loops of a codec pipeline's read and write sides:

* ``scatter``: ``out[out_selection] = chunk[chunk_selection]`` (read side)
* ``gather``: ``chunk[chunk_selection] = src[src_selection]`` (write side)
* ``fill``: ``out[selection] = fill_value`` (missing chunks)
* ``is_fill``: whether a chunk equals its fill value everywhere, exactly as zarr's
  ``NDBuffer.all_equal`` decides it (``write_empty_chunks=False``)
* ``copy_region``: the strided copy under all of them.

Selections are the basic subset numpy handles without copying: tuples of ints and slices with
step > 0. Views are described by a pointer, a shape and byte strides computed here straight from
the selection (no numpy view objects), then the nogil cores run on them.

Layering (house style): ``copy_nd_c`` / ``fill_nd_c`` / ``is_fill_c`` are ``noexcept nogil``
cores over caller-owned memory returning a status; the ``def`` wrappers validate, release the
GIL and raise.
"""

import cmath
import math

import numpy as np

cimport numpy as cnp
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_Check
from cpython.bool cimport PyBool_Check
from cpython.slice cimport PySlice_Check, PySlice_Unpack, PySlice_AdjustIndices
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.number cimport PyIndex_Check
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

from zkernels._common cimport zk_bswap16, zk_bswap32, zk_bswap64

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # numpy's scalar base class, for a fast isinstance(x, np.generic)
    ctypedef struct PyTypeObject:
        pass
    PyTypeObject PyGenericArrType_Type
    bint PyObject_TypeCheck(object, PyTypeObject *)
    Py_ssize_t PyNumber_AsSsize_t(object, object) except? -1

cdef extern from *:
    """
    /* A 16-byte element moved as one unit (complex128, V16, ...). */
    typedef struct { uint64_t lo, hi; } zk_w16;
    """
    ctypedef struct zk_w16:
        uint64_t lo
        uint64_t hi

cdef enum:
    # numpy 2.x allows 64 dimensions; our views never exceed the arrays' own.
    ZK_MAXD = 64
    # Bytes of repeated fill compared per memcmp call in is_fill (and copied per memcpy call
    # in fill): a block this long stays in L1 while the data streams past it.
    ZK_PATTERN = 4096
    # Below this many bytes the kernels keep the GIL: releasing and re-taking it costs about
    # as much as the copy, and under contention re-taking it can wait a switch interval
    # (numpy does the same with NPY_BEGIN_THREADS_THRESHOLDED).
    ZK_NOGIL_MIN_BYTES = 16384

# Status codes of the cores.
cdef enum:
    ZK_OK = 0
    ZK_ENOMEM = -1

# is_fill comparison modes
cdef enum:
    MODE_BYTES = 0   # bytewise equal to the fill's bytes
    MODE_MASKED = 1  # float parts: equal under a mask (a zero fill part accepts +0.0 and -0.0)
    MODE_NAN = 2     # every element is a NaN (complex: either part), any payload

ctypedef fused zk_w:
    uint8_t
    uint16_t
    uint32_t
    uint64_t
    zk_w16

ctypedef fused zk_part:
    uint8_t
    uint16_t
    uint32_t
    uint64_t

# float parts: binary16, binary32, binary64 bit patterns
ctypedef fused zk_fpart:
    uint16_t
    uint32_t
    uint64_t


ctypedef struct zk_view:
    char *data
    int nd
    Py_ssize_t shape[ZK_MAXD]
    Py_ssize_t strides[ZK_MAXD]




# ---------------------------------------------------------------------------------------------
# Dimension collapsing
# ---------------------------------------------------------------------------------------------

cdef int _collapse(
    int nd,                 # IN  number of dimensions
    Py_ssize_t *shape,      # IN/OUT shape (rewritten to the collapsed one)
    Py_ssize_t *s0,         # IN/OUT byte strides of the primary array (dst), same
    Py_ssize_t *s1,         # IN/OUT byte strides of the second array (src), or NULL
    char **p0,              # IN/OUT base pointer of the primary array
    char **p1,              # IN/OUT base pointer of the second array, or NULL
) noexcept nogil:
    """Rewrite an elementwise loop over one or two arrays into the fewest dimensions.

    Drops size-1 axes, turns axes where the primary stride is negative around (both arrays
    together, which keeps the element pairing), orders axes by decreasing primary stride (so
    the innermost loop walks the primary array's smallest stride), then merges neighbouring
    axes whose strides chain in both arrays. A C-contiguous to C-contiguous copy ends as one
    dimension. Returns the new ndim, or -1 when the loop is empty (a zero-length axis).
    """
    cdef int i, j, k
    cdef Py_ssize_t n, t0, t1, a0, a1
    k = 0
    for i in range(nd):
        n = shape[i]
        if n == 0:
            return -1
        if n == 1:
            continue
        shape[k] = n
        s0[k] = s0[i]
        if s1 != NULL:
            s1[k] = s1[i]
        k += 1
    nd = k
    for i in range(nd):
        if s0[i] < 0:
            p0[0] += (shape[i] - 1) * s0[i]
            s0[i] = -s0[i]
            if s1 != NULL:
                p1[0] += (shape[i] - 1) * s1[i]
                s1[i] = -s1[i]
    # stable insertion sort, largest primary stride first (ties: largest |secondary| first)
    for i in range(1, nd):
        n = shape[i]
        t0 = s0[i]
        t1 = s1[i] if s1 != NULL else 0
        a1 = t1 if t1 >= 0 else -t1
        j = i - 1
        while j >= 0:
            a0 = s1[j] if s1 != NULL else 0
            if a0 < 0:
                a0 = -a0
            if s0[j] > t0 or (s0[j] == t0 and a0 >= a1):
                break
            shape[j + 1] = shape[j]
            s0[j + 1] = s0[j]
            if s1 != NULL:
                s1[j + 1] = s1[j]
            j -= 1
        shape[j + 1] = n
        s0[j + 1] = t0
        if s1 != NULL:
            s1[j + 1] = t1
    if nd == 0:
        return 0
    # merge an outer axis k with the next inner one when the strides chain in both arrays
    k = 0
    for i in range(1, nd):
        if s0[k] == s0[i] * shape[i] and (s1 == NULL or s1[k] == s1[i] * shape[i]):
            shape[k] *= shape[i]
            s0[k] = s0[i]
            if s1 != NULL:
                s1[k] = s1[i]
        else:
            k += 1
            shape[k] = shape[i]
            s0[k] = s0[i]
            if s1 != NULL:
                s1[k] = s1[i]
    return k + 1


# ---------------------------------------------------------------------------------------------
# Copy
# ---------------------------------------------------------------------------------------------

cdef inline void _copy_row_w(char *d, const char *s, Py_ssize_t n, Py_ssize_t ds,
                             Py_ssize_t ss, zk_w *width) noexcept nogil:
    # `width` only picks the specialisation; memcpy of a constant size is one unaligned move
    cdef Py_ssize_t i
    cdef zk_w v
    if ss == 0:
        # broadcast source: load once
        memcpy(&v, s, sizeof(zk_w))
        for i in range(n):
            memcpy(d + i * ds, &v, sizeof(zk_w))
    elif ds == <Py_ssize_t> sizeof(zk_w):
        for i in range(n):
            memcpy(d + i * <Py_ssize_t> sizeof(zk_w), s + i * ss, sizeof(zk_w))
    else:
        for i in range(n):
            memcpy(d + i * ds, s + i * ss, sizeof(zk_w))


cdef inline void _copy_row_any(char *d, const char *s, Py_ssize_t n, Py_ssize_t ds,
                               Py_ssize_t ss, Py_ssize_t isz) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        memcpy(d + i * ds, s + i * ss, <size_t> isz)


cdef inline void _copy_row(char *d, const char *s, Py_ssize_t n, Py_ssize_t ds,
                           Py_ssize_t ss, Py_ssize_t isz) noexcept nogil:
    if ds == isz and ss == isz:
        memcpy(d, s, <size_t>(n * isz))
    elif isz == 1:
        _copy_row_w(d, s, n, ds, ss, <uint8_t *> NULL)
    elif isz == 2:
        _copy_row_w(d, s, n, ds, ss, <uint16_t *> NULL)
    elif isz == 4:
        _copy_row_w(d, s, n, ds, ss, <uint32_t *> NULL)
    elif isz == 8:
        _copy_row_w(d, s, n, ds, ss, <uint64_t *> NULL)
    elif isz == 16:
        _copy_row_w(d, s, n, ds, ss, <zk_w16 *> NULL)
    else:
        _copy_row_any(d, s, n, ds, ss, isz)


cdef int copy_nd_c(
    char *dst,              # OUT base pointer of the destination
    const char *src,        # IN  base pointer of the source
    int nd,                 # IN  ndim (<= ZK_MAXD)
    Py_ssize_t *shape,      # IN  shape (scratch: rewritten)
    Py_ssize_t *ds,         # IN  destination byte strides (scratch: rewritten)
    Py_ssize_t *ss,         # IN  source byte strides, 0 to broadcast (scratch: rewritten)
    Py_ssize_t isz,         # IN  itemsize in bytes
) noexcept nogil:
    """Copy every element of a strided source view into a strided destination view.

    The two must not overlap in memory (the wrappers check and hand overlaps to numpy).
    """
    cdef char *d = dst
    cdef char *s = <char *> src
    cdef Py_ssize_t idx[ZK_MAXD]
    cdef Py_ssize_t n, dsi, ssi
    cdef int k, outer
    nd = _collapse(nd, shape, ds, ss, &d, &s)
    if nd < 0:
        return ZK_OK
    if nd == 0:
        memcpy(d, s, <size_t> isz)
        return ZK_OK
    n = shape[nd - 1]
    dsi = ds[nd - 1]
    ssi = ss[nd - 1]
    if nd >= 2 and ssi != isz and n >= 16:
        # A transposing copy: the destination's innermost axis is strided in the source, but
        # the source is contiguous along another axis t. Walk (t, innermost) in tiles so that
        # the source cache lines a tile touches are used fully before they are evicted.
        for k in range(nd - 2, -1, -1):
            if ss[k] == isz and shape[k] >= 16:
                _move_axis(k, nd - 2, shape, ds, ss)
                _copy_tiled(d, s, nd, shape, ds, ss, isz)
                return ZK_OK
    outer = nd - 1
    for k in range(outer):
        idx[k] = 0
    while True:
        _copy_row(d, s, n, dsi, ssi, isz)
        # odometer over the outer axes
        k = outer - 1
        while k >= 0:
            idx[k] += 1
            d += ds[k]
            s += ss[k]
            if idx[k] < shape[k]:
                break
            d -= ds[k] * shape[k]
            s -= ss[k] * shape[k]
            idx[k] = 0
            k -= 1
        if k < 0:
            return ZK_OK


cdef inline void _move_axis(int src_ax, int dst_ax, Py_ssize_t *shape, Py_ssize_t *s0,
                            Py_ssize_t *s1) noexcept nogil:
    # move one axis to a later position, shifting the ones between it left
    cdef Py_ssize_t n = shape[src_ax], a = s0[src_ax], b = s1[src_ax]
    cdef int i
    for i in range(src_ax, dst_ax):
        shape[i] = shape[i + 1]
        s0[i] = s0[i + 1]
        s1[i] = s1[i + 1]
    shape[dst_ax] = n
    s0[dst_ax] = a
    s1[dst_ax] = b


cdef void _copy_tiled(char *d, char *s, int nd, const Py_ssize_t *shape, const Py_ssize_t *ds,
                      const Py_ssize_t *ss, Py_ssize_t isz) noexcept nogil:
    """Copy with the last two axes (a: source-contiguous, b: destination-innermost) walked in
    square tiles; the outer axes in an odometer."""
    cdef Py_ssize_t idx[ZK_MAXD]
    cdef Py_ssize_t na = shape[nd - 2], nb = shape[nd - 1]
    cdef Py_ssize_t dsa = ds[nd - 2], ssa = ss[nd - 2], dsb = ds[nd - 1], ssb = ss[nd - 1]
    cdef Py_ssize_t tile = 64 if isz <= 4 else 32
    cdef Py_ssize_t a0, a1, b0, b1, a
    cdef int k, outer = nd - 2
    for k in range(outer):
        idx[k] = 0
    while True:
        a0 = 0
        while a0 < na:
            a1 = a0 + tile if na - a0 > tile else na
            b0 = 0
            while b0 < nb:
                b1 = b0 + tile if nb - b0 > tile else nb
                for a in range(a0, a1):
                    _copy_row(d + a * dsa + b0 * dsb, s + a * ssa + b0 * ssb, b1 - b0, dsb, ssb,
                              isz)
                b0 = b1
            a0 = a1
        k = outer - 1
        while k >= 0:
            idx[k] += 1
            d += ds[k]
            s += ss[k]
            if idx[k] < shape[k]:
                break
            d -= ds[k] * shape[k]
            s -= ss[k] * shape[k]
            idx[k] = 0
            k -= 1
        if k < 0:
            return


# ---------------------------------------------------------------------------------------------
# Fill
# ---------------------------------------------------------------------------------------------

cdef inline void _fill_row_w(char *d, Py_ssize_t n, Py_ssize_t ds, const char *pat,
                             zk_w *width) noexcept nogil:
    cdef Py_ssize_t i
    cdef zk_w v
    memcpy(&v, pat, sizeof(zk_w))
    if ds == <Py_ssize_t> sizeof(zk_w):
        for i in range(n):
            memcpy(d + i * <Py_ssize_t> sizeof(zk_w), &v, sizeof(zk_w))
    else:
        for i in range(n):
            memcpy(d + i * ds, &v, sizeof(zk_w))


cdef inline void _fill_row(char *d, Py_ssize_t n, Py_ssize_t ds, const char *pat,
                           Py_ssize_t isz, int same_byte, const char *block,
                           Py_ssize_t blocklen) noexcept nogil:
    cdef Py_ssize_t i, done, total, step
    if ds == isz and same_byte >= 0:
        memset(d, same_byte, <size_t>(n * isz))
    elif ds == isz and blocklen > 0:
        # contiguous: copy a block of whole fills (in L1) over the row
        total = n * isz
        done = 0
        while done < total:
            step = blocklen if total - done > blocklen else total - done
            memcpy(d + done, block, <size_t> step)
            done += step
    elif isz == 1:
        _fill_row_w(d, n, ds, pat, <uint8_t *> NULL)
    elif isz == 2:
        _fill_row_w(d, n, ds, pat, <uint16_t *> NULL)
    elif isz == 4:
        _fill_row_w(d, n, ds, pat, <uint32_t *> NULL)
    elif isz == 8:
        _fill_row_w(d, n, ds, pat, <uint64_t *> NULL)
    elif isz == 16:
        _fill_row_w(d, n, ds, pat, <zk_w16 *> NULL)
    elif ds == isz:
        # contiguous, odd itemsize: one element, then double the filled prefix
        memcpy(d, pat, <size_t> isz)
        done = isz
        total = n * isz
        while done < total:
            step = done if done <= total - done else total - done
            memcpy(d + done, d, <size_t> step)
            done += step
    else:
        for i in range(n):
            memcpy(d + i * ds, pat, <size_t> isz)


cdef int fill_nd_c(
    char *dst,              # OUT base pointer of the destination
    int nd,                 # IN  ndim
    Py_ssize_t *shape,      # IN  shape (scratch: rewritten)
    Py_ssize_t *ds,         # IN  byte strides (scratch: rewritten)
    const char *pat,        # IN  the fill's itemsize bytes (not inside dst)
    Py_ssize_t isz,         # IN  itemsize
) noexcept nogil:
    """Write the ``isz`` bytes at ``pat`` into every element of a strided view."""
    cdef char *d = dst
    cdef Py_ssize_t idx[ZK_MAXD]
    cdef Py_ssize_t n, dsi, i, blocklen = 0, done, step
    cdef int k, outer, same_byte = <uint8_t> pat[0]
    cdef char block[ZK_PATTERN]
    for i in range(1, isz):
        if pat[i] != pat[0]:
            same_byte = -1
            break
    nd = _collapse(nd, shape, ds, NULL, &d, NULL)
    if nd < 0:
        return ZK_OK
    if nd == 0:
        memcpy(d, pat, <size_t> isz)
        return ZK_OK
    n = shape[nd - 1]
    dsi = ds[nd - 1]
    if same_byte < 0 and dsi == isz and n * isz >= 256 and isz <= ZK_PATTERN // 4:
        # a block of whole fills, at most ZK_PATTERN bytes and at most a row
        blocklen = (ZK_PATTERN // isz) * isz
        if blocklen > n * isz:
            blocklen = n * isz
        memcpy(block, pat, <size_t> isz)
        done = isz
        while done < blocklen:
            step = done if done <= blocklen - done else blocklen - done
            memcpy(block + done, block, <size_t> step)
            done += step
    outer = nd - 1
    for k in range(outer):
        idx[k] = 0
    while True:
        _fill_row(d, n, dsi, pat, isz, same_byte, block, blocklen)
        k = outer - 1
        while k >= 0:
            idx[k] += 1
            d += ds[k]
            if idx[k] < shape[k]:
                break
            d -= ds[k] * shape[k]
            idx[k] = 0
            k -= 1
        if k < 0:
            return ZK_OK


# ---------------------------------------------------------------------------------------------
# Fill check
# ---------------------------------------------------------------------------------------------

cdef inline bint _masked_row(const char *p, Py_ssize_t n, Py_ssize_t stride, int nparts,
                             zk_part f0, zk_part f1, zk_part m0, zk_part m1) noexcept nogil:
    """Whether every element's parts equal (f0, f1) on the bits in (m0, m1).

    Blocks of 256 elements are OR-reduced without branches (vectorisable), with an early exit
    between blocks.
    """
    cdef Py_ssize_t i, j, stop
    cdef zk_part x, y, acc
    if (nparts == 2 and stride == 2 * <Py_ssize_t> sizeof(zk_part) and f0 == f1
            and m0 == m1):
        # a contiguous complex row with the same test on both parts: one row of 2n parts
        nparts = 1
        n *= 2
        stride = sizeof(zk_part)
    i = 0
    if nparts == 1 and stride == <Py_ssize_t> sizeof(zk_part):
        # contiguous: a constant stride lets the compiler vectorise the block
        while i < n:
            stop = i + 256 if n - i > 256 else n
            acc = 0
            for j in range(i, stop):
                memcpy(&x, p + j * <Py_ssize_t> sizeof(zk_part), sizeof(zk_part))
                acc |= (x ^ f0) & m0
            if acc != 0:
                return False
            i = stop
        return True
    while i < n:
        stop = i + 256 if n - i > 256 else n
        acc = 0
        if nparts == 1:
            for j in range(i, stop):
                memcpy(&x, p + j * stride, sizeof(zk_part))
                acc |= (x ^ f0) & m0
        else:
            for j in range(i, stop):
                memcpy(&x, p + j * stride, sizeof(zk_part))
                memcpy(&y, p + j * stride + <Py_ssize_t> sizeof(zk_part), sizeof(zk_part))
                acc |= ((x ^ f0) & m0) | ((y ^ f1) & m1)
        if acc != 0:
            return False
        i = stop
    return True


cdef inline bint _isnan_bits(zk_fpart x, bint swap) noexcept nogil:
    # IEEE binary16/32/64: exponent all ones and a non-zero mantissa
    if zk_fpart is uint16_t:
        if swap:
            x = zk_bswap16(x)
        return (x & 0x7FFF) > 0x7C00
    elif zk_fpart is uint32_t:
        if swap:
            x = zk_bswap32(x)
        return (x & 0x7FFFFFFFU) > 0x7F800000U
    else:
        if swap:
            x = zk_bswap64(x)
        return (x & 0x7FFFFFFFFFFFFFFFULL) > 0x7FF0000000000000ULL


cdef inline bint _nan_row(const char *p, Py_ssize_t n, Py_ssize_t stride, int nparts,
                          bint swap, zk_fpart *width) noexcept nogil:
    """Whether every element is a NaN (complex: either part is)."""
    cdef Py_ssize_t i, j, stop
    cdef zk_fpart x, y
    cdef int ok
    i = 0
    cdef zk_fpart am, em, bad
    if nparts == 1 and stride == <Py_ssize_t> sizeof(zk_fpart) and not swap:
        # contiguous, native order: a constant stride and same-width arithmetic let the
        # compiler vectorise the block (NaN: |x| > the exponent mask)
        if zk_fpart is uint16_t:
            am = 0x7FFF
            em = 0x7C00
        elif zk_fpart is uint32_t:
            am = 0x7FFFFFFFU
            em = 0x7F800000U
        else:
            am = 0x7FFFFFFFFFFFFFFFULL
            em = 0x7FF0000000000000ULL
        while i < n:
            stop = i + 256 if n - i > 256 else n
            bad = 0
            for j in range(i, stop):
                memcpy(&x, p + j * <Py_ssize_t> sizeof(zk_fpart), sizeof(zk_fpart))
                bad |= <zk_fpart>((x & am) <= em)
            if bad != 0:
                return False
            i = stop
        return True
    while i < n:
        stop = i + 256 if n - i > 256 else n
        ok = 1
        if nparts == 1:
            for j in range(i, stop):
                memcpy(&x, p + j * stride, sizeof(zk_fpart))
                ok &= _isnan_bits(x, swap)
        else:
            for j in range(i, stop):
                memcpy(&x, p + j * stride, sizeof(zk_fpart))
                memcpy(&y, p + j * stride + <Py_ssize_t> sizeof(zk_fpart), sizeof(zk_fpart))
                ok &= _isnan_bits(x, swap) | _isnan_bits(y, swap)
        if not ok:
            return False
        i = stop
    return True


cdef inline bint _fill_row_check(const char *p, Py_ssize_t n, Py_ssize_t stride,
                                 const zk_fillspec *spec, const char *patbuf,
                                 Py_ssize_t patlen) noexcept nogil:
    """Whether every element of one strided row equals the fill under ``spec``."""
    cdef Py_ssize_t isz = spec.itemsize, i, total, off, m
    cdef const char *f
    if spec.mode == MODE_BYTES:
        if stride == isz:
            # contiguous: memcmp against a repeated-fill pattern, ZK_PATTERN bytes at a time
            total = n * isz
            off = 0
            while off < total:
                m = patlen if total - off > patlen else total - off
                if memcmp(p + off, patbuf, <size_t> m) != 0:
                    return False
                off += m
            return True
        f = spec.pat
        if isz == 1:
            return _masked_row(p, n, stride, 1, (<const uint8_t *> f)[0], <uint8_t> 0,
                               <uint8_t> 0xFF, <uint8_t> 0)
        if isz == 2:
            return _masked_row(p, n, stride, 1, _load16(f), <uint16_t> 0, <uint16_t> 0xFFFF,
                               <uint16_t> 0)
        if isz == 4:
            return _masked_row(p, n, stride, 1, _load32(f), <uint32_t> 0,
                               <uint32_t> 0xFFFFFFFFU, <uint32_t> 0)
        if isz == 8:
            return _masked_row(p, n, stride, 1, _load64(f), <uint64_t> 0,
                               <uint64_t> 0xFFFFFFFFFFFFFFFFULL, <uint64_t> 0)
        if isz == 16:
            return _masked_row(p, n, stride, 2, _load64(f), _load64(f + 8),
                               <uint64_t> 0xFFFFFFFFFFFFFFFFULL,
                               <uint64_t> 0xFFFFFFFFFFFFFFFFULL)
        for i in range(n):
            if memcmp(p + i * stride, f, <size_t> isz) != 0:
                return False
        return True
    if spec.mode == MODE_MASKED:
        if spec.pw == 2:
            return _masked_row(p, n, stride, spec.nparts, <uint16_t> spec.fbits[0],
                               <uint16_t> spec.fbits[1], <uint16_t> spec.mask[0],
                               <uint16_t> spec.mask[1])
        if spec.pw == 4:
            return _masked_row(p, n, stride, spec.nparts, <uint32_t> spec.fbits[0],
                               <uint32_t> spec.fbits[1], <uint32_t> spec.mask[0],
                               <uint32_t> spec.mask[1])
        return _masked_row(p, n, stride, spec.nparts, <uint64_t> spec.fbits[0],
                           <uint64_t> spec.fbits[1], <uint64_t> spec.mask[0],
                           <uint64_t> spec.mask[1])
    # MODE_NAN
    if spec.pw == 2:
        return _nan_row(p, n, stride, spec.nparts, spec.swap, <uint16_t *> NULL)
    if spec.pw == 4:
        return _nan_row(p, n, stride, spec.nparts, spec.swap, <uint32_t *> NULL)
    return _nan_row(p, n, stride, spec.nparts, spec.swap, <uint64_t *> NULL)


cdef inline uint16_t _load16(const char *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline uint32_t _load32(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _load64(const char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef int is_fill_c(
    const char *data,           # IN  base pointer
    int nd,                     # IN  ndim
    Py_ssize_t *shape,          # IN  shape (scratch: rewritten)
    Py_ssize_t *strides,        # IN  byte strides (scratch: rewritten)
    const zk_fillspec *spec,    # IN  what "equal to the fill" means
) noexcept nogil:
    """Return 1 when every element equals the fill, 0 at the first row that does not, or a
    negative status."""
    cdef char *p = <char *> data
    cdef Py_ssize_t idx[ZK_MAXD]
    cdef Py_ssize_t n, st, isz = spec.itemsize, patlen = 0, done, step
    cdef int k, outer
    cdef char stackpat[ZK_PATTERN]
    cdef char *patbuf = NULL
    nd = _collapse(nd, shape, strides, NULL, &p, NULL)
    if nd < 0:
        return 1
    if nd == 0:
        nd = 1
        shape[0] = 1
        strides[0] = isz
    n = shape[nd - 1]
    st = strides[nd - 1]
    if spec.mode == MODE_BYTES and st == isz:
        # a pattern of whole fills, at most ZK_PATTERN bytes (or one fill) and at most a row
        patlen = (ZK_PATTERN // isz) * isz if isz <= ZK_PATTERN else isz
        if patlen > n * isz:
            patlen = n * isz
        if patlen <= ZK_PATTERN:
            patbuf = stackpat
        else:
            patbuf = <char *> malloc(<size_t> patlen)
            if patbuf == NULL:
                return ZK_ENOMEM
        memcpy(patbuf, spec.pat, <size_t> isz)
        done = isz
        while done < patlen:
            step = done if done <= patlen - done else patlen - done
            memcpy(patbuf + done, patbuf, <size_t> step)
            done += step
    outer = nd - 1
    for k in range(outer):
        idx[k] = 0
    while True:
        if not _fill_row_check(p, n, st, spec, patbuf, patlen):
            if patbuf != NULL and patbuf != stackpat:
                free(patbuf)
            return 0
        k = outer - 1
        while k >= 0:
            idx[k] += 1
            p += strides[k]
            if idx[k] < shape[k]:
                break
            p -= strides[k] * shape[k]
            idx[k] = 0
            k -= 1
        if k < 0:
            break
    if patbuf != NULL and patbuf != stackpat:
        free(patbuf)
    return 1


# ---------------------------------------------------------------------------------------------
# Views from selections (GIL held)
# ---------------------------------------------------------------------------------------------

cdef extern from "numpy/arrayobject.h":
    enum: NPY_HALF
    bint PyArray_CanCastTypeTo(cnp.dtype, cnp.dtype, cnp.NPY_CASTING)

cdef object _AxisError = np.exceptions.AxisError
cdef int _NPY_ITEM_REFCOUNT = 0x01


cdef inline int _check_array(object a, str name) except -1:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    return 0


cdef inline int _check_plain_dtype(cnp.ndarray a, str name) except -1:
    """Only dtypes whose elements are plain bytes can be moved with memcpy."""
    cdef cnp.dtype d = <cnp.dtype> cnp.PyArray_DESCR(a)
    cdef int t = d.type_num
    if t == cnp.NPY_OBJECT or t >= cnp.NPY_NTYPES_LEGACY or (d.flags & _NPY_ITEM_REFCOUNT):
        raise TypeError(
            f"{name}: dtype {d} is not handled (object or new-style dtype); use numpy")
    return 0


cdef inline int _check_same_dtype(cnp.ndarray a, cnp.ndarray b, str what) except -1:
    cdef cnp.dtype da = <cnp.dtype> cnp.PyArray_DESCR(a)
    cdef cnp.dtype db = <cnp.dtype> cnp.PyArray_DESCR(b)
    if da is not db and not cnp.PyArray_EquivTypes(da, db):
        raise TypeError(f"{what}: dtypes differ ({da} vs {db}); view or cast first")
    _check_plain_dtype(a, what)
    return 0


cdef inline int _check_writable(cnp.ndarray a, str name) except -1:
    if not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name}: assignment destination is read-only")
    return 0


cdef inline void _view_of(zk_view *v, cnp.ndarray a) noexcept:
    cdef int i
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *strides = cnp.PyArray_STRIDES(a)
    v.data = cnp.PyArray_BYTES(a)
    v.nd = cnp.PyArray_NDIM(a)
    for i in range(v.nd):
        v.shape[i] = dims[i]
        v.strides[i] = strides[i]


cdef inline bint _is_int_index(object item):
    # Python ints and numpy integers (numpy takes anything with __index__), not bools (numpy
    # reads a bool as a mask) and not arrays (fancy indexing).
    if PyLong_Check(item):
        return not PyBool_Check(item)
    return (PyIndex_Check(item) and not cnp.PyArray_Check(item)
            and not isinstance(item, np.bool_))


cdef str _short_repr(object item):
    r = repr(item)
    return r if len(r) <= 60 else r[:57] + "..."


cdef int _select(zk_view *v, cnp.ndarray a, object sel, str what) except -1:
    """Describe ``a[sel]`` in ``v`` for a basic selection of ints and slices with step > 0."""
    cdef Py_ssize_t nsel, i, start, stop, step, n, idx
    cdef int nd = cnp.PyArray_NDIM(a), k = 0
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *strides = cnp.PyArray_STRIDES(a)
    cdef object item
    cdef tuple items
    if PyTuple_Check(sel):
        items = <tuple> sel
    elif PySlice_Check(sel) or _is_int_index(sel):
        items = (sel,)
    else:
        raise TypeError(
            f"{what}: unsupported selection {_short_repr(sel)} of type {type(sel).__name__}; "
            "only tuples of ints and slices with step > 0 are handled, use numpy")
    nsel = PyTuple_GET_SIZE(items)
    v.data = cnp.PyArray_BYTES(a)
    for i in range(nsel):
        item = <object> PyTuple_GET_ITEM(items, i)
        if PySlice_Check(item):
            if i >= nd:
                raise IndexError(f"{what}: too many indices for array: array is "
                                 f"{nd}-dimensional, but {nsel} were indexed")
            PySlice_Unpack(item, &start, &stop, &step)
            if step < 0:
                raise TypeError(
                    f"{what}: slice {_short_repr(item)} at position {i} has a negative step; "
                    "only steps > 0 are handled, use numpy")
            n = PySlice_AdjustIndices(dims[i], &start, &stop, step)
            if n > 0:
                v.data += start * strides[i]
            v.shape[k] = n
            v.strides[k] = strides[i] * step
            k += 1
        elif _is_int_index(item):
            if i >= nd:
                raise IndexError(f"{what}: too many indices for array: array is "
                                 f"{nd}-dimensional, but {nsel} were indexed")
            idx = PyNumber_AsSsize_t(item, IndexError)
            n = dims[i]
            if idx < -n or idx >= n:
                raise IndexError(
                    f"{what}: index {idx} is out of bounds for axis {i} with size {n}")
            if idx < 0:
                idx += n
            v.data += idx * strides[i]
        else:
            raise TypeError(
                f"{what}: unsupported selection item {_short_repr(item)} of type "
                f"{type(item).__name__} at position {i}; only ints and slices with step > 0 "
                "are handled, use numpy")
    for i in range(nsel, nd):
        v.shape[k] = dims[i]
        v.strides[k] = strides[i]
        k += 1
    v.nd = k
    return 0


cdef tuple _shape_of(const zk_view *v):
    return tuple([v.shape[i] for i in range(v.nd)])


cdef int _squeeze(zk_view *v, object drop_axes, str what) except -1:
    """``v.squeeze(axis=drop_axes)``, numpy's rules."""
    cdef char mark[ZK_MAXD]
    cdef Py_ssize_t a
    cdef int i, k
    memset(mark, 0, ZK_MAXD)
    if not isinstance(drop_axes, (tuple, list)):
        drop_axes = (drop_axes,)
    for ax in drop_axes:
        a = PyNumber_AsSsize_t(ax, IndexError)
        if a < -v.nd or a >= v.nd:
            raise _AxisError(f"{what}: axis {a} is out of bounds for array of dimension {v.nd}")
        if a < 0:
            a += v.nd
        if mark[a]:
            raise ValueError(f"{what}: repeated axis {a} in drop_axes")
        if v.shape[a] != 1:
            raise ValueError(
                f"{what}: cannot squeeze axis {a} of size {v.shape[a]} (shape "
                f"{_shape_of(v)}): drop_axes must name size-1 axes")
        mark[a] = 1
    k = 0
    for i in range(v.nd):
        if not mark[i]:
            v.shape[k] = v.shape[i]
            v.strides[k] = v.strides[i]
            k += 1
    v.nd = k
    return 0


cdef int _expand(zk_view *v, object drop_axes, str what) except -1:
    """Insert size-1 axes at positions ``drop_axes`` of the result (zarr's ``value[item]`` with
    ``None`` at each dropped axis)."""
    cdef char mark[ZK_MAXD]
    cdef Py_ssize_t shape[ZK_MAXD]
    cdef Py_ssize_t strides[ZK_MAXD]
    cdef Py_ssize_t a, newnd
    cdef int i, j
    memset(mark, 0, ZK_MAXD)
    if not isinstance(drop_axes, (tuple, list)):
        drop_axes = (drop_axes,)
    newnd = v.nd + len(drop_axes)
    if newnd > ZK_MAXD:
        raise ValueError(f"{what}: too many dimensions ({newnd})")
    for ax in drop_axes:
        a = PyNumber_AsSsize_t(ax, IndexError)
        if a < -newnd or a >= newnd:
            raise _AxisError(f"{what}: axis {a} is out of bounds for array of dimension {newnd}")
        if a < 0:
            a += newnd
        if mark[a]:
            raise ValueError(f"{what}: repeated axis {a} in drop_axes")
        mark[a] = 1
    j = 0
    for i in range(newnd):
        if mark[i]:
            shape[i] = 1
            strides[i] = 0
        else:
            shape[i] = v.shape[j]
            strides[i] = v.strides[j]
            j += 1
    for i in range(newnd):
        v.shape[i] = shape[i]
        v.strides[i] = strides[i]
    v.nd = <int> newnd
    return 0


cdef int _broadcast_to(zk_view *src, const zk_view *dst, str what) except -1:
    """Align ``src`` to ``dst`` by numpy's assignment rules: trailing axes match or are 1 in
    src (stride 0); src may have fewer axes, or extra leading ones of size 1."""
    cdef int i, extra, off
    cdef Py_ssize_t sn
    extra = src.nd - dst.nd
    for i in range(extra):
        if src.shape[i] != 1:
            raise ValueError(f"{what}: could not broadcast source shape {_shape_of(src)} into "
                             f"destination shape {_shape_of(dst)}")
    off = -extra if extra < 0 else 0
    for i in range(dst.nd - off):
        sn = src.shape[i + extra + off]
        if sn != dst.shape[i + off] and sn != 1:
            raise ValueError(f"{what}: could not broadcast source shape {_shape_of(src)} into "
                             f"destination shape {_shape_of(dst)}")
    if extra > 0:
        for i in range(dst.nd):
            src.shape[i] = src.shape[i + extra]
            src.strides[i] = src.strides[i + extra]
    elif off > 0:
        for i in range(dst.nd - 1, off - 1, -1):
            src.shape[i] = src.shape[i - off]
            src.strides[i] = src.strides[i - off]
        for i in range(off):
            src.shape[i] = 1
            src.strides[i] = 0
    src.nd = dst.nd
    for i in range(dst.nd):
        if src.shape[i] != dst.shape[i]:
            src.shape[i] = dst.shape[i]
            src.strides[i] = 0
    return 0


cdef inline bint _extent(const zk_view *v, Py_ssize_t isz, char **lo, char **hi) noexcept:
    """Byte range touched by a view; False when it is empty."""
    cdef int i
    cdef char *a = v.data
    cdef char *b = v.data + isz
    for i in range(v.nd):
        if v.shape[i] == 0:
            return False
        if v.strides[i] < 0:
            a += (v.shape[i] - 1) * v.strides[i]
        else:
            b += (v.shape[i] - 1) * v.strides[i]
    lo[0] = a
    hi[0] = b
    return True


cdef inline bint _overlap(const zk_view *x, const zk_view *y, Py_ssize_t isz) noexcept:
    cdef char *xlo
    cdef char *xhi
    cdef char *ylo
    cdef char *yhi
    if not _extent(x, isz, &xlo, &xhi) or not _extent(y, isz, &ylo, &yhi):
        return False
    return xlo < yhi and ylo < xhi


cdef inline bint _dst_self_overlaps(const zk_view *v) noexcept:
    # a writable view with a 0 stride on a longer axis writes one element many times: leave
    # the order of those writes to numpy
    cdef int i
    for i in range(v.nd):
        if v.strides[i] == 0 and v.shape[i] > 1:
            return True
    return False


cdef inline Py_ssize_t _nbytes(const zk_view *v, Py_ssize_t isz) noexcept:
    cdef Py_ssize_t n = isz
    cdef int i
    for i in range(v.nd):
        n *= v.shape[i]
    return n


cdef int _run_copy(zk_view *dst, zk_view *src, Py_ssize_t isz) except -1:
    cdef int rc
    if _nbytes(dst, isz) >= ZK_NOGIL_MIN_BYTES:
        with nogil:
            rc = copy_nd_c(dst.data, src.data, dst.nd, dst.shape, dst.strides, src.strides, isz)
    else:
        rc = copy_nd_c(dst.data, src.data, dst.nd, dst.shape, dst.strides, src.strides, isz)
    if rc != ZK_OK:
        raise MemoryError()
    return 0


# ---------------------------------------------------------------------------------------------
# Public wrappers
# ---------------------------------------------------------------------------------------------

def copy_region(src, dst):
    """Copy ``src`` into ``dst`` elementwise: ``dst[...] = src``, GIL released.

    Parameters
    ----------
    src : numpy.ndarray
        Any strides (positive, negative, or 0 for a broadcast source, e.g. from
        ``np.broadcast_to``).
    dst : numpy.ndarray
        Writable, the same shape and dtype as ``src`` (``PyArray_EquivTypes``: byte order
        counts, so view or cast first), any strides.

    Notes
    -----
    Adjacent axes whose strides chain are merged first, so a C- to C-contiguous copy is one
    ``memcpy``; rows contiguous on both sides are copied with ``memcpy``, other rows element by
    element with a fixed-width move (1, 2, 4, 8, 16 bytes) or ``memcpy`` of the itemsize.
    When the two arrays' memory overlaps the copy is handed to ``np.copyto``, which handles
    it. Copies under 16 KiB keep the GIL (releasing it costs more than the copy).

    Raises
    ------
    TypeError
        Not ndarrays, different dtypes, or an object / new-style dtype.
    ValueError
        Different shapes, or ``dst`` is read-only.
    """
    _check_array(src, "src")
    _check_array(dst, "dst")
    cdef cnp.ndarray s = <cnp.ndarray> src
    cdef cnp.ndarray d = <cnp.ndarray> dst
    _check_same_dtype(s, d, "copy_region")
    _check_writable(d, "dst")
    cdef zk_view vs, vd
    _view_of(&vs, s)
    _view_of(&vd, d)
    cdef int i
    cdef bint same = vs.nd == vd.nd
    if same:
        for i in range(vd.nd):
            if vs.shape[i] != vd.shape[i]:
                same = False
                break
    if not same:
        raise ValueError(f"copy_region: shapes differ: src {_shape_of(&vs)}, dst "
                         f"{_shape_of(&vd)}")
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(d)
    if _overlap(&vs, &vd, isz) or _dst_self_overlaps(&vd):
        np.copyto(dst, src, casting="no")
        return None
    _run_copy(&vd, &vs, isz)
    return None


def scatter(chunk, chunk_selection, out, out_selection, drop_axes=()):
    """Read side: ``out[out_selection] = chunk[chunk_selection]``, GIL released.

    With ``drop_axes`` squeezed from the selected chunk first, exactly as zarr's
    ``BatchedCodecPipeline.read_batch``: ``tmp = chunk[chunk_selection]``;
    ``tmp = tmp.squeeze(axis=drop_axes)``; ``out[out_selection] = tmp``.

    Parameters
    ----------
    chunk : numpy.ndarray
        The decoded chunk, any layout.
    chunk_selection, out_selection : tuple of int and slice
        Basic selections: ints (drop the axis; negative counts from the end) and slices with
        step > 0 (``None`` parts allowed); fewer items than axes select whole trailing axes.
        A bare int or slice is taken as a 1-tuple.
    out : numpy.ndarray
        Writable, the same dtype as ``chunk``.
    drop_axes : tuple of int
        Size-1 axes of the selected chunk to squeeze out.

    Notes
    -----
    Shapes follow numpy's assignment rules (the selected chunk may broadcast: size-1 axes, fewer
    axes, extra leading size-1 axes); anything else raises ValueError naming both shapes.

    Raises
    ------
    TypeError
        A selection item other than an int or a slice with step > 0 (arrays, lists, Ellipsis,
        None, bools, negative steps), non-ndarray arguments, different dtypes, or an object
        dtype: the caller should use numpy indexing instead.
    IndexError
        An index out of bounds, or too many indices.
    ValueError
        Shapes that do not broadcast, bad ``drop_axes``, read-only ``out``.
    """
    _check_array(chunk, "chunk")
    _check_array(out, "out")
    cdef cnp.ndarray c = <cnp.ndarray> chunk
    cdef cnp.ndarray o = <cnp.ndarray> out
    _check_same_dtype(c, o, "scatter")
    cdef zk_view vs, vd
    _select(&vs, c, chunk_selection, "chunk_selection")
    if drop_axes:
        _squeeze(&vs, drop_axes, "scatter")
    _select(&vd, o, out_selection, "out_selection")
    _check_writable(o, "out")
    _broadcast_to(&vs, &vd, "scatter")
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(o)
    if _overlap(&vs, &vd, isz) or _dst_self_overlaps(&vd):
        tmp = chunk[chunk_selection]
        if drop_axes:
            tmp = tmp.squeeze(axis=drop_axes)
        out[out_selection] = tmp
        return None
    _run_copy(&vd, &vs, isz)
    return None


def gather(src, src_selection, chunk, chunk_selection, drop_axes=()):
    """Write side: ``chunk[chunk_selection] = src[src_selection]``, GIL released.

    ``drop_axes`` are axes of the selected chunk that the selected source lacks: size-1 axes are
    inserted there first, as zarr's ``_merge_chunk_array`` does with ``None`` entries.

    Parameters
    ----------
    src : numpy.ndarray
        The value being written, any layout.
    src_selection, chunk_selection : tuple of int and slice
        Basic selections, as for :func:`scatter`.
    chunk : numpy.ndarray
        Writable, the same dtype as ``src``.
    drop_axes : tuple of int
        Positions (in the selected chunk's axes) of the axes to insert.

    Notes
    -----
    The expanded source broadcasts into the selected chunk by numpy's assignment rules.

    Raises
    ------
    TypeError, IndexError, ValueError
        As for :func:`scatter`.
    """
    _check_array(src, "src")
    _check_array(chunk, "chunk")
    cdef cnp.ndarray s = <cnp.ndarray> src
    cdef cnp.ndarray c = <cnp.ndarray> chunk
    _check_same_dtype(s, c, "gather")
    cdef zk_view vs, vd
    _select(&vs, s, src_selection, "src_selection")
    if drop_axes:
        _expand(&vs, drop_axes, "gather")
    _select(&vd, c, chunk_selection, "chunk_selection")
    _check_writable(c, "chunk")
    _broadcast_to(&vs, &vd, "gather")
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(c)
    if _overlap(&vs, &vd, isz) or _dst_self_overlaps(&vd):
        value = src[src_selection]
        if drop_axes:
            value = np.expand_dims(value, tuple(drop_axes))
        chunk[chunk_selection] = value
        return None
    _run_copy(&vd, &vs, isz)
    return None


cdef object _fill_bytes(cnp.ndarray out, object fill_value, char *local):
    """The itemsize bytes that numpy would store for ``out[...] = fill_value``: written to
    ``local`` (32 bytes) and None returned for a numpy scalar of the array's own fixed-size
    dtype (the common, allocation-free case), else returned as bytes."""
    cdef cnp.dtype d = <cnp.dtype> cnp.PyArray_DESCR(out)
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(out)
    cdef int t = d.type_num
    if PyObject_TypeCheck(fill_value, &PyGenericArrType_Type):
        fd = cnp.PyArray_DescrFromScalar(fill_value)
        if fd is d or cnp.PyArray_EquivTypes(fd, d):
            if (isz <= 32 and t != cnp.NPY_STRING and t != cnp.NPY_UNICODE
                    and t != cnp.NPY_VOID):
                cnp.PyArray_ScalarAsCtype(fill_value, local)
                return None
            return fill_value.tobytes()
    elif isinstance(fill_value, (bytes, bytearray, memoryview)):
        raw = bytes(fill_value)
        if len(raw) != isz:
            raise ValueError(
                f"fill: fill_value has {len(raw)} bytes, the dtype {d} has itemsize {isz}")
        return raw
    tmp = np.empty((), dtype=d)
    tmp[()] = fill_value
    return tmp.tobytes()


def fill(out, selection, fill_value):
    """``out[selection] = fill_value`` for a basic selection, GIL released.

    Parameters
    ----------
    out : numpy.ndarray
        Writable; any layout and dtype without Python objects (structured and void included).
    selection : tuple of int and slice
        As for :func:`scatter`.
    fill_value : scalar or bytes
        A numpy or Python scalar, converted as numpy assignment converts it, or raw ``bytes``
        of exactly ``out.itemsize`` stored as they are (in the array's own byte order).

    Raises
    ------
    TypeError
        Unsupported selection, non-ndarray, object dtype.
    ValueError
        Read-only ``out``, ``bytes`` of the wrong length, or a value numpy cannot convert.
    """
    _check_array(out, "out")
    cdef cnp.ndarray o = <cnp.ndarray> out
    _check_plain_dtype(o, "fill")
    cdef zk_view vd
    _select(&vd, o, selection, "selection")
    _check_writable(o, "out")
    cdef char local[32]
    raw = _fill_bytes(o, fill_value, local)
    cdef const char *pat
    if raw is None:
        pat = <const char *> &local[0]
    else:
        pat = <const char *> (<bytes> raw)
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(o)
    cdef int rc
    if _dst_self_overlaps(&vd):
        out[selection] = np.frombuffer(pat[:isz], dtype=out.dtype)[0]
        return None
    if _nbytes(&vd, isz) >= ZK_NOGIL_MIN_BYTES:
        with nogil:
            rc = fill_nd_c(vd.data, vd.nd, vd.shape, vd.strides, pat, isz)
    else:
        rc = fill_nd_c(vd.data, vd.nd, vd.shape, vd.strides, pat, isz)
    return None


# ---------------------------------------------------------------------------------------------
# is_fill
# ---------------------------------------------------------------------------------------------

def _all_equal_twin(data, other):
    """zarr 3.1.6 ``NDBuffer.all_equal(other)`` on an ndarray, restated (the slow path for
    dtypes and fill values that the kernel does not take)."""
    if other is None:
        return False
    if (
        np.asarray(other).dtype.kind == "f"
        and other == 0.0
        and data.dtype.kind not in ("U", "S", "T", "O", "V")
    ):
        _data, other = np.broadcast_arrays(data, np.asarray(other, data.dtype))
        void_dtype = "V" + str(_data.dtype.itemsize)
        return bool(np.array_equal(_data.view(void_dtype), other.view(void_dtype)))
    _data, other = np.broadcast_arrays(data, other)
    return bool(np.array_equal(
        _data, other, equal_nan=data.dtype.kind not in ("U", "S", "T", "O", "V")))


cdef dict _VOID_BYTEWISE = {}


cdef bint _void_bytewise(cnp.dtype d):
    """Whether numpy's ``==`` on this void/structured dtype is plain byte equality: no
    padding, no overlapping fields, every field bool/int/uint or itself bytewise void (float
    fields compare by value, datetime fields never match NaT)."""
    cached = _VOID_BYTEWISE.get(d)
    if cached is not None:
        return cached
    ok = _void_bytewise_py(d)
    if len(_VOID_BYTEWISE) < 1024:
        _VOID_BYTEWISE[d] = ok
    return ok


def _void_bytewise_py(d):
    if d.subdtype is not None:
        base = d.subdtype[0]
        return _elem_bytewise_py(base)
    if d.names is None:
        return True  # unstructured void: compared as bytes
    spans = []
    for name in d.names:
        fd, off = d.fields[name][:2]
        if not _elem_bytewise_py(fd):
            return False
        spans.append((off, fd.itemsize))
    spans.sort()
    pos = 0
    for off, size in spans:
        if off != pos:
            return False  # padding or overlap
        pos += size
    return pos == d.itemsize


def _elem_bytewise_py(d):
    if d.subdtype is not None:
        return _elem_bytewise_py(d.subdtype[0])
    if d.kind in "biu":
        return True
    if d.kind == "V":
        return _void_bytewise_py(d)
    return False


cdef object _fill_raw_for_check(cnp.ndarray buf, cnp.dtype d, object fill, char *local):
    """``fill`` as ``buf``'s dtype bytes when the kernel can compare with it exactly: True
    when written to ``local`` (32 bytes: a numpy scalar of the buffer's own fixed-size dtype,
    the common case, without allocating), else the bytes, or None (the caller then runs
    zarr's own expression)."""
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(buf)
    cdef int t = d.type_num
    cdef str kind
    if PyObject_TypeCheck(fill, &PyGenericArrType_Type):
        fd = cnp.PyArray_DescrFromScalar(fill)
        if fd is d or cnp.PyArray_EquivTypes(fd, d):
            if isz <= 32 and t != cnp.NPY_VOID:
                cnp.PyArray_ScalarAsCtype(fill, local)
                return True
            return fill.tobytes()
        if d.type_num != cnp.NPY_VOID and PyArray_CanCastTypeTo(fd, d, cnp.NPY_SAFE_CASTING):
            return np.asarray(fill, dtype=d).tobytes()
        return None
    tp = type(fill)
    if tp is bool or tp is int or tp is float or tp is complex:
        kind = chr(d.kind)
        if not ((tp is complex and kind == "c") or (tp is float and kind in "fc")
                or ((tp is int or tp is bool) and kind in "biufc")):
            return None
        try:
            with np.errstate(all="ignore"):
                c = np.asarray(fill, dtype=d)
        except (OverflowError, ValueError, TypeError):
            return None
        v = c.item()
        if not (v == fill or (tp is float and math.isnan(fill) and cmath.isnan(v))
                or (tp is complex and cmath.isnan(fill) and cmath.isnan(v))):
            return None  # not representable: zarr compares in a wider type
        return c.tobytes()
    return None


cdef inline uint64_t _part_bits(const char *p, int pw, bint swap) noexcept:
    # a float part as a native-order unsigned integer
    if pw == 2:
        return zk_bswap16(_load16(p)) if swap else _load16(p)
    if pw == 4:
        return zk_bswap32(_load32(p)) if swap else _load32(p)
    return zk_bswap64(_load64(p)) if swap else _load64(p)


cdef inline uint64_t _swap_bits(uint64_t x, int pw, bint swap) noexcept:
    if not swap:
        return x
    if pw == 2:
        return zk_bswap16(<uint16_t> x)
    if pw == 4:
        return zk_bswap32(<uint32_t> x)
    return zk_bswap64(x)


cdef object make_fill_spec(zk_fillspec *spec, cnp.ndarray b, object fill_value):
    """See _scatter.pxd: fill `spec` for arrays of `b`'s dtype; the object it points into."""
    if fill_value is None:
        return False
    cdef cnp.dtype d = <cnp.dtype> cnp.PyArray_DESCR(b)
    cdef int t = d.type_num
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(b)
    cdef bint is_float = False, fill_kind_f = False, zero_rule, any_nan = False
    cdef bint all_exact = True
    cdef char local[32]
    cdef int j
    cdef uint64_t bits, sign
    cdef object raw
    if isinstance(fill_value, cnp.ndarray) and (<cnp.ndarray> fill_value).ndim == 0:
        fill_value = fill_value[()]
    if (t == NPY_HALF or t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE
            or t == cnp.NPY_CFLOAT or t == cnp.NPY_CDOUBLE):
        is_float = True
    elif t == cnp.NPY_VOID:
        if (d.flags & _NPY_ITEM_REFCOUNT) or not _void_bytewise(d):
            return None
    elif not (t == cnp.NPY_BOOL or cnp.NPY_BYTE <= t <= cnp.NPY_ULONGLONG
              or t == cnp.NPY_DATETIME or t == cnp.NPY_TIMEDELTA):
        return None

    if (isinstance(fill_value, (bytes, bytearray))
            and not PyObject_TypeCheck(fill_value, &PyGenericArrType_Type)):
        raw = bytes(fill_value)
        if len(raw) != isz:
            raise ValueError(
                f"is_fill: fill_value has {len(raw)} bytes, the dtype {d} has itemsize {isz}")
        is_float = False
    else:
        raw = _fill_raw_for_check(b, d, fill_value, local)
        if raw is None:
            return None
        if is_float:
            # zarr: `np.asarray(other).dtype.kind == "f" and other == 0.0` -> compare bits.
            # The fill's kind here; "== 0.0" below, from the bits (a float fill converted
            # exactly to this float/complex dtype is +-0 in every part iff it was zero).
            if isinstance(fill_value, float):
                fill_kind_f = True
            elif PyObject_TypeCheck(fill_value, &PyGenericArrType_Type):
                ft = (<cnp.dtype> cnp.PyArray_DescrFromScalar(fill_value)).type_num
                fill_kind_f = (ft == NPY_HALF or ft == cnp.NPY_FLOAT or ft == cnp.NPY_DOUBLE
                               or ft == cnp.NPY_LONGDOUBLE)

    cdef const char *pat
    if raw is True:
        raw = PyBytes_FromStringAndSize(local, isz)
    pat = <const char *> (<bytes> raw)
    spec.mode = MODE_BYTES
    spec.itemsize = isz
    spec.pat = pat
    spec.pw = 0
    spec.nparts = 1
    spec.swap = False
    spec.fbits[0] = spec.fbits[1] = 0
    spec.mask[0] = spec.mask[1] = 0
    if is_float:
        spec.nparts = 2 if (t == cnp.NPY_CFLOAT or t == cnp.NPY_CDOUBLE) else 1
        spec.pw = <int>(isz // spec.nparts)
        spec.swap = not cnp.PyArray_ISNBO(d.byteorder)
        sign = (<uint64_t> 1) << (8 * spec.pw - 1)
        zero_rule = fill_kind_f
        for j in range(spec.nparts):
            if (_part_bits(pat + j * spec.pw, spec.pw, spec.swap) & ~sign) != 0:
                zero_rule = False
        for j in range(spec.nparts):
            bits = _part_bits(pat + j * spec.pw, spec.pw, spec.swap)
            if _is_nan_part(bits, spec.pw):
                any_nan = True
            spec.fbits[j] = _swap_bits(bits, spec.pw, spec.swap)
            if (bits & ~sign) == 0 and not zero_rule:
                # a zero part matches +0.0 and -0.0: ignore the sign bit
                spec.mask[j] = _swap_bits(~sign & (sign | (sign - 1)), spec.pw, spec.swap)
                all_exact = False
            else:
                spec.mask[j] = _swap_bits(sign | (sign - 1), spec.pw, spec.swap)
        if any_nan:
            spec.mode = MODE_NAN
        elif not all_exact:
            spec.mode = MODE_MASKED
    return raw


def is_fill(buf, fill_value):
    """Whether every element of ``buf`` equals ``fill_value``, decided exactly as zarr 3.1.6's
    ``NDBuffer.all_equal`` decides it (what ``write_empty_chunks=False`` stores).

    Parameters
    ----------
    buf : numpy.ndarray
        Any layout and dtype.
    fill_value : scalar, bytes or None
        Usually the array's fill value as a numpy scalar. ``bytes`` of ``buf.itemsize`` are
        compared bytewise (no NaN or signed-zero rules). ``None`` gives False, as in zarr.

    Returns
    -------
    bool
        True for an empty ``buf``.

    Notes
    -----
    zarr's rules, which the kernel reproduces:

    * a float fill equal to zero (``0.0`` or ``-0.0``, Python or numpy float) compares bit
      patterns: ``-0.0`` does not match a ``0.0`` fill, nor ``0.0`` a ``-0.0`` one;
    * otherwise floating and complex data compare by value with NaN equal to NaN (any payload;
      a complex is NaN when either part is), so a complex zero fill matches ``-0.0`` parts and
      an integer ``0`` fill matches ``-0.0``;
    * integers, bools, datetimes (NaT matches NaT) and bytewise-comparable void / structured
      dtypes compare bytes.

    The kernel runs without the GIL (above 16 KiB) and stops at the first block with a
    mismatch. Other cases (string and object dtypes, structured dtypes with float fields or
    padding, fill values not exactly representable in ``buf.dtype``) run zarr's own numpy
    expression.
    """
    _check_array(buf, "buf")
    if buf.dtype.itemsize == 0:  # nothing to compare bytewise ('V0'): zarr's own expression
        return _all_equal_twin(buf, fill_value)
    cdef zk_fillspec spec
    keep = make_fill_spec(&spec, <cnp.ndarray> buf, fill_value)
    if keep is False:
        return False
    if keep is None:
        return _all_equal_twin(buf, fill_value)
    cdef cnp.ndarray b = <cnp.ndarray> buf
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(b)
    cdef zk_view v
    _view_of(&v, b)
    cdef int rc
    if _nbytes(&v, isz) >= ZK_NOGIL_MIN_BYTES:
        with nogil:
            rc = is_fill_c(v.data, v.nd, v.shape, v.strides, &spec)
    else:
        rc = is_fill_c(v.data, v.nd, v.shape, v.strides, &spec)
    if rc < 0:
        raise MemoryError()
    return rc == 1


cdef inline bint _is_nan_part(uint64_t bits, int pw) noexcept:
    if pw == 2:
        return (bits & 0x7FFF) > 0x7C00
    if pw == 4:
        return (bits & 0x7FFFFFFFU) > 0x7F800000U
    return (bits & 0x7FFFFFFFFFFFFFFFULL) > 0x7FF0000000000000ULL
