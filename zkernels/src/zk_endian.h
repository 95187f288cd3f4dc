/* Endian helpers shared by the zkernels C/Cython kernels. */
#ifndef ZK_ENDIAN_H
#define ZK_ENDIAN_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ZK_NATIVE_LITTLE 0
#else
#define ZK_NATIVE_LITTLE 1
#endif

static inline uint16_t zk_bswap16(uint16_t x) { return __builtin_bswap16(x); }
static inline uint32_t zk_bswap32(uint32_t x) { return __builtin_bswap32(x); }
static inline uint64_t zk_bswap64(uint64_t x) { return __builtin_bswap64(x); }

/* Unaligned loads/stores in a given byte order (memcpy compiles to a single move). */
static inline uint32_t zk_load_le32(const uint8_t *p) {
    uint32_t v; memcpy(&v, p, 4);
    return ZK_NATIVE_LITTLE ? v : zk_bswap32(v);
}
static inline void zk_store_le32(uint8_t *p, uint32_t v) {
    if (!ZK_NATIVE_LITTLE) v = zk_bswap32(v);
    memcpy(p, &v, 4);
}
static inline uint64_t zk_load_u64(const uint8_t *p, int little) {
    uint64_t v; memcpy(&v, p, 8);
    return (little == ZK_NATIVE_LITTLE) ? v : zk_bswap64(v);
}
static inline void zk_store_u64(uint8_t *p, uint64_t v, int little) {
    if (little != ZK_NATIVE_LITTLE) v = zk_bswap64(v);
    memcpy(p, &v, 8);
}

#endif
