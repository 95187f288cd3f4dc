# cython: language_level=3
"""Plan few reads for many byte ranges (range coalescing for sharded reads).

A sharded read turns into one byte range per inner chunk. Issuing them one by one costs a round
trip each; ``coalesce_ranges`` groups nearby ranges into few larger reads, bounded by
``max_gap_bytes`` (bytes read for nothing between two ranges) and ``max_coalesced_bytes`` (the
largest read it will plan, except for a single range that is larger on its own).

Layering (house style): ``coalesce_ranges_c`` is the nogil core over caller-owned buffers and
returns a status code; ``coalesce_ranges`` validates, releases the GIL and raises.
"""

import operator
from typing import NamedTuple

import numpy as np

cimport numpy as cnp
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cnp.import_array()

cdef uint64_t U64_MAX = 0xFFFFFFFFFFFFFFFFULL
cdef uint64_t SIGN_BIT = 0x8000000000000000ULL

# Status codes of the core (the wrapper turns each into an exception).
cdef enum:
    ZK_OK = 0
    ZK_ENOMEM = -1
    ZK_ENEGATIVE_OFFSET = -2
    ZK_ENEGATIVE_LENGTH = -3
    ZK_EOVERFLOW = -4


class CoalescedRanges(NamedTuple):
    """The read plan made by :func:`coalesce_ranges`.

    Attributes
    ----------
    groups : numpy.ndarray
        uint64, shape ``(G, 2)``: the ``[start, stop)`` byte range of each read, sorted by start.
    request_group : numpy.ndarray
        intp, shape ``(N,)``: the group (row of ``groups``) that holds each request.
    request_offset : numpy.ndarray
        uint64, shape ``(N,)``: each request's start relative to its group's start, so request
        ``i`` is ``data[g][request_offset[i]:request_offset[i] + lengths[i]]`` where ``data[g]``
        is the bytes of group ``g = request_group[i]``.
    """

    groups: np.ndarray
    request_group: np.ndarray
    request_offset: np.ndarray


ctypedef struct zk_req:
    uint64_t off
    uint64_t stop
    Py_ssize_t idx


