# cython: language_level=3
"""Plan few reads for many byte ranges (range coalescing for sharded reads).

A sharded read turns into one byte range per inner chunk. Issuing them one by one costs a round
trip each; ``coalesce_ranges`` groups nearby ranges into few larger reads, bounded by
``max_gap_bytes`` (bytes read for nothing between two ranges) and ``max_coalesced_bytes`` (the
largest read it will plan, except for a single range that is larger on its own).

``plan_chunk_reads`` makes the whole plan for the inner chunks of a shard that a read touches
(a box on the chunk grid, or a list): it looks each chunk up in the parsed shard index, skips the
empty ones, coalesces the rest and returns the tables the chunk decode kernel takes, in one call
(a small read would otherwise spend more time in a dozen numpy calls than in its decode).

Layering (house style): ``coalesce_ranges_c`` and ``plan_chunk_reads_c`` are the nogil cores over
caller-owned buffers and return a status code; the ``def`` wrappers validate, release the GIL and
raise.
"""

import operator
from typing import NamedTuple

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from zkernels._common cimport as_entry_table

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
    ZK_EHALF_EMPTY = -5

cdef enum:
    MAXDIM = 32


class ChunkReadPlan(NamedTuple):
    """The reads planned by :func:`plan_chunk_reads` for some inner chunks of one shard.

    Attributes
    ----------
    ranges : numpy.ndarray
        uint64, shape ``(G, 2)``: the ``[start, stop)`` shard bytes of each read, sorted by start.
    locs : numpy.ndarray
        uint64, shape ``(*chunks_per_shard, 2)``: (offset in its read, nbytes) of each planned
        chunk; ``(2**64-1, 2**64-1)`` for every other chunk (empty, zero-length or not asked).
    groups : numpy.ndarray
        int32, shape ``chunks_per_shard``: the read (row of ``ranges``) holding each planned
        chunk; -1 for every other chunk.

    ``locs`` and ``groups`` are the tables :func:`zkernels._decode.decode_chunks` takes, with the
    reads' bytes as its sources.
    """

    ranges: np.ndarray
    locs: np.ndarray
    groups: np.ndarray


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


# ------------------------------------------------------------------------------------------------
# plan the reads of a shard's inner chunks


cdef Py_ssize_t plan_chunk_reads_c(
    const uint64_t *index,            # IN  (n_chunks, 2) parsed shard index, C order
    const Py_ssize_t *cps,            # IN  (ndim,) chunks per shard
    int ndim,                         # IN
    const Py_ssize_t *lo,             # IN  box mode: first chunk coordinate per axis
    const Py_ssize_t *hi,             # IN  box mode: one past the last (lo[k] < hi[k])
    const int64_t *chunk_list,        # IN  list mode: linear chunk numbers; NULL: box mode
    Py_ssize_t n_touched,             # IN  chunks in the box, or in chunk_list
    uint64_t max_gap,                 # IN  see coalesce_ranges_c
    uint64_t max_size,                # IN
    uint64_t *locs,                   # OUT (n_chunks, 2), preset to 2**64-1 by the caller
    int32_t *groups,                  # OUT (n_chunks,), preset to -1 by the caller
    uint64_t *ranges,                 # OUT (n_touched, 2): the first G rows are used
) noexcept nogil:
    """Return the number of reads G >= 0, or a negative status (ZK_ENOMEM, ZK_EHALF_EMPTY,
    ZK_EOVERFLOW: an index that was not parsed by the shard index kernel)."""
    cdef Py_ssize_t c[MAXDIM]
    cdef Py_ssize_t i, lin, n_want = 0, g, k
    cdef uint64_t off, nb
    cdef uint64_t *offs
    cdef uint64_t *lens
    cdef Py_ssize_t *lins
    cdef Py_ssize_t *req_group
    cdef uint64_t *req_offset
    if n_touched == 0:
        return 0
    # one allocation: offsets, lengths, chunk numbers, then the coalescer's outputs
    offs = <uint64_t *>malloc(<size_t>n_touched * (3 * sizeof(uint64_t) + 2 * sizeof(Py_ssize_t)))
    if offs == NULL:
        return ZK_ENOMEM
    lens = offs + n_touched
    req_offset = lens + n_touched
    lins = <Py_ssize_t *>(req_offset + n_touched)
    req_group = lins + n_touched
    for k in range(ndim):
        c[k] = lo[k] if chunk_list == NULL else 0
    for i in range(n_touched):
        if chunk_list != NULL:
            lin = <Py_ssize_t>chunk_list[i]
        else:
            lin = 0
            for k in range(ndim):
                lin = lin * cps[k] + c[k]
            k = ndim - 1  # next chunk of the box, C order
            while k >= 0:
                c[k] += 1
                if c[k] < hi[k]:
                    break
                c[k] = lo[k]
                k -= 1
        off = index[2 * lin]
        nb = index[2 * lin + 1]
        if off == U64_MAX and nb == U64_MAX:
            continue
        if off == U64_MAX or nb == U64_MAX:
            free(offs)
            return ZK_EHALF_EMPTY
        if nb > U64_MAX - off:
            free(offs)
            return ZK_EOVERFLOW
        if nb == 0:  # a zero-length chunk reads as the fill value, as an empty one
            continue
        offs[n_want] = off
        lens[n_want] = nb
        lins[n_want] = lin
        n_want += 1
    g = coalesce_ranges_c(offs, lens, n_want, False, False, max_gap, max_size, ranges,
                          req_group, req_offset)
    if g >= 0:
        for i in range(n_want):
            lin = lins[i]
            locs[2 * lin] = req_offset[i]
            locs[2 * lin + 1] = lens[i]
            groups[lin] = <int32_t>req_group[i]
    free(offs)
    return g


