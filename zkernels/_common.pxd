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
