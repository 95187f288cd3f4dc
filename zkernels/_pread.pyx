# cython: language_level=3
"""Read many byte ranges of one open file with the GIL released once (local sharded reads).

A read of part of a local shard fetches its coalesced byte ranges one ``os.pread`` each. The
reads themselves are short (page cache), but each one takes and gives back the GIL around a few
Python steps; with two pool threads reading shards at once they hand the GIL back and forth and
a shard's reads took several times as long as on one thread. ``pread_ranges`` reads them all,
back to back, into one caller-owned buffer, in one call.

Layering (house style): ``pread_ranges_c`` is the nogil core over caller-owned buffers and
returns a status code; the ``def`` wrapper validates, releases the GIL and raises.
"""

import os

import numpy as np

cimport numpy as cnp
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint64_t

cnp.import_array()

cdef extern from *:
    """
    #ifdef _WIN32  /* no pread: the build still works, the call fails (ENOSYS) */
    #include <errno.h>
    static Py_ssize_t zk_pread(int fd, void *buf, size_t n, unsigned long long off) {
        (void)fd; (void)buf; (void)n; (void)off;
        errno = ENOSYS;
        return -1;
    }
    #else
    #include <unistd.h>
    static Py_ssize_t zk_pread(int fd, void *buf, size_t n, unsigned long long off) {
        return pread(fd, buf, n, (off_t)off);
    }
    #endif
    """
    Py_ssize_t zk_pread(int fd, void *buf, size_t n, unsigned long long off) nogil

# pread takes a signed 64-bit offset: a range may not start or end past this
cdef uint64_t MAX_OFFSET = 0x7FFFFFFFFFFFFFFFULL


cdef int64_t pread_ranges_c(int fd, const uint64_t *ranges, Py_ssize_t n, uint8_t *out,
                            Py_ssize_t *stopped) noexcept nogil:
    """Read ``[ranges[2i], ranges[2i+1])`` for i < n back to back into ``out`` (which holds
    their total). Returns the bytes read: the total when every range came back whole; less when
    range ``*stopped`` came back short (the end of the file); ``-errno`` on a system error
    (``*stopped``: the range it happened in). Ranges are checked by the caller."""
    cdef Py_ssize_t i
    cdef uint64_t start, want, got
    cdef int64_t pos = 0
    cdef Py_ssize_t k
    for i in range(n):
        start = ranges[2 * i]
        want = ranges[2 * i + 1] - start
        got = 0
        while got < want:
            k = zk_pread(fd, out + pos + got, want - got, start + got)
            if k < 0:
                if errno == EINTR:
                    continue
                stopped[0] = i
                return -errno
            if k == 0:
                stopped[0] = i
                return pos + <int64_t>got
            got += <uint64_t>k
        pos += <int64_t>want
    stopped[0] = n
    return pos


def pread_ranges(int fd, ranges, uint8_t[::1] out not None):
    """Read byte ranges of the open file ``fd`` back to back into ``out``.

    Parameters
    ----------
    fd : int
        An open file descriptor (read with ``pread``: its position is neither used nor moved).
    ranges : numpy.ndarray
        uint64, shape ``(G, 2)``: ``[start, stop)`` of each range (any order; ``stop >= start``,
        both at most ``2**63 - 1``), e.g. ``ChunkReadPlan.ranges``.
    out : numpy.ndarray
        uint8, C-contiguous, at least the ranges' total length: range ``i`` lands at the sum of
        the lengths before it.

    Returns
    -------
    int
        -1 when every range was read whole; else the index of the first range that came back
        short (the file ends inside it; the ranges before it are in ``out``).

    Raises
    ------
    ValueError
        ``ranges`` is not a uint64 ``(G, 2)`` table, a range is inverted or past ``2**63 - 1``,
        or ``out`` is too small.
    OSError
        The system call failed (e.g. ``EBADF``, ``EISDIR``, ``EIO``).
    """
    if not isinstance(ranges, np.ndarray) or ranges.dtype != np.uint64 or ranges.ndim != 2 \
            or ranges.shape[1] != 2:
        raise ValueError(
            f"ranges must be a uint64 array of shape (G, 2), got "
            f"{getattr(ranges, 'dtype', type(ranges).__name__)} {getattr(ranges, 'shape', '')}"
        )
    cdef cnp.ndarray table = np.ascontiguousarray(ranges)
    cdef const uint64_t[:, ::1] r = table
    cdef Py_ssize_t n = r.shape[0], i, stopped = 0
    cdef uint64_t total = 0, start, stop
    for i in range(n):
        start, stop = r[i, 0], r[i, 1]
        if stop < start or stop > MAX_OFFSET:
            raise ValueError(f"range {i} [{start}, {stop}) is inverted or past 2**63 - 1")
        total += stop - start  # no overflow: each length < 2**63, checked against out below
        if total > <uint64_t>out.shape[0]:
            raise ValueError(f"out holds {out.shape[0]} bytes, the ranges need more")
    cdef int64_t got
    cdef uint8_t *dst = &out[0] if out.shape[0] else NULL
    if n == 0:
        return -1
    with nogil:
        got = pread_ranges_c(fd, &r[0, 0], n, dst, &stopped)
    if got < 0:
        raise OSError(<int>-got, os.strerror(<int>-got))
    return -1 if stopped == n else stopped
