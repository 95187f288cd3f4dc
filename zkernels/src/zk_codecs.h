/* Compression libraries reached through function pointers, for the nogil chunk decode and
 * encode kernels.
 *
 * zkernels links neither libzstd nor c-blosc: numcodecs already ships both, compiled into its
 * extension modules with their C symbols exported. At import, zkernels/_decode.pyx and
 * zkernels/_encode.pyx look the functions up with ctypes (numcodecs' own copies first, so that
 * the very library zarr's codecs run does the work; for decoding only, a system libzstd as a
 * second choice) and store their addresses here with zk_codecs_set(); each module has its own
 * copy of the table. A function left NULL means "not available": the pipeline then decodes or
 * encodes those chunks in Python, through numcodecs, as before.
 *
 * The prototypes are those of zstd's stable API (zstd.h, v1.4+) and of c-blosc 1.x (blosc.h);
 * both have kept them unchanged for years.
 */
#ifndef ZK_CODECS_H
#define ZK_CODECS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#endif

typedef struct {
    /* zstd */
    void *(*zstd_createDCtx)(void);
    size_t (*zstd_freeDCtx)(void *dctx);
    size_t (*zstd_decompressDCtx)(void *dctx, void *dst, size_t dst_cap, const void *src,
                                  size_t src_size);
    unsigned long long (*zstd_getFrameContentSize)(const void *src, size_t src_size);
    unsigned (*zstd_isError)(size_t code);
    const char *(*zstd_getErrorName)(size_t code);
    unsigned (*zstd_versionNumber)(void);
    void *(*zstd_createCCtx)(void);
    size_t (*zstd_freeCCtx)(void *cctx);
    size_t (*zstd_CCtx_reset)(void *cctx, int reset);
    size_t (*zstd_CCtx_setParameter)(void *cctx, int param, int value);
    size_t (*zstd_compress2)(void *cctx, void *dst, size_t dst_cap, const void *src,
                             size_t src_size);
    size_t (*zstd_compressBound)(size_t src_size);
    /* c-blosc 1.x */
    int (*blosc_decompress_ctx)(const void *src, void *dest, size_t destsize, int nthreads);
    void (*blosc_cbuffer_sizes)(const void *cbuffer, size_t *nbytes, size_t *cbytes,
                                size_t *blocksize);
    int (*blosc_compress_ctx)(int clevel, int doshuffle, size_t typesize, size_t nbytes,
                              const void *src, void *dest, size_t destsize,
                              const char *compressor, size_t blocksize, int numinternalthreads);
    /* the LZ4 inside c-blosc, for the frames zk_blosc.h decodes itself (optional) */
    int (*lz4_decompress_safe)(const char *src, char *dst, int compressed_size,
                               int dst_capacity);
} zk_codec_api;

static zk_codec_api zk_api;

/* Store one function address by its C name; 0 when the name is unknown. */
static int zk_codecs_set(const char *name, uintptr_t addr) {
#define ZK_SET(field, sym)                                   \
    if (strcmp(name, sym) == 0) {                            \
        memcpy(&zk_api.field, &addr, sizeof(zk_api.field)); \
        return 1;                                            \
    }
    ZK_SET(zstd_createDCtx, "ZSTD_createDCtx")
    ZK_SET(zstd_freeDCtx, "ZSTD_freeDCtx")
    ZK_SET(zstd_decompressDCtx, "ZSTD_decompressDCtx")
    ZK_SET(zstd_getFrameContentSize, "ZSTD_getFrameContentSize")
    ZK_SET(zstd_isError, "ZSTD_isError")
    ZK_SET(zstd_getErrorName, "ZSTD_getErrorName")
    ZK_SET(zstd_versionNumber, "ZSTD_versionNumber")
    ZK_SET(zstd_createCCtx, "ZSTD_createCCtx")
    ZK_SET(zstd_freeCCtx, "ZSTD_freeCCtx")
    ZK_SET(zstd_CCtx_reset, "ZSTD_CCtx_reset")
    ZK_SET(zstd_CCtx_setParameter, "ZSTD_CCtx_setParameter")
    ZK_SET(zstd_compress2, "ZSTD_compress2")
    ZK_SET(zstd_compressBound, "ZSTD_compressBound")
    ZK_SET(blosc_decompress_ctx, "blosc_decompress_ctx")
    ZK_SET(blosc_cbuffer_sizes, "blosc_cbuffer_sizes")
    ZK_SET(blosc_compress_ctx, "blosc_compress_ctx")
    ZK_SET(lz4_decompress_safe, "LZ4_decompress_safe")
#undef ZK_SET
    return 0;
}

