# Declarations shared by the kernel modules: the C endian helpers in src/zk_endian.h.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "zk_endian.h" nogil:
    const int ZK_NATIVE_LITTLE
    uint16_t zk_bswap16(uint16_t x)
    uint32_t zk_bswap32(uint32_t x)
    uint64_t zk_bswap64(uint64_t x)
    uint32_t zk_load_le32(const uint8_t *p)
    void zk_store_le32(uint8_t *p, uint32_t v)
    uint64_t zk_load_u64(const uint8_t *p, int little)
    void zk_store_u64(uint8_t *p, uint64_t v, int little)


# One Python-level check shared by the kernels that take a table of (offset, nbytes) pairs.
cimport numpy as cnp


cdef inline object as_entry_table(object arr, str name, object error):
    """`arr` as a C-contiguous native uint64 array of shape (*chunks_per_shard, 2) (a parsed shard
    index, or the decode kernel's chunk locations); otherwise raise `error` naming `name`."""
    if not isinstance(arr, cnp.ndarray) or arr.ndim < 1 or arr.shape[arr.ndim - 1] != 2 \
            or arr.dtype != cnp.PyArray_DescrFromType(cnp.NPY_UINT64):
        raise error(
            f"{name} must be a uint64 array of shape (*chunks_per_shard, 2), got "
            f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
        )
    return cnp.PyArray_GETCONTIGUOUS(arr)
