# Shared by the dense reconstruction (`_dense.pyx`) and the chunk decode kernel (`_decode.pyx`):
# the description of an output box over a shard's inner-chunk grid, and the nogil routine that
# copies (or fills) one chunk's part of it.

from libc.stdint cimport uint8_t, uint64_t

cdef enum:
    # numpy's NPY_MAXDIMS (64 since numpy 2): fixed-size per-dimension arrays keep the core
    # malloc-free.
    MAXDIM = 64
    # Length in bytes of the fill pattern handed to the core (rounded down to whole elements).
    FILL_ROW_BYTES = 4096


cdef struct DenseArgs:
    int ndim
    Py_ssize_t itemsize
    int swap_unit                      # 0: plain copy; 2/4/8: reverse every unit of that size
    const uint8_t *shard
    uint64_t shard_nbytes
    const uint64_t *index              # native (offset, nbytes) pairs, C order over the chunks
    uint64_t chunk_nbytes              # prod(chunk_shape) * itemsize
    uint8_t *out                       # address of out[0, ..., 0]
    const uint8_t *fill                # FILL_ROW_BYTES // itemsize * itemsize bytes of pattern
    Py_ssize_t fill_nbytes
    bint fill_zero                     # the fill value is all zero bytes: memset
    bint nontemporal                   # contiguous runs use streaming stores (large outputs)
    Py_ssize_t out_shape[MAXDIM]
    Py_ssize_t out_strides[MAXDIM]     # bytes, any sign
    Py_ssize_t chunk_shape[MAXDIM]
    Py_ssize_t chunk_strides[MAXDIM]   # bytes, C order inside a stored chunk
    Py_ssize_t chunks_per_shard[MAXDIM]
    Py_ssize_t region_start[MAXDIM]


# Copy chunk `c`'s intersection with the box from `chunk` (its decoded bytes, a C-order array of
# `chunk_shape`, in stored byte order), or write the fill value there when `chunk` is NULL.
cdef void copy_chunk_from(const DenseArgs *a, const Py_ssize_t *c, const uint8_t *chunk) noexcept nogil

# Make streaming (non-temporal) stores visible to other threads: call once after a run of copies
# with `a.nontemporal` set, before the output is handed back.
cdef void fence_streaming_stores() noexcept nogil

# Fill `a` from the Python-level arguments shared by the wrappers (validated; raises ValueError or
# TypeError). Returns the fill pattern object, which must stay alive while `a` is used.
cdef object init_box_args(DenseArgs *a, object out, tuple chunk_shape, tuple region_start,
                          tuple cps, object fill_value, object swap_unit, object streaming)

# Copy a box of `extent` elements from `src` to `dst` (strides in bytes, any sign), swapping
# bytes per `a.swap_unit`; `src` NULL writes the fill value.
cdef void copy_box(uint8_t *dst, const Py_ssize_t *dst_st, const uint8_t *src,
                   const Py_ssize_t *src_st, const Py_ssize_t *extent, int ndim,
                   const DenseArgs *a) noexcept nogil
