# cimport-able declarations of the C crc32c in src/zk_crc32c.h (used by _shard_index and others).
from libc.stdint cimport uint8_t, uint32_t

cdef extern from "zk_crc32c.h" nogil:
    uint32_t zk_crc32c(uint32_t crc, const uint8_t *p, size_t n)
    uint32_t zk_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
    uint32_t zk_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
    int zk_crc32c_hw_available()
    const char *zk_crc32c_impl_name()