cdef inline bint _sorted_by_off(const zk_req *r, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(1, n):
        if r[i].off < r[i - 1].off:
            return False
    return True


cdef int _merge_sort(zk_req *a, zk_req *tmp, Py_ssize_t n) noexcept nogil:
    """Stable bottom-up merge sort of ``a`` by ``off`` (ties keep input order).

    Runs of 16 are insertion-sorted first; ``tmp`` has room for ``n`` items. The result ends in
    ``a``.
    """
    cdef Py_ssize_t i, j, lo, mid, hi, k, width
    cdef zk_req x
    cdef zk_req *src = a
    cdef zk_req *dst = tmp
    cdef zk_req *t
    # insertion sort of runs of 16 (stable: strict < moves an item left)
    lo = 0
    while lo < n:
        hi = lo + 16 if lo + 16 < n else n
        for i in range(lo + 1, hi):
            x = a[i]
            j = i - 1
            while j >= lo and a[j].off > x.off:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = x
        lo = hi
    width = 16
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width if lo + width < n else n
            hi = lo + 2 * width if lo + 2 * width < n else n
            i = lo
            j = mid
            k = lo
            if mid >= hi or src[mid - 1].off <= src[mid].off:
                # already in order: copy the run through
                memcpy(&dst[lo], &src[lo], <size_t>(hi - lo) * sizeof(zk_req))
            else:
                while i < mid and j < hi:
                    # <= takes the left item on ties: stable
                    if src[i].off <= src[j].off:
                        dst[k] = src[i]
                        i += 1
                    else:
                        dst[k] = src[j]
                        j += 1
                    k += 1
                while i < mid:
                    dst[k] = src[i]
                    i += 1
                    k += 1
                while j < hi:
                    dst[k] = src[j]
                    j += 1
                    k += 1
            lo = hi
        t = src
        src = dst
        dst = t
        width *= 2
    if src != a:
        memcpy(a, src, <size_t>n * sizeof(zk_req))
    return 0


cdef extern from *:
    int __builtin_clzll(unsigned long long x) nogil


cdef int _radix_sort(zk_req *a, zk_req *tmp, Py_ssize_t n) noexcept nogil:
    """Stable LSD radix sort of ``a`` by ``off``, 11 bits a pass over ``off - min(off)``, as
    many passes as the span needs; ``tmp`` has room for ``n`` items. The result ends in
    ``a``."""
    cdef Py_ssize_t count[2048]
    cdef Py_ssize_t i, total, c
    cdef uint64_t lo = a[0].off, hi = a[0].off, span
    cdef int shift, bits
    cdef unsigned int digit
    cdef zk_req *src = a
    cdef zk_req *dst = tmp
    cdef zk_req *t
    for i in range(1, n):
        if a[i].off < lo:
            lo = a[i].off
        if a[i].off > hi:
            hi = a[i].off
    span = hi - lo
    if span == 0:
        return 0
    bits = 64 - __builtin_clzll(span)
    shift = 0
    while shift < bits:
        memset(count, 0, sizeof(count))
        for i in range(n):
            count[((src[i].off - lo) >> shift) & 2047] += 1
        digit = <unsigned int>(((src[0].off - lo) >> shift) & 2047)
        if count[digit] == n:
            shift += 11
            continue  # every item has the same digit: nothing to move
        total = 0
        for i in range(2048):
            c = count[i]
            count[i] = total
            total += c
        for i in range(n):
            digit = <unsigned int>(((src[i].off - lo) >> shift) & 2047)
            dst[count[digit]] = src[i]
            count[digit] += 1
        t = src
        src = dst
        dst = t
        shift += 11
    if src != a:
        memcpy(a, src, <size_t>n * sizeof(zk_req))
    return 0


cdef Py_ssize_t coalesce_ranges_c(
    const uint64_t *offsets,          # IN  (n,) request starts
    const uint64_t *lengths,          # IN  (n,) request lengths
    Py_ssize_t n,                     # IN  number of requests
    bint offsets_signed,              # IN  offsets are int64 viewed as uint64 (check the sign)
    bint lengths_signed,              # IN  lengths are int64 viewed as uint64 (check the sign)
    uint64_t max_gap,                 # IN  largest gap merged over
    uint64_t max_size,                # IN  largest merged group (>= 1)
    uint64_t *groups,                 # OUT (n, 2) [start, stop) per group; first G rows used
    Py_ssize_t *req_group,            # OUT (n,) group of each request
    uint64_t *req_offset,             # OUT (n,) request start relative to its group start
) noexcept nogil:
    """Group ``n`` byte ranges; return the number of groups G >= 0 or a negative status.

    Rules, over requests in stable order of their offset:

    * a non-empty request joins the current group when its start <= stop + ``max_gap`` and the
      group stays <= ``max_size`` bytes, or when it lies wholly inside the group (it adds no
      bytes, so a duplicate of an oversized request joins it); otherwise it opens a new group.
      A request longer than ``max_size`` thus gets a group of its own.
    * a zero-length request never widens a read: it joins the group that contains its offset
      (start <= offset <= stop, checked against the group open when it is met and the one the
      next non-empty request opens at exactly its offset); otherwise it gets an empty group
      ``[offset, offset)`` of its own (one per distinct offset), placed in order between the
      non-empty groups. Its slice ``data[off:off]`` is then always in range.
    """
    cdef zk_req *reqs
    cdef zk_req *tmp
    cdef Py_ssize_t i, j, g = -1, cur = -1, p0 = 0, p1 = 0
    cdef uint64_t o, ln, stop, gs = 0, ge = 0, new_stop
    cdef bint have_group = False
    if n == 0:
        return 0
    reqs = <zk_req *> malloc(<size_t>n * sizeof(zk_req))
    if reqs == NULL:
        return ZK_ENOMEM
    for i in range(n):
        o = offsets[i]
        ln = lengths[i]
        if offsets_signed and (o & SIGN_BIT):
            free(reqs)
            return ZK_ENEGATIVE_OFFSET
        if lengths_signed and (ln & SIGN_BIT):
            free(reqs)
            return ZK_ENEGATIVE_LENGTH
        if ln > U64_MAX - o:
            free(reqs)
            return ZK_EOVERFLOW
        reqs[i].off = o
        reqs[i].stop = o + ln
        reqs[i].idx = i
    if not _sorted_by_off(reqs, n):
        tmp = <zk_req *> malloc(<size_t>n * sizeof(zk_req))
        if tmp == NULL:
            free(reqs)
            return ZK_ENOMEM
        # radix sort for many ranges (a few linear passes), merge sort for few
        if n >= 512:
            _radix_sort(reqs, tmp, n)
        else:
            _merge_sort(reqs, tmp, n)
        free(tmp)

    # Zero-length requests met past the current group's stop wait (sorted positions p0..p1,
    # contiguous) until the next non-empty request shows whether a group will contain them.
    i = 0
    while i < n:
        o = reqs[i].off
        stop = reqs[i].stop
        if stop == o:
            if have_group and o <= ge:
                req_group[reqs[i].idx] = cur
                req_offset[reqs[i].idx] = o - gs
            else:
                if p1 == p0:
                    p0 = i
                p1 = i + 1
            i += 1
            continue
        if have_group:
            new_stop = stop if stop > ge else ge
            # o <= ge + max_gap, written without overflow
            if stop <= ge or ((o <= ge or o - ge <= max_gap) and new_stop - gs <= max_size):
                ge = new_stop
                groups[2 * cur + 1] = ge
                for j in range(p0, p1):
                    req_group[reqs[j].idx] = cur
                    req_offset[reqs[j].idx] = reqs[j].off - gs
                p0 = p1 = 0
                req_group[reqs[i].idx] = cur
                req_offset[reqs[i].idx] = o - gs
                i += 1
                continue
        # a new group opens at o: pending zero-length requests before o get empty groups
        j = _flush_empty(reqs, p0, p1, o, True, groups, req_group, req_offset, &g)
        g += 1
        cur = g
        gs = o
        ge = stop
        groups[2 * g] = gs
        groups[2 * g + 1] = ge
        have_group = True
        while j < p1:  # pending ones exactly at o
            req_group[reqs[j].idx] = cur
            req_offset[reqs[j].idx] = 0
            j += 1
        p0 = p1 = 0
        req_group[reqs[i].idx] = cur
        req_offset[reqs[i].idx] = 0
        i += 1
    _flush_empty(reqs, p0, p1, 0, False, groups, req_group, req_offset, &g)
    free(reqs)
    return g + 1


cdef inline Py_ssize_t _flush_empty(
    const zk_req *reqs, Py_ssize_t p0, Py_ssize_t p1,  # IN  pending zero-length requests
    uint64_t before, bint bounded,                      # IN  stop at offset `before` if bounded
    uint64_t *groups, Py_ssize_t *req_group, uint64_t *req_offset,  # OUT
    Py_ssize_t *g,                                      # IN/OUT index of the last group
) noexcept nogil:
    """Give pending zero-length requests empty groups, one per distinct offset; return the
    position of the first one left (at offset ``before``)."""
    cdef Py_ssize_t j
    for j in range(p0, p1):
        if bounded and reqs[j].off >= before:
            return j
        if j == p0 or reqs[j].off != reqs[j - 1].off:
            g[0] += 1
            groups[2 * g[0]] = reqs[j].off
            groups[2 * g[0] + 1] = reqs[j].off
        req_group[reqs[j].idx] = g[0]
        req_offset[reqs[j].idx] = 0
    return p1


cdef object _as_u64(object x, str name):
    """Return ``(contiguous uint64-or-int64 1-d array, is_signed)`` for an integer sequence."""
    cdef cnp.ndarray a
    if cnp.PyArray_Check(x):
        a = <cnp.ndarray> x
    else:
        a = np.asarray(x)
        if a.dtype.kind not in "iu" and a.size:
            # a list mixing negative and > int64 ints comes back float64: look at each item
            a = np.empty(len(x), dtype=object)
            a[:] = list(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {(<object> a).shape}")
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_INT64 or t == cnp.NPY_UINT64:
        # native byte order: PyArray_TYPE is the type number, so check the descriptor too
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
    elif a.dtype.kind == "i":
        a = a.astype(np.int64)
        t = cnp.NPY_INT64
    elif a.dtype.kind == "u":
        a = a.astype(np.uint64)
        t = cnp.NPY_UINT64
    elif a.shape[0] == 0:
        # np.asarray([]) is float64: an empty list is fine
        a = np.empty(0, np.uint64)
        t = cnp.NPY_UINT64
    elif a.dtype.kind == "O":
        # Python ints beyond int64/uint64 range (or mixed): check each one here
        for v in a:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must hold integers, got {type(v).__name__}")
            v = int(v)
            if v < 0:
                raise ValueError(f"{name} must be non-negative, got {v}")
            if v > 0xFFFFFFFFFFFFFFFF:
                raise ValueError(f"{name} value {v} does not fit in uint64")
        a = a.astype(np.uint64)
        t = cnp.NPY_UINT64
    else:
        raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        a = np.ascontiguousarray(a)
    return a, t == cnp.NPY_INT64


cdef uint64_t _as_limit(object v, str name, uint64_t minimum) except? 0:
    v = operator.index(v)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > 0xFFFFFFFFFFFFFFFF:
        return U64_MAX
    return <uint64_t> v


def coalesce_ranges(offsets, lengths, *, max_gap_bytes, max_coalesced_bytes):
    """Plan few reads for many byte ranges ``[offset, offset + length)``.

    Parameters
    ----------
    offsets, lengths : sequence of int or 1-d integer array
        One byte range per request; any order, duplicates and overlaps allowed.
    max_gap_bytes : int
        Largest number of unrequested bytes read between two requests merged into one read
        (>= 0).
    max_coalesced_bytes : int
        Largest read planned (>= 1), except that a request longer than this on its own gets a
        read of its own.

    Returns
    -------
    CoalescedRanges
        ``groups`` (uint64, ``(G, 2)``, ``[start, stop)`` sorted by start), ``request_group``
        (intp, ``(N,)``) and ``request_offset`` (uint64, ``(N,)``, relative to the group start).

    Notes
    -----
    Requests are taken in stable order of their offset. A request joins the current group when
    its start is at most ``max_gap_bytes`` past the group's stop and the group then stays within
    ``max_coalesced_bytes``, or when it lies wholly inside the group (a duplicate of an
    oversized request joins it). Otherwise it opens a new group. Groups are sorted by start;
    they do not overlap when the requests do not (a request partly overlapping a full group
    opens a new, overlapping group rather than break the size bound).

    A zero-length request never widens a read: it joins the group whose ``[start, stop]``
    contains its offset (stop included), else it gets an empty group ``[offset, offset)``,
    one per distinct offset, so ``data[off:off + 0]`` is always in range. Empty groups need no
    read.

    Raises
    ------
    ValueError
        Lengths of ``offsets`` and ``lengths`` differ, a value is negative, an
        ``offset + length`` overflows uint64, ``max_gap_bytes < 0`` or
        ``max_coalesced_bytes < 1``.
    TypeError
        Non-integer input.
    """
    cdef uint64_t max_gap = _as_limit(max_gap_bytes, "max_gap_bytes", 0)
    cdef uint64_t max_size = _as_limit(max_coalesced_bytes, "max_coalesced_bytes", 1)
    off, off_signed = _as_u64(offsets, "offsets")
    ln, ln_signed = _as_u64(lengths, "lengths")
    cdef cnp.ndarray a_off = <cnp.ndarray> off
    cdef cnp.ndarray a_len = <cnp.ndarray> ln
    cdef Py_ssize_t n = cnp.PyArray_DIM(a_off, 0)
    if cnp.PyArray_DIM(a_len, 0) != n:
        raise ValueError(
            f"offsets and lengths differ in length: {n} != {cnp.PyArray_DIM(a_len, 0)}")
    cdef cnp.npy_intp dims[2]
    dims[0] = n
    dims[1] = 2
    cdef cnp.ndarray groups = cnp.PyArray_EMPTY(2, dims, cnp.NPY_UINT64, 0)
    cdef cnp.ndarray req_group = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INTP, 0)
    cdef cnp.ndarray req_offset = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT64, 0)
    cdef const uint64_t *p_off = <const uint64_t *> cnp.PyArray_DATA(a_off)
    cdef const uint64_t *p_len = <const uint64_t *> cnp.PyArray_DATA(a_len)
    cdef uint64_t *p_groups = <uint64_t *> cnp.PyArray_DATA(groups)
    cdef Py_ssize_t *p_rg = <Py_ssize_t *> cnp.PyArray_DATA(req_group)
    cdef uint64_t *p_ro = <uint64_t *> cnp.PyArray_DATA(req_offset)
    cdef bint s_off = off_signed, s_len = ln_signed
    cdef Py_ssize_t g
    with nogil:
        g = coalesce_ranges_c(p_off, p_len, n, s_off, s_len, max_gap, max_size,
                              p_groups, p_rg, p_ro)
    if g < 0:
        if g == ZK_ENOMEM:
            raise MemoryError()
        if g == ZK_ENEGATIVE_OFFSET:
            raise ValueError("offsets must be non-negative")
        if g == ZK_ENEGATIVE_LENGTH:
            raise ValueError("lengths must be non-negative")
        raise ValueError("offset + length overflows uint64")
    if g != n:
        groups = groups[:g]
    return CoalescedRanges(groups, req_group, req_offset)