def plan_chunk_reads(index, *, box=None, chunks=None, max_gap_bytes, max_coalesced_bytes):
    """Plan the reads of some inner chunks of one shard: look each up in the shard index, skip
    the empty ones and coalesce the rest (the rules of :func:`coalesce_ranges`).

    Parameters
    ----------
    index : numpy.ndarray
        uint64, shape ``(*chunks_per_shard, 2)``: the shard's index as parsed by
        :func:`zkernels._shard_index.parse_shard_index` ((offset, nbytes) per inner chunk,
        ``2**64-1`` twice for an empty one).
    box : (sequence of int, sequence of int), optional
        ``(lo, hi)``: the chunks with coordinates ``lo[k] <= c[k] < hi[k]`` on every axis.
    chunks : 1-d integer array, optional
        The chunks' linear (C-order) numbers. Exactly one of `box` and `chunks` is given.
    max_gap_bytes, max_coalesced_bytes : int
        As for :func:`coalesce_ranges`.

    Returns
    -------
    ChunkReadPlan
        ``ranges`` (the reads), ``locs`` and ``groups`` (where each planned chunk lies in them).
        A chunk of zero bytes is not planned: it reads as the fill value, as an empty one.

    Raises
    ------
    ValueError
        A bad shape, a box or chunk number outside the grid, or an index entry that is half
        empty or overflows (an index not checked by the shard index kernel).
    """
    cdef uint64_t max_gap = _as_limit(max_gap_bytes, "max_gap_bytes", 0)
    cdef uint64_t max_size = _as_limit(max_coalesced_bytes, "max_coalesced_bytes", 1)
    cdef Py_ssize_t cps_c[MAXDIM]
    cdef Py_ssize_t lo_c[MAXDIM]
    cdef Py_ssize_t hi_c[MAXDIM]
    cdef Py_ssize_t n_touched = 1, n_chunks = 1, k, g
    cdef int ndim
    cdef const int64_t *p_list = NULL
    index = as_entry_table(index, "index", ValueError)
    cps = index.shape[:index.ndim - 1]
    ndim = len(cps)
    if ndim > MAXDIM:
        raise ValueError(f"at most {MAXDIM} dimensions, got {ndim}")
    for k in range(ndim):
        cps_c[k] = cps[k]
        n_chunks *= cps[k]
    if (box is None) == (chunks is None):
        raise ValueError("give exactly one of box and chunks")
    if box is not None:
        lo, hi = box
        lo = tuple(operator.index(v) for v in lo)
        hi = tuple(operator.index(v) for v in hi)
        if len(lo) != ndim or len(hi) != ndim:
            raise ValueError(f"box {box!r} does not have {ndim} dimensions")
        for k in range(ndim):
            if not 0 <= lo[k] <= hi[k] <= cps[k]:
                raise ValueError(f"box {box!r} outside the chunk grid {tuple(cps)}")
            lo_c[k] = lo[k]
            hi_c[k] = hi[k]
            n_touched *= hi[k] - lo[k]
    else:
        chunks = np.ascontiguousarray(chunks, dtype=np.int64)
        if chunks.ndim != 1:
            raise ValueError(f"chunks must be one-dimensional, got shape {chunks.shape}")
        n_touched = chunks.shape[0]
        if n_touched and (chunks.min() < 0 or chunks.max() >= n_chunks):
            raise ValueError(f"chunk numbers must lie in [0, {n_chunks})")
        p_list = <const int64_t *>cnp.PyArray_DATA(chunks)
    cdef cnp.npy_intp dims[2]
    dims[0] = n_touched
    dims[1] = 2
    cdef cnp.ndarray ranges = cnp.PyArray_EMPTY(2, dims, cnp.NPY_UINT64, 0)
    locs = np.empty(index.shape, dtype=np.uint64)
    groups = np.empty(cps, dtype=np.int32)
    cdef uint64_t *p_locs = <uint64_t *>cnp.PyArray_DATA(locs)
    cdef int32_t *p_groups = <int32_t *>cnp.PyArray_DATA(groups)
    cdef const uint64_t *p_index = <const uint64_t *>cnp.PyArray_DATA(index)
    cdef uint64_t *p_ranges = <uint64_t *>cnp.PyArray_DATA(ranges)
    with nogil:
        memset(p_locs, 0xFF, <size_t>n_chunks * 2 * sizeof(uint64_t))
        memset(p_groups, 0xFF, <size_t>n_chunks * sizeof(int32_t))  # every int32 -1
        g = plan_chunk_reads_c(p_index, cps_c, ndim, lo_c, hi_c, p_list, n_touched, max_gap,
                               max_size, p_locs, p_groups, p_ranges)
    if g < 0:
        if g == ZK_ENOMEM:
            raise MemoryError()
        if g == ZK_EHALF_EMPTY:
            raise ValueError("the shard index has a half-empty entry (not a parsed index?)")
        raise ValueError("a shard index entry's offset + nbytes overflows (not a parsed index?)")
    if g != n_touched:
        ranges = ranges[:g]
    return ChunkReadPlan(ranges, locs, groups)