static int zk_zstd_ready(void) {
    return zk_api.zstd_createDCtx && zk_api.zstd_freeDCtx && zk_api.zstd_decompressDCtx &&
           zk_api.zstd_getFrameContentSize && zk_api.zstd_isError && zk_api.zstd_getErrorName;
}

static int zk_zstd_encode_ready(void) {
    return zk_api.zstd_createCCtx && zk_api.zstd_freeCCtx && zk_api.zstd_CCtx_reset &&
           zk_api.zstd_CCtx_setParameter && zk_api.zstd_compress2 && zk_api.zstd_compressBound &&
           zk_api.zstd_isError && zk_api.zstd_getErrorName;
}

static int zk_blosc_ready(void) {
    return zk_api.blosc_decompress_ctx && zk_api.blosc_cbuffer_sizes;
}

static int zk_blosc_encode_ready(void) { return zk_api.blosc_compress_ctx != NULL; }

/* One zstd context of each kind per thread, made on first use and freed when the thread ends
 * (numcodecs makes and frees one per chunk: about 10 us, half the decode of an 8 KiB chunk).
 * ZSTD_decompressDCtx starts every frame afresh, so a context left by a failed decode is fine;
 * compression contexts are reset (session and parameters) by their user before each batch. */
#ifndef _WIN32
static pthread_key_t zk_ctx_key[2];
static pthread_once_t zk_ctx_once = PTHREAD_ONCE_INIT;
static int zk_ctx_key_ok = 0;

static void zk_dctx_destroy(void *ctx) {
    if (ctx != NULL && zk_api.zstd_freeDCtx != NULL) zk_api.zstd_freeDCtx(ctx);
}

static void zk_cctx_destroy(void *ctx) {
    if (ctx != NULL && zk_api.zstd_freeCCtx != NULL) zk_api.zstd_freeCCtx(ctx);
}

static void zk_ctx_key_init(void) {
    zk_ctx_key_ok = pthread_key_create(&zk_ctx_key[0], zk_dctx_destroy) == 0 &&
                    pthread_key_create(&zk_ctx_key[1], zk_cctx_destroy) == 0;
}
#endif

/* This thread's context (which = 0: decompression, 1: compression); *owned = 1 when the caller
 * must free it itself (no thread-local slot). */
static void *zk_zstd_ctx(int which, int *owned) {
    void *ctx;
#ifndef _WIN32
    pthread_once(&zk_ctx_once, zk_ctx_key_init);
    if (zk_ctx_key_ok) {
        ctx = pthread_getspecific(zk_ctx_key[which]);
        if (ctx == NULL) {
            ctx = which ? zk_api.zstd_createCCtx() : zk_api.zstd_createDCtx();
            if (ctx != NULL && pthread_setspecific(zk_ctx_key[which], ctx) != 0) {
                *owned = 1;
                return ctx;
            }
        }
        *owned = 0;
        return ctx;
    }
#endif
    *owned = 1;
    return which ? zk_api.zstd_createCCtx() : zk_api.zstd_createDCtx();
}

static void *zk_zstd_dctx(int *owned) { return zk_zstd_ctx(0, owned); }
static void *zk_zstd_cctx(int *owned) { return zk_zstd_ctx(1, owned); }

#endif /* ZK_CODECS_H */
