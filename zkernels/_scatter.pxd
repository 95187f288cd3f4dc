# What other kernels use of _scatter: the "every element equals the fill value" test that zarr's
# write_empty_chunks=False applies (the encode kernel runs it on each chunk without the GIL).

from libc.stdint cimport uint64_t

cimport numpy as cnp


ctypedef struct zk_fillspec:
    int mode
    Py_ssize_t itemsize
    int pw              # MASKED/NAN: width of a float part (2, 4, 8); bytes mode: unused
    int nparts          # MASKED/NAN: 1 (real) or 2 (complex)
    bint swap           # NAN: parts are stored byte-swapped
    uint64_t fbits[2]   # MASKED: fill part bits, as stored
    uint64_t mask[2]    # MASKED: compared bits, as stored
    const char *pat     # BYTES: the fill's itemsize bytes


cdef int is_fill_c(const char *data, int nd, Py_ssize_t *shape, Py_ssize_t *strides,
                   const zk_fillspec *spec) noexcept nogil

# Fill `spec` to compare arrays of `b`'s dtype with `fill_value` as zarr does. Returns the object
# `spec.pat` points into (keep it alive while `spec` is used), False when nothing equals the fill
# (fill_value None), or None when the kernel cannot decide (zarr's numpy expression must).
cdef object make_fill_spec(zk_fillspec *spec, cnp.ndarray b, object fill_value)
