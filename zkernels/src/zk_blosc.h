/* zk_blosc.h: blosc1 frames compressed with LZ4, decoded without c-blosc's per-call allocation.
 *
 * blosc_decompress_ctx (c-blosc 1.x, numcodecs' copy) allocates a block-sized temporary with
 * posix_memalign on every call. In a pool thread's malloc arena that costs about 0.4 us of the
 * 1.5 us an 8 KiB lz4 chunk takes to decode (measured: the same 1,024 chunks decode in 1.5 ms
 * on the main thread, 2.0 ms on another). This decoder walks the frame as c-blosc's
 * blosc_run_decompression_with_context / serial_blosc / blosc_d do, calls the same
 * LZ4_decompress_safe (found in numcodecs' c-blosc), and unshuffles into a scratch the caller
 * owns, so the result is byte for byte c-blosc's.
 *
 * It takes only the common frames: format version 2, the LZ4 format (cname "lz4" and "lz4hc"),
 * byte shuffle or none, not memcpyed. Anything else, and any frame that fails a check, returns
 * ZK_BLOSC_OTHER: the caller then hands the frame to blosc_decompress_ctx, which decodes it or
 * reports the error in its own terms.
 */
#ifndef ZK_BLOSC_H
#define ZK_BLOSC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ZK_BLOSC_OTHER (-1000)

typedef int (*zk_lz4_decompress_safe_t)(const char *src, char *dst, int compressed_size,
                                         int dst_capacity);

static inline int32_t zk_blosc_le32(const uint8_t *p) {
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24));
}

/* c-blosc's unshuffle: element i's byte j comes from stream j; the blocksize % typesize
 * trailing bytes are copied as they are. The common type sizes get constant strides so the
 * compiler can vectorize the interleave. */
#define ZK_UNSHUFFLE_N(T)                                                   \
    for (i = 0; i < n; i++) {                                               \
        for (j = 0; j < (T); j++) dst[i * (T) + j] = src[j * n + i];        \
    }

static void zk_blosc_unshuffle(size_t typesize, size_t blocksize, const uint8_t *src,
                               uint8_t *dst) {
    size_t n = blocksize / typesize, rem = blocksize % typesize, i, j;
    switch (typesize) {
    case 2: ZK_UNSHUFFLE_N(2) break;
    case 4: ZK_UNSHUFFLE_N(4) break;
    case 8: ZK_UNSHUFFLE_N(8) break;
    default: ZK_UNSHUFFLE_N(typesize) break;
    }
    memcpy(dst + (blocksize - rem), src + (blocksize - rem), rem);
}
#undef ZK_UNSHUFFLE_N

/* Decode the blosc1 frame at `src` (its header already read: compressed size within the
 * caller's bytes, at least 16) into `dest` (`destsize` bytes); `tmp` holds `destsize` bytes.
 * Returns the decoded size (the header's nbytes), or ZK_BLOSC_OTHER. */
static int zk_blosc_lz4(zk_lz4_decompress_safe_t lz4, const uint8_t *src, uint8_t *dest,
                        int32_t destsize, uint8_t *tmp) {
    int32_t flags = src[2], typesize = src[3];
    int32_t nbytes = zk_blosc_le32(src + 4), blocksize = zk_blosc_le32(src + 8);
    int32_t csize = zk_blosc_le32(src + 12);
    int32_t nblocks, leftover, j, s, bsize, nsplits, neblock, off, cb, total = 0;
    int doshuffle, dont_split, last_short;
    uint8_t *out, *t;

    if (lz4 == NULL || src[0] != 2 || src[1] != 1 || (flags & 0x0e) != 0 ||
        ((flags & 0xe0) >> 5) != 1)
        return ZK_BLOSC_OTHER;  /* version, codec, memcpyed, bitshuffle, future flags */
    if (nbytes <= 0 || blocksize <= 0 || blocksize > destsize || nbytes > destsize ||
        typesize <= 0 || csize < 16)
        return ZK_BLOSC_OTHER;
    nblocks = nbytes / blocksize;
    leftover = nbytes % blocksize;
    if (leftover > 0) nblocks++;
    if (nblocks > (csize - 16) / 4) return ZK_BLOSC_OTHER;
    doshuffle = (flags & 0x01) && typesize > 1;
    dont_split = (flags & 0x10) >> 4;

    for (j = 0; j < nblocks; j++) {
        last_short = (j == nblocks - 1) && leftover > 0;
        bsize = last_short ? leftover : blocksize;
        out = dest + (size_t)j * (size_t)blocksize;
        t = doshuffle ? tmp : out;
        /* blosc_d: split into typesize streams unless told not to, or the block is short */
        nsplits = (!dont_split && typesize <= 16 && bsize / typesize >= 128 && !last_short)
                      ? typesize : 1;
        neblock = bsize / nsplits;
        off = zk_blosc_le32(src + 16 + 4 * (size_t)j);
        for (s = 0; s < nsplits; s++) {
            if (off < 0 || off > csize - 4) return ZK_BLOSC_OTHER;
            cb = zk_blosc_le32(src + off);
            off += 4;
            if (cb < 0 || cb > csize - off) return ZK_BLOSC_OTHER;
            if (cb == neblock) {
                memcpy(t, src + off, (size_t)neblock);
            } else if (lz4((const char *)(src + off), (char *)t, cb, neblock) != neblock) {
                return ZK_BLOSC_OTHER;
            }
            off += cb;
            t += neblock;
        }
        if (neblock * nsplits != bsize) return ZK_BLOSC_OTHER;  /* c-blosc: a short result */
        if (doshuffle) zk_blosc_unshuffle((size_t)typesize, (size_t)bsize, tmp, out);
        total += bsize;
    }
    return total == nbytes ? total : ZK_BLOSC_OTHER;
}

#endif /* ZK_BLOSC_H */
