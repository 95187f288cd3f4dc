"""Tests of zkernels._encode: whole inner chunks cut out of a box, fill-tested, compressed with
zstd or blosc, crc32c appended.

Oracles: numcodecs' own Zstd (the object zarr's ZstdCodec encodes with), numcodecs' Blosc run in
a worker thread (as zarr's BloscCodec runs it), zarr's Crc32cCodec and google_crc32c for the
checksum, a numpy twin for the gathered bytes
(``np.ascontiguousarray(value[box]).astype(stored_dtype).tobytes()``), zarr 3.1.6's
``NDBuffer.all_equal`` and ``zkernels.is_fill`` for the fill test, and the decode kernel for the
round trip. ``concat_ranges`` is compared with a numpy concatenation.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
import types

import google_crc32c
import numcodecs
import numcodecs.blosc
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import Buffer, NDBuffer

import zkernels
from zkernels._decode import decode_chunks
from zkernels._encode import (
    blosc_bound,
    can_encode,
    can_test_fill,
    concat_ranges,
    encode_chunks,
    zstd_bound,
)
from zkernels.errors import CorruptChunkError

pytestmark = pytest.mark.skipif(not (can_encode(["zstd"]) and can_encode(["blosc"])),
                                reason="numcodecs' libzstd or c-blosc not found")

EMPTY = np.uint64(2**64 - 1)
LEVELS = (-5, -1, 0, 1, 3, 9, 19, 22)
STEPS = ((), ("crc32c",), ("zstd",), ("zstd", "crc32c"), ("zstd", "crc32c", "crc32c"),
         ("blosc",), ("blosc", "crc32c"))
BLOSC_CNAMES = tuple(numcodecs.blosc.list_compressors())
# encode_chunks' blosc keywords and their defaults (numcodecs' Blosc defaults, typesize 1)
BLOSC_DEFAULTS = dict(blosc_cname="lz4", blosc_clevel=5, blosc_shuffle=1, blosc_typesize=1,
                      blosc_blocksize=0)


# ------------------------------------------------------------------------------------------------
# references


def numcodecs_zstd(level, checksum):
    """The numcodecs object zarr's ZstdCodec encodes with."""
    return zarr.codecs.ZstdCodec(level=level, checksum=checksum)._zstd_codec


_CRC_SPEC = types.SimpleNamespace(prototype=default_buffer_prototype())
_WORKER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="blosc-ref")


def numcodecs_blosc(blosc_cname="lz4", blosc_clevel=5, blosc_shuffle=1, blosc_typesize=1,
                    blosc_blocksize=0):
    """numcodecs' Blosc with encode_chunks' blosc keywords."""
    return numcodecs.Blosc(cname=blosc_cname, clevel=blosc_clevel, shuffle=blosc_shuffle,
                           blocksize=blosc_blocksize, typesize=blosc_typesize)


def off_main(fn, *args):
    """`fn(*args)` in a worker thread: zarr runs blosc there (asyncio.to_thread), where
    numcodecs calls c-blosc's blosc_compress_ctx with one thread."""
    return _WORKER.submit(fn, *args).result()


def blosc_encode(raw: bytes, **params) -> bytes:
    codec = numcodecs_blosc(**params)
    return bytes(off_main(codec.encode, np.frombuffer(raw, np.uint8)))


def zarr_crc32c(data: bytes) -> bytes:
    """zarr's Crc32cCodec encode: the data with its crc32c appended."""
    out = Crc32cCodec()._encode_sync(Buffer.from_bytes(bytes(data)), _CRC_SPEC)
    return out.to_bytes()


def ref_encode(raw: bytes, steps, level=0, checksum=False, blosc=None) -> bytes:
    """One chunk encoded as zarr encodes it: the steps in encode order (`blosc`: encode_chunks'
    blosc keywords)."""
    data = bytes(raw)
    for s in steps:
        if s == "zstd":
            data = bytes(numcodecs_zstd(level, checksum).encode(data))
        elif s == "blosc":
            data = blosc_encode(data, **(blosc or {}))
        else:
            assert s == "crc32c"
            data = data + int(google_crc32c.value(data)).to_bytes(4, "little")
    return data


def ref_decode(stored: bytes, steps, level=0, checksum=False) -> bytes:
    data = bytes(stored)
    for s in reversed(steps):
        if s == "zstd":
            data = bytes(numcodecs_zstd(level, checksum).decode(data))
        elif s == "blosc":
            data = bytes(numcodecs.Blosc().decode(data))
        else:
            assert int(google_crc32c.value(data[:-4])).to_bytes(4, "little") == data[-4:]
            data = data[:-4]
    return data


def chunk_box(lin, chunk_shape, region_start, cps):
    """The slices of chunk `lin` (C-order number) in the box's coordinates."""
    c = np.unravel_index(lin, cps)
    return tuple(slice(int(i) * s - a, (int(i) + 1) * s - a)
                 for i, s, a in zip(c, chunk_shape, region_start))


def twin_raw(value, lin, chunk_shape, region_start, cps, stored_dtype=None) -> bytes:
    """The chunk's bytes as stored: numpy's gather and byte order conversion."""
    block = value[chunk_box(lin, chunk_shape, region_start, cps)]
    dt = block.dtype if stored_dtype is None else np.dtype(stored_dtype)
    return np.ascontiguousarray(block).astype(dt).tobytes()


def split(data, sizes):
    """The encoded chunks (None where skipped), checking that they lie back to back."""
    out, pos = [], 0
    for n in sizes.tolist():
        if n < 0:
            out.append(None)
            continue
        out.append(bytes(data[pos : pos + n]))
        pos += n
    assert pos == data.shape[0], "data is not exactly the kept chunks back to back"
    return out


def inside_chunks(chunk_shape, region_start, box_shape, cps):
    """C-order numbers of the chunks that lie wholly inside the box."""
    ranges = [range(-(-a // s), (a + b) // s) for s, a, b in zip(chunk_shape, region_start, box_shape)]
    return [int(np.ravel_multi_index(c, cps)) for c in itertools.product(*ranges)]


def zarr_all_equal(chunk, fill) -> bool:
    """zarr 3.1.6's write_empty_chunks=False rule."""
    return bool(NDBuffer.from_numpy_array(chunk).all_equal(fill))


def encode(value, chunks, chunk_shape, region_start=None, cps=None, **kw):
    region_start = (0,) * value.ndim if region_start is None else region_start
    if cps is None:
        cps = tuple((a + n) // s for a, n, s in zip(region_start, value.shape, chunk_shape))
    return encode_chunks(value, chunks, chunk_shape=chunk_shape, region_start=region_start,
                         chunks_per_shard=cps, **kw)


def varied_chunks(rng, n, shape, dtype="<u2"):
    """`n` chunks of `shape`: random, constant, compressible ramps, incompressible bytes."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            a = rng.integers(0, 50, size).astype(dtype)
        elif kind == 1:
            a = np.full(size, rng.integers(0, 200), dtype)
        elif kind == 2:
            a = (np.arange(size) // 7 + int(rng.integers(0, 100))).astype(dtype)
        else:
            a = np.frombuffer(rng.bytes(size * dtype.itemsize), dtype).copy()
        out.append(a.reshape(shape))
    return out


def text_bytes(n, seed=0):
    """`n` bytes of words: compressible, and differently at each zstd level."""
    rng = np.random.default_rng(seed)
    words = [bytes(rng.choice(list(b"abcdefghijklmnop"), rng.integers(2, 9)).astype(np.uint8))
             for _ in range(300)]
    return b" ".join(words[i] for i in rng.integers(0, 300, n // 3))[:n]


def tile(blocks, grid):
    """Blocks (C order over `grid`) assembled into one array."""
    rows = [np.concatenate(blocks[r * grid[1] : (r + 1) * grid[1]], axis=1) for r in range(grid[0])]
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------------------------------------
# (a) byte identity with numcodecs and zarr's crc32c


def test_crc_reference_is_zarrs_codec():
    for raw in (b"", b"a", bytes(range(256)) * 3):
        assert ref_encode(raw, ("crc32c",)) == zarr_crc32c(raw)


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("level", LEVELS)
def test_zstd_matches_numcodecs(level, checksum):
    rng = np.random.default_rng(100 + level)
    chunk, grid = (16, 32), (4, 5)  # 20 chunks of 1 KiB through one call (one context)
    blocks = varied_chunks(rng, grid[0] * grid[1], chunk)
    value = tile(blocks, grid)
    order = rng.permutation(len(blocks))
    data, sizes = encode(value, order, chunk, steps=("zstd",), zstd_level=level,
                         zstd_checksum=checksum)
    ref = numcodecs_zstd(level, checksum)
    got = split(data, sizes)
    for lin, enc in zip(order, got):
        assert enc == bytes(ref.encode(blocks[lin].tobytes())), (level, checksum, lin)
        assert len(enc) <= zstd_bound(blocks[lin].nbytes)
    # a 32 KiB text-like chunk, on which the levels compress differently: the test tells them
    # apart (but 0 is 3, zstd's default, and 19..22 agree below a few MiB of input)
    text = np.frombuffer(text_bytes(32768), "<u2")
    data, sizes = encode(text, [0], text.shape, steps=("zstd",), zstd_level=level,
                         zstd_checksum=checksum)
    assert bytes(data) == bytes(ref.encode(text.tobytes()))
    same = {0: {0, 3}, 3: {0, 3}, 19: {19, 22}, 22: {19, 22}}.get(level, {level})
    for other in LEVELS:
        if other not in same:
            assert bytes(data) != bytes(numcodecs_zstd(other, checksum).encode(text.tobytes()))
    assert bytes(data) != bytes(numcodecs_zstd(level, not checksum).encode(text.tobytes()))


def test_context_reuse_across_calls():
    """Calls with other parameters in between (same thread, same context) keep the bytes."""
    rng = np.random.default_rng(7)
    blocks = varied_chunks(rng, 8, (32, 32))
    value = tile(blocks, (2, 4))
    for level, checksum in [(22, True), (-5, False), (3, True), (1, False), (22, False), (0, True)]:
        data, sizes = encode(value, np.arange(8), (32, 32), steps=("zstd",), zstd_level=level,
                             zstd_checksum=checksum)
        ref = numcodecs_zstd(level, checksum)
        assert split(data, sizes) == [bytes(ref.encode(b.tobytes())) for b in blocks]


@pytest.mark.parametrize("steps", STEPS, ids=lambda s: "+".join(s) or "raw")
def test_steps_match_zarr(steps):
    rng = np.random.default_rng(11)
    blocks = varied_chunks(rng, 6, (8, 24), "<i4")
    value = tile(blocks, (2, 3))
    order = [5, 0, 3, 1, 4, 2]
    data, sizes = encode(value, order, (8, 24), steps=steps, zstd_level=5, zstd_checksum=True)
    for lin, enc in zip(order, split(data, sizes)):
        raw = blocks[lin].tobytes()
        assert enc == ref_encode(raw, steps, 5, True)
        assert ref_decode(enc, steps, 5, True) == raw
        if steps and steps[-1] == "crc32c":
            assert enc == zarr_crc32c(enc[:-4])


def test_zstd_bound():
    def bound(n):  # ZSTD_COMPRESSBOUND of zstd.h
        return n + (n >> 8) + (((128 << 10) - n) >> 11 if n < (128 << 10) else 0)

    for n in (0, 1, 100, 8192, 128 << 10, 1 << 20, 10**9):
        assert zstd_bound(n) == bound(n)


def test_can_encode():
    for ok in ((), ("crc32c",), ("zstd",), ("zstd", "crc32c"), ("zstd", "crc32c", "crc32c"),
               ["crc32c"] * 8, ("blosc",), ("blosc", "crc32c")):
        assert can_encode(ok), ok
    for bad in (("crc32c", "zstd"), ("zstd", "zstd"), ("gzip",), ("bytes",), ["crc32c"] * 9,
                ("crc32c", "blosc"), ("blosc", "zstd"), ("zstd", "blosc"), ("blosc", "blosc")):
        assert not can_encode(bad), bad


# parameters the kernel refuses (numcodecs or c-blosc would raise, or store nothing the same):
# the pipeline leaves such chunks to numcodecs, which gives zarr's own error
BAD_BLOSC = [
    (dict(blosc_cname="snappy"), "is not one of this c-blosc's"),  # zarr knows it, c-blosc not
    (dict(blosc_cname="nope"), "is not one of this c-blosc's"),
    (dict(blosc_cname=b"lz4"), "is not one of this c-blosc's"),
    (dict(blosc_clevel=10), "clevel must be 0 to 9"),
    (dict(blosc_clevel=-1), "clevel must be 0 to 9"),
    (dict(blosc_shuffle=3), "shuffle must be -1, 0, 1 or 2"),
    (dict(blosc_shuffle=-2), "shuffle must be -1, 0, 1 or 2"),
    (dict(blosc_typesize=0), "typesize must be at least 1"),
    (dict(blosc_blocksize=-1), "blocksize must be 0"),
    (dict(blosc_blocksize=2**31), "blocksize must be 0"),
]


@pytest.mark.parametrize("params, msg", BAD_BLOSC, ids=[str(p) for p, _ in BAD_BLOSC])
def test_blosc_parameters_refused(params, msg):
    assert not can_encode(("blosc",), 8, **params)
    assert can_encode(("zstd",), 8, **params)  # blosc's parameters only matter to blosc
    value = np.arange(16, dtype="<u2")
    with pytest.raises(ValueError, match=msg):
        encode(value, [0, 1], (8,), steps=("blosc",), **params)


def test_blosc_chunk_size_limit():
    limit = 2**31 - 1 - 16  # BLOSC_MAX_BUFFERSIZE: c-blosc refuses more, numcodecs raises
    assert can_encode(("blosc",), limit)
    assert not can_encode(("blosc",), limit + 1)
    assert can_encode(("zstd",), limit + 1)
    assert blosc_bound(limit) == limit + 16


def test_blosc_reference_is_zarrs_codec():
    """The oracle (numcodecs' Blosc in a worker thread) is what zarr's BloscCodec stores."""
    spec = types.SimpleNamespace(prototype=default_buffer_prototype())
    raw = np.frombuffer(text_bytes(40000), np.uint8).copy()
    for cname, shuffle, typesize in [("lz4", "shuffle", 2), ("zstd", "bitshuffle", 4),
                                     ("zlib", "noshuffle", 1), ("blosclz", "shuffle", 8)]:
        codec = BloscCodec(cname=cname, clevel=7, shuffle=shuffle, typesize=typesize,
                           blocksize=4096)
        zarr_bytes = off_main(codec._encode_sync, Buffer.from_bytes(raw.tobytes()), spec)
        ours = blosc_encode(raw.tobytes(), blosc_cname=cname, blosc_clevel=7,
                            blosc_shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[shuffle],
                            blosc_typesize=typesize, blosc_blocksize=4096)
        assert zarr_bytes.to_bytes() == ours


def blosc_sample(rng, kind, nbytes):
    """Chunk bytes of `kind`: smooth u2 ramps (compress well, better with a shuffle), words,
    constant, incompressible (stored as a copy: the destination size decides the bytes)."""
    if kind == "ramp":
        return (np.cumsum(rng.integers(-3, 4, nbytes // 2)) % 4000).astype("<u2").tobytes()
    if kind == "text":
        return text_bytes(nbytes, int(rng.integers(0, 100)))
    if kind == "constant":
        return bytes([int(rng.integers(0, 256))]) * nbytes
    return rng.bytes(nbytes)


@pytest.mark.parametrize("shuffle", [-1, 0, 1, 2])
@pytest.mark.parametrize("cname", BLOSC_CNAMES)
def test_blosc_matches_numcodecs(cname, shuffle):
    rng = np.random.default_rng(len(cname) * 10 + shuffle)
    kinds = ("ramp", "text", "constant", "random")
    # chunks of 2 KiB (one blosc block) and 96 KiB (several blocks with a blocksize of 8 KiB
    # or automatic at the higher levels), several chunks per call
    for nbytes, grid in ((2048, (2, 4)), (98304, (1, 4))):
        blocks = [np.frombuffer(blosc_sample(rng, kinds[i % 4], nbytes), "<u2")
                  for i in range(grid[0] * grid[1])]
        value = tile([b.reshape(1, -1) for b in blocks], grid)
        order = rng.permutation(len(blocks))
        for clevel, typesize, blocksize in [(5, 2, 0), (0, 2, 0), (1, 1, 0), (9, 4, 0),
                                            (3, 8, 8192), (5, 300, 0), (9, 2, 1000)]:
            params = dict(blosc_cname=cname, blosc_clevel=clevel, blosc_shuffle=shuffle,
                          blosc_typesize=typesize, blosc_blocksize=blocksize)
            data, sizes = encode(value, order, (1, nbytes // 2), steps=("blosc",), **params)
            for lin, enc in zip(order, split(data, sizes)):
                raw = blocks[lin].tobytes()
                assert enc == blosc_encode(raw, **params), (nbytes, lin, params)
                assert len(enc) <= blosc_bound(nbytes)
                assert bytes(numcodecs.Blosc().decode(enc)) == raw


def test_blosc_parameters_change_the_bytes():
    """The test above tells the parameters apart: each changes the stored bytes."""
    raw = (np.cumsum(np.random.default_rng(2).integers(-3, 4, 16384)) % 4000).astype("<u2")
    value = raw.reshape(1, -1)
    base = dict(blosc_cname="zstd", blosc_clevel=5, blosc_shuffle=1, blosc_typesize=2,
                blosc_blocksize=0)
    seen = {}
    for key, other in [("blosc_cname", "lz4"), ("blosc_clevel", 1), ("blosc_shuffle", 2),
                       ("blosc_typesize", 4), ("blosc_blocksize", 4096), (None, None)]:
        params = dict(base) if key is None else {**base, key: other}
        data, _ = encode(value, [0], value.shape, steps=("blosc",), **params)
        assert bytes(data) == blosc_encode(raw.tobytes(), **params)
        seen[key] = bytes(data)
    assert len(set(seen.values())) == len(seen), "some parameter did not change the bytes"


# ------------------------------------------------------------------------------------------------
# (b) the gather: layouts, boxes, dims, dtypes, byte order, chunk order

# dtype -> the swap unit to big-endian (0: none)
DTYPES = {"u1": 0, "u2": 2, "i4": 4, "f8": 8, "c16": 8, "u1,<u2": 0, "<i2,<f4": 0}


def sample(rng, shape, dtype):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    a = np.frombuffer(rng.bytes(n), dtype).reshape(shape).copy()
    if dtype.kind in "fc":  # no NaN: the twin comparison below is by bytes anyway
        a = rng.normal(size=shape).astype(dtype) * 100
    return a


def make_value(rng, shape, dtype, layout):
    """An input box of `layout`: C, F, view (offset), strided, reversed, broadcast."""
    base = sample(rng, tuple(2 * s + 2 for s in shape), dtype)
    if layout == "C":
        return np.ascontiguousarray(base[tuple(slice(0, s) for s in shape)])
    if layout == "F":
        return np.asfortranarray(base[tuple(slice(0, s) for s in shape)])
    if layout == "view":
        return base[tuple(slice(1, 1 + s) for s in shape)]
    if layout == "strided":
        return base[tuple(slice(1, 1 + 2 * s, 2) for s in shape)]
    if layout == "reversed":
        return base[tuple(slice(s, 0, -1) for s in shape)]
    if layout == "reversed-strided":
        return base[tuple(slice(2 * s, 0, -2) for s in shape)]
    if layout == "broadcast":
        return np.broadcast_to(base.reshape(-1)[3], shape)
    raise AssertionError(layout)


LAYOUTS = ("C", "F", "view", "strided", "reversed", "reversed-strided", "broadcast")


def check_gather(value, chunk_shape, region_start, cps, chunks, *, steps=(), swap_unit=0,
                 stored_dtype=None, **kw):
    data, sizes = encode_chunks(value, chunks, steps=steps, chunk_shape=chunk_shape,
                                region_start=region_start, chunks_per_shard=cps,
                                swap_unit=swap_unit, stored_dtype=stored_dtype, **kw)
    assert sizes.dtype == np.int64 and sizes.shape == (len(chunks),)
    for lin, enc in zip(chunks, split(data, sizes)):
        want = twin_raw(value, lin, chunk_shape, region_start, cps, stored_dtype)
        assert ref_decode(enc, steps) == want, lin


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gather_layouts_dtypes(layout, dtype):
    rng = np.random.default_rng(abs(hash((layout, dtype))) % 2**32)
    chunk_shape, cps, region_start, shape = (3, 4), (5, 4), (2, 3), (11, 12)
    value = make_value(rng, shape, dtype, layout)
    chunks = inside_chunks(chunk_shape, region_start, shape, cps)
    assert len(chunks) == 6
    chunks = list(rng.permutation(chunks))
    check_gather(value, chunk_shape, region_start, cps, chunks)
    swap = DTYPES[dtype]
    if swap:
        big = np.dtype(dtype).newbyteorder(">")
        check_gather(value, chunk_shape, region_start, cps, chunks, swap_unit=swap,
                     stored_dtype=big, steps=("zstd", "crc32c"))


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed"])
def test_gather_ndim(ndim, layout):
    rng = np.random.default_rng(ndim * 10 + len(layout))
    chunk_shape = (4, 3, 2, 5)[:ndim]
    cps = (3, 2, 4, 2)[:ndim]
    region_start = (1, 0, 2, 5)[:ndim]
    shape = tuple(c * n - a for c, n, a in zip(chunk_shape, cps, region_start))
    value = make_value(rng, shape, "<i4", layout)
    chunks = inside_chunks(chunk_shape, region_start, shape, cps)
    assert chunks
    check_gather(value, chunk_shape, region_start, cps, chunks[::-1], steps=("zstd",))
    check_gather(value, chunk_shape, region_start, cps, chunks, swap_unit=4,
                 stored_dtype=">i4")


def test_chunk_order_and_repeats():
    rng = np.random.default_rng(5)
    value = sample(rng, (8, 8), "<u2")
    for order in ([3, 2, 1, 0], [0, 0, 3], [2], []):
        data, sizes = encode(value, np.array(order, np.int32), (4, 4), steps=("crc32c",))
        got = split(data, sizes)
        assert got == [ref_encode(twin_raw(value, lin, (4, 4), (0, 0), (2, 2)), ("crc32c",))
                       for lin in order]


@pytest.mark.parametrize("steps", STEPS, ids=lambda s: "+".join(s) or "raw")
@pytest.mark.parametrize("head, tail", [(0, 0), (16, 0), (0, 20), (36, 36), (1, 1)])
def test_head_and_tail_room(steps, head, tail):
    """With head/tail, the chunks lie from `head` and `tail` bytes follow them: the same
    chunks as without, and nothing else in the returned buffer."""
    rng = np.random.default_rng(8)
    value = sample(rng, (16, 16), "<u2")
    value[:8, :8] = 0  # skipped with skip_fill
    kw = dict(steps=steps, fill_value=0, skip_fill=True)
    plain, plain_sizes = encode(value, np.arange(4), (8, 8), **kw)
    data, sizes = encode(value, np.arange(4), (8, 8), head=head, tail=tail, **kw)
    assert sizes.tolist() == plain_sizes.tolist() and sizes[0] == -1
    assert data.shape == (head + plain.shape[0] + tail,)
    assert bytes(data[head : data.shape[0] - tail]) == bytes(plain)
    # everything skipped: the room alone
    data, sizes = encode(np.zeros((8, 8), "<u2"), [0], (8, 8), head=head, tail=tail, **kw)
    assert sizes.tolist() == [-1] and data.shape == (head + tail,)
    with pytest.raises(ValueError, match="head and tail must be 0 or more"):
        encode(value, [0], (8, 8), head=-1, **kw)


def test_readonly_and_broadcast_value_unchanged():
    value = np.arange(64, dtype="<u2").reshape(8, 8)
    value.flags.writeable = False
    data, sizes = encode(value, [1], (4, 4), steps=())
    assert sizes.tolist() == [32] and bytes(data) == value[:4, 4:].tobytes()
    assert not value.flags.writeable
    b = np.broadcast_to(np.arange(8, dtype="<u2"), (8, 8))
    data, _sizes = encode(b, [2, 1], (4, 4), steps=())
    assert bytes(data) == b[4:, :4].tobytes() + b[:4, 4:].tobytes()


def test_0d_value():
    value = np.array(7, "<i4")
    data, sizes = encode_chunks(value, [0], steps=("crc32c",), chunk_shape=(), region_start=(),
                                chunks_per_shard=())
    assert split(data, sizes) == [ref_encode(value.tobytes(), ("crc32c",))]


# ------------------------------------------------------------------------------------------------
# (c) the fill test: exactly zarr's write_empty_chunks=False rule


def fill_case(chunks, fill, *, dtype=None, stored=None, swap_unit=0, steps=("zstd",)):
    """Encode `chunks` (1-d arrays of one length) with skip_fill; compare with zarr's rule."""
    value = np.concatenate(chunks)
    if dtype is not None:
        value = value.astype(dtype)
    n = len(chunks[0])
    data, sizes = encode_chunks(value, np.arange(len(chunks)), steps=steps, chunk_shape=(n,),
                                region_start=(0,), chunks_per_shard=(len(chunks),),
                                swap_unit=swap_unit, stored_dtype=stored, fill_value=fill,
                                skip_fill=True)
    got = split(data, sizes)
    skipped = []
    for i, enc in enumerate(got):
        chunk = value[i * n : (i + 1) * n]
        stored_chunk = chunk.astype(stored) if stored is not None else chunk
        zarr_says = zarr_all_equal(stored_chunk, fill)
        assert zarr_says == zarr_all_equal(chunk, fill)  # byte order does not matter to zarr
        assert (enc is None) == zarr_says, (i, chunk, fill)
        assert zkernels.is_fill(stored_chunk, fill) == zarr_says, (i, chunk, fill)
        if enc is not None:
            assert ref_decode(enc, steps) == stored_chunk.tobytes()
        skipped.append(enc is None)
    return skipped


def test_fill_integer_zero():
    z = np.zeros(16, "<u2")
    one = z.copy()
    one[15] = 1
    assert fill_case([z, one, z, np.full(16, 256, "<u2")], 0) == [True, False, True, False]
    assert fill_case([z, one], 0, stored=">u2", swap_unit=2) == [True, False]
    assert fill_case([np.full(16, 7, "<i4"), np.full(16, 7, "<i4")], 7) == [True, True]
    assert fill_case([np.full(16, -3, "<i4"), z.astype("<i4")], -3) == [True, False]
    assert fill_case([z.astype("u1"), one.astype("u1")], 0, steps=()) == [True, False]
    # skip_fill=False: nothing skipped; fill_value None: nothing equals it
    data, sizes = encode(z, [0], (16,), steps=(), fill_value=0)
    assert sizes.tolist() == [32] and bytes(data) == bytes(32)
    data, sizes = encode(z, [0], (16,), steps=(), fill_value=None, skip_fill=True)
    assert sizes.tolist() == [32] and bytes(data) == bytes(32)


@pytest.mark.parametrize("stored", [None, ">f8"])
def test_fill_float_signed_zero(stored):
    swap = 8 if stored else 0
    pz, nz = np.zeros(8), np.full(8, -0.0)
    mixed = pz.copy()
    mixed[3] = -0.0
    chunks = [pz, nz, mixed]
    # a float 0.0 fill compares bits: -0.0 is data
    assert fill_case(chunks, 0.0, stored=stored, swap_unit=swap) == [True, False, False]
    assert fill_case(chunks, -0.0, stored=stored, swap_unit=swap) == [False, True, False]
    assert fill_case(chunks, np.float64(-0.0), stored=stored, swap_unit=swap) == [False, True, False]
    # an integer 0 fill compares values: -0.0 == 0
    assert fill_case(chunks, 0, stored=stored, swap_unit=swap) == [True, True, True]
    assert fill_case([pz.astype("<f4"), nz.astype("<f4")], 0.0,
                     stored=None if stored is None else ">f4", swap_unit=swap // 2) == [True, False]


@pytest.mark.parametrize("stored", [None, ">f8"])
def test_fill_nan_payloads(stored):
    swap = 8 if stored else 0
    bits = np.array([0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8000000000000,
                     0x7FFFFFFFFFFFFFFF], np.uint64)
    nans = np.tile(bits, 4).view("<f8")
    assert np.isnan(nans).all()
    mixed = nans.copy()
    mixed[5] = 1.0
    chunks = [nans, np.full(16, np.nan), mixed, np.zeros(16)]
    assert fill_case(chunks, np.nan, stored=stored, swap_unit=swap) == [True, True, False, False]
    assert fill_case(chunks, float("nan"), stored=stored, swap_unit=swap) == [True, True, False,
                                                                               False]
    assert fill_case(chunks, 0.0, stored=stored, swap_unit=swap) == [False, False, False, True]


@pytest.mark.parametrize("stored", [None, ">c16"])
def test_fill_complex(stored):
    swap = 8 if stored else 0
    n = 8
    z = np.zeros(n, "<c16")
    neg_imag = np.full(n, complex(0.0, -0.0), "<c16")
    nan_re = np.full(n, complex(np.nan, 0.0), "<c16")
    nan_both = np.full(n, complex(np.nan, np.nan), "<c16")
    one = np.full(n, 1 + 2j, "<c16")
    chunks = [z, neg_imag, nan_re, nan_both, one]
    for fill in (0j, complex(0.0, -0.0), complex(np.nan, 0.0), complex(np.nan, np.nan), 1 + 2j, 0,
                 0.0, np.complex128(0)):
        fill_case(chunks, fill, stored=stored, swap_unit=swap)  # asserts zarr's rule per chunk
    assert fill_case(chunks, 0j, stored=stored, swap_unit=swap) == [True, True, False, False, False]
    assert fill_case(chunks, 1 + 2j, stored=stored, swap_unit=swap)[-1] is True


def test_fill_structured():
    dt = np.dtype([("a", "u1"), ("b", "<u2")])
    z = np.zeros(8, dt)
    one = z.copy()
    one["b"][2] = 1
    fill = np.zeros((), dt)[()]
    assert can_test_fill(dt, fill)
    assert fill_case([z, one], fill, steps=()) == [True, False]
    # float fields: the kernel cannot decide (-0.0, NaN in fields): the caller must not skip_fill
    fdt = np.dtype([("a", "u1"), ("f", "<f4")])
    ffill = np.zeros((), fdt)[()]
    assert not can_test_fill(fdt, ffill)
    with pytest.raises(ValueError, match="no kernel fill test"):
        encode(np.zeros(8, fdt), [0], (8,), steps=(), fill_value=ffill, skip_fill=True)
    # without skip_fill the kernel encodes them all
    _data, sizes = encode(np.zeros(8, fdt), [0], (8,), steps=(), fill_value=ffill)
    assert sizes.tolist() == [40]


def test_fill_many_random():
    """Random chunks near the fill (one element off, a sign flipped, NaN payloads) vs zarr."""
    rng = np.random.default_rng(21)
    cases = [("<u2", 0, None, 0), ("<i4", -1, ">i4", 4), ("<f4", 0.0, None, 0),
             ("<f8", np.nan, ">f8", 8), ("<f8", -0.0, None, 0), ("<c8", 0j, ">c8", 4),
             ("<f4", 1.5, ">f4", 4)]
    for dtype, fill, stored, swap in cases:
        chunks = []
        for _ in range(24):
            c = np.full(6, fill, dtype)
            k = int(rng.integers(0, 4))
            if k == 1:
                c[rng.integers(0, 6)] = 1
            elif k == 2 and c.dtype.kind in "fc":
                c[rng.integers(0, 6)] *= -1
            elif k == 3 and c.dtype.kind in "fc":
                c[rng.integers(0, 6)] = np.nan
            chunks.append(c)
        fill_case(chunks, fill, stored=stored, swap_unit=swap)


# ------------------------------------------------------------------------------------------------
# (d) argument errors


def test_argument_errors():
    value = np.zeros((8, 8), "<u2")
    kw = {"steps": ("zstd",), "chunk_shape": (4, 4), "region_start": (0, 0),
          "chunks_per_shard": (2, 2)}
    # chunk outside the box, or outside the shard
    with pytest.raises(ValueError, match="wholly inside the box"):
        encode_chunks(value[:6], [0, 3], **kw)
    with pytest.raises(ValueError, match="wholly inside the box"):
        encode_chunks(value[:, 1:], [0], **{**kw, "region_start": (0, 1)})
    with pytest.raises(ValueError, match="wholly inside the box"):
        encode_chunks(value[:4], [0, 2], **{**kw, "chunks_per_shard": (3, 2)})
    for bad in ([4], [-1]):
        with pytest.raises(ValueError):
            encode_chunks(value, bad, **kw)
    with pytest.raises(ValueError, match="1-d"):
        encode_chunks(value, [[0, 1]], **kw)
    # steps
    with pytest.raises(ValueError, match="unknown step 'gzip'"):
        encode_chunks(value, [0], **{**kw, "steps": ("gzip",)})
    with pytest.raises(ValueError, match="zstd must come first"):
        encode_chunks(value, [0], **{**kw, "steps": ("crc32c", "zstd")})
    with pytest.raises(ValueError, match="zstd must come first"):
        encode_chunks(value, [0], **{**kw, "steps": ("zstd", "zstd")})
    with pytest.raises(ValueError, match="at most 8 steps"):
        encode_chunks(value, [0], **{**kw, "steps": ("crc32c",) * 9})
    # value
    with pytest.raises(TypeError, match="numpy array"):
        encode_chunks(value.tolist(), [0], **kw)
    with pytest.raises(TypeError, match="numpy array"):
        encode_chunks(memoryview(value), [0], **kw)
    with pytest.raises(TypeError, match="plain data"):
        encode_chunks(np.zeros((8, 8), object), [0], **kw)
    # grid
    with pytest.raises(ValueError, match="dimensions disagree"):
        encode_chunks(value, [0], **{**kw, "chunk_shape": (4,)})
    with pytest.raises(ValueError, match="outside the shard"):
        encode_chunks(value, [0], **{**kw, "region_start": (1, 0)})
    with pytest.raises(ValueError, match="chunk_shape must be positive"):
        encode_chunks(value, [0], **{**kw, "chunk_shape": (0, 4)})
    with pytest.raises(ValueError, match="swap_unit"):
        encode_chunks(value, [0], **{**kw, "swap_unit": 4})
    with pytest.raises(TypeError):
        encode_chunks(value, [0], **{**kw, "chunk_shape": (4.0, 4)})
    with pytest.raises(OverflowError):
        encode_chunks(value, [0], **{**kw, "zstd_level": 2**31})


def test_stored_dtype_itemsize_must_match():
    """The fill test reads stored-dtype items out of value-itemsize chunks: a mismatch used to
    read past the chunk (u1 -> u8) or test only every 8th byte (u8 -> u1, a chunk of 256s taken
    for zeros and dropped)."""
    with pytest.raises(ValueError, match="itemsize"):
        encode(np.zeros(64, "u1"), [0], (64,), steps=(), stored_dtype="u8", fill_value=0,
               skip_fill=True)
    with pytest.raises(ValueError, match="itemsize"):
        encode(np.full(8, 256, "<u8"), [0], (8,), steps=(), stored_dtype="u1", fill_value=0,
               skip_fill=True)


# ------------------------------------------------------------------------------------------------
# (e) concat_ranges


def concat_twin(sources, groups, offsets, nbytes):
    flat = [np.frombuffer(bytes(memoryview(s).cast("B")) if not isinstance(s, np.ndarray)
                          else np.ascontiguousarray(s).tobytes(), np.uint8) for s in sources]
    parts = [flat[g][o : o + n] for g, o, n in zip(groups, offsets, nbytes)]
    return np.concatenate(parts) if parts else np.empty(0, np.uint8)


def test_concat_ranges_vs_numpy():
    rng = np.random.default_rng(41)
    sources = [rng.bytes(1000), bytearray(rng.bytes(10)),
               np.frombuffer(rng.bytes(4000), "<u4").reshape(10, 100),
               memoryview(rng.bytes(64)), np.empty(0, np.uint8)]
    lens = [1000, 10, 4000, 64, 0]
    for trial in range(30):
        n = int(rng.integers(0, 40))
        groups = rng.integers(0, len(sources), n)
        offsets = np.array([rng.integers(0, lens[g] + 1) for g in groups], np.int64)
        nbytes = np.array([rng.integers(0, lens[g] - o + 1) for g, o in zip(groups, offsets)],
                          np.int64)
        want = concat_twin(sources, groups, offsets, nbytes)
        start = int(rng.integers(0, 5))
        out = np.full(start + want.size + 3, 0xA5, np.uint8)
        end = concat_ranges(sources, groups, offsets, nbytes, out, start)
        assert end == start + want.size
        assert np.array_equal(out[start:end], want)
        assert (out[:start] == 0xA5).all() and (out[end:] == 0xA5).all()


def test_concat_ranges_encoded_chunks():
    """The pipeline's use: new chunks and kept ones of an old shard, in a chosen order."""
    rng = np.random.default_rng(43)
    value = sample(rng, (16, 16), "<u2")
    data, sizes = encode(value, np.arange(16), (4, 4), steps=("zstd", "crc32c"))
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    old = rng.bytes(500)
    order = rng.permutation(16)
    groups = np.array([0] * 16 + [1, 1])
    offsets = np.concatenate([offs[order], [10, 300]])
    nbytes = np.concatenate([sizes[order], [50, 200]])
    out = np.empty(int(nbytes.sum()), np.uint8)
    assert concat_ranges([data, old], groups, offsets, nbytes, out) == out.size
    assert bytes(out) == b"".join(
        [bytes(data[o : o + n]) for o, n in zip(offs[order], sizes[order])] + [old[10:60],
                                                                            old[300:500]])


@pytest.mark.parametrize(
    "groups, offsets, nbytes, exc, msg",
    [
        ([0, 1], [0, 5], [4, 6], CorruptChunkError, "past the end"),  # 5 + 6 > 10
        ([0, 0], [0, 17], [4, 0], CorruptChunkError, "past the end"),
        ([0], [-1], [4], CorruptChunkError, "past the end"),
        ([0], [0], [-1], CorruptChunkError, "past the end"),
        ([0, 2], [0, 0], [4, 1], ValueError, "source number out of range"),
        ([-1], [0], [1], ValueError, "source number out of range"),
        ([0, 0], [0, 0], [12, 10], ValueError, "out has 20 bytes, 22 needed"),
        ([0, 1], [0], [1, 1], ValueError, "one entry per range"),
        # offset + nbytes wraps around int64: must still be refused (it crashed)
        ([0], [2**62], [2**62], CorruptChunkError, "past the end"),
        ([0] * 4, [2**62] * 4, [2**62] * 4, CorruptChunkError, "past the end"),
        ([0], [2**63 - 1], [1], CorruptChunkError, "past the end"),
    ],
)
def test_concat_ranges_errors_before_copying(groups, offsets, nbytes, exc, msg):
    sources = [bytes(range(16)), bytes(range(100, 110))]
    out = np.full(20, 0xA5, np.uint8)
    with pytest.raises(exc, match=msg):
        concat_ranges(sources, np.array(groups), np.array(offsets, np.int64),
                      np.array(nbytes, np.int64), out)
    assert (out == 0xA5).all()


def test_concat_ranges_out_and_start_errors():
    sources = [bytes(range(16))]
    out = np.full(8, 0xA5, np.uint8)
    with pytest.raises(ValueError, match="out has 8 bytes, 9 needed"):
        concat_ranges(sources, [0], [0], [4], out, 5)
    with pytest.raises(ValueError, match="out has 8 bytes"):
        concat_ranges(sources, [0], [0], [4], out, -1)
    with pytest.raises((ValueError, TypeError)):  # read-only out
        concat_ranges(sources, [0], [0], [4], np.frombuffer(bytes(8), np.uint8))
    with pytest.raises((ValueError, TypeError)):  # not one contiguous byte run
        concat_ranges(sources, [0], [0], [4], np.zeros(16, np.uint8)[::2])
    with pytest.raises((ValueError, TypeError)):  # a strided source is not a byte run
        concat_ranges([np.arange(16, dtype=np.uint8)[::2]], [0], [0], [4], out)
    assert (out == 0xA5).all()
    assert concat_ranges(sources, [], [], [], out, 3) == 3
    assert concat_ranges([], [], [], [], np.empty(0, np.uint8)) == 0


def test_concat_ranges_group_beyond_int32_is_refused():
    sources = [b"abcdefgh", b"ABCDEFGH"]
    out = np.zeros(4, np.uint8)
    with pytest.raises((ValueError, OverflowError)):
        concat_ranges(sources, np.array([2**32 + 1]), [0], [4], out)


# ------------------------------------------------------------------------------------------------
# (f) round trip with the decode kernel


@pytest.mark.parametrize("steps", STEPS, ids=lambda s: "+".join(s) or "raw")
@pytest.mark.parametrize("dtype, swap", [("<u2", 0), ("<f8", 8), ("<i4", 4), ("u1,<u2", 0)])
def test_round_trip_with_decode(steps, dtype, swap):
    rng = np.random.default_rng(61)
    chunk_shape, cps = (8, 6), (4, 5)
    shape = (32, 30)
    value = make_value(rng, shape, dtype, "strided")
    blank = rng.random(cps) < 0.3  # chunks equal to the fill, skipped
    for c in zip(*np.nonzero(blank)):
        value[tuple(slice(i * s, (i + 1) * s) for i, s in zip(c, chunk_shape))] = np.zeros(
            (), dtype)
    stored = np.dtype(dtype).newbyteorder(">") if swap else np.dtype(dtype)
    fill = np.zeros((), dtype)[()] if np.dtype(dtype).names else 0
    order = rng.permutation(int(np.prod(cps)))
    data, sizes = encode_chunks(value, order, steps=steps, chunk_shape=chunk_shape,
                                region_start=(0, 0), chunks_per_shard=cps, swap_unit=swap,
                                stored_dtype=stored, fill_value=fill, skip_fill=True,
                                zstd_level=3)
    assert sorted(order[sizes < 0].tolist()) == np.flatnonzero(blank.ravel()).tolist()
    locs = np.full((int(np.prod(cps)), 2), EMPTY, np.uint64)
    kept = sizes >= 0
    offs = np.concatenate([[0], np.cumsum(sizes[kept])[:-1]])
    locs[order[kept], 0] = offs
    locs[order[kept], 1] = sizes[kept]
    out = np.full(shape, np.frombuffer(b"\x01" * np.dtype(dtype).itemsize, dtype)[0])
    decode_chunks([data], locs.reshape(cps + (2,)), out, steps=steps[::-1],
                  chunk_shape=chunk_shape, region_start=(0, 0), swap_unit=swap)
    assert out.tobytes() == np.ascontiguousarray(value).tobytes()


# ------------------------------------------------------------------------------------------------
# (g) the GIL is released: counted, not timed


def spin_until(event, t0=None):
    """Count loop iterations until `event` is set: (count, seconds since `t0`, or since now)."""
    count = 0
    t0 = time.perf_counter() if t0 is None else t0
    while not event.is_set():
        count += 1
    return count, time.perf_counter() - t0


def test_releases_gil():
    rng = np.random.default_rng(3)
    value = rng.integers(0, 1000, (2048, 2048)).astype("<f8")  # 32 MiB
    chunks = np.arange(256)
    result = {}
    started = threading.Event()
    done = threading.Event()

    def work():
        started.set()
        result["r"] = encode_chunks(value, chunks, steps=("zstd", "crc32c"),
                                    chunk_shape=(128, 128), region_start=(0, 0),
                                    chunks_per_shard=(16, 16), swap_unit=8, stored_dtype=">f8",
                                    fill_value=0.0, skip_fill=True, zstd_level=1)
        done.set()

    # the main thread's free spinning rate, the worker thread only sleeping
    alone = threading.Event()
    timer = threading.Timer(0.1, alone.set)
    timer.start()
    base_count, base_s = spin_until(alone)
    timer.join()

    t = threading.Thread(target=work)
    t0 = time.perf_counter()  # from before the start: time blocked on the GIL counts too
    t.start()
    started.wait()
    count, seconds = spin_until(done, t0)
    t.join()
    data, sizes = result["r"]
    got = split(data, sizes)
    for lin in (0, 17, 255):
        assert got[lin] == ref_encode(twin_raw(value, lin, (128, 128), (0, 0), (16, 16), ">f8"),
                                      ("zstd", "crc32c"), 1)
    # One call of about 0.2 s and no bytecode around it in the worker: with the GIL released the
    # main thread spins at a good part of its free rate (20-100% here, sharing two cores with the
    # worker); with the GIL held it spins only in the switch intervals around the call (a
    # list.sort() of a million floats in place of the call: 3-4%).
    rate, base_rate = count / seconds, base_count / base_s
    assert rate > 0.1 * base_rate, (count, seconds, base_count, base_s)


# per thread: encode_chunks' compressor keywords, each thread its own
THREAD_PARAMS = {
    "zstd": [dict(steps=("zstd",), zstd_level=lvl, zstd_checksum=lvl % 2 == 1)
             for lvl in (1, 3, 9, 19)],
    "blosc": [dict(steps=("blosc",), blosc_cname=BLOSC_CNAMES[i % len(BLOSC_CNAMES)],
                   blosc_clevel=i + 1, blosc_shuffle=i % 3, blosc_typesize=2 ** (i % 3))
              for i in range(4)],
}


@pytest.mark.parametrize("compressor", list(THREAD_PARAMS))
def test_threads_each_own_context(compressor):
    """Threads encoding at once with different parameters (each its own zstd context; blosc's
    context lives in the call)."""
    rng = np.random.default_rng(4)
    blocks = varied_chunks(rng, 16, (64, 64))
    value = tile(blocks, (4, 4))
    params = THREAD_PARAMS[compressor]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                data, sizes = encode(value, np.arange(16), (64, 64), **params[i])
                results.setdefault(i, []).append(split(data, sizes))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(params))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, runs in results.items():
        kw = params[i]
        blosc = {k: v for k, v in kw.items() if k.startswith("blosc_")}
        want = [ref_encode(b.tobytes(), kw["steps"], kw.get("zstd_level", 0),
                           kw.get("zstd_checksum", False), blosc) for b in blocks]
        assert len(runs) == 5 and all(r == want for r in runs), kw


# ------------------------------------------------------------------------------------------------
# (h) hypothesis: shapes, dtypes, zstd and blosc parameters vs numcodecs per chunk


@st.composite
def encode_case(draw):
    ndim = draw(st.integers(1, 3))
    chunk_shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    cps = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    lo = tuple(draw(st.integers(0, n - 1)) for n in cps)
    hi = tuple(draw(st.integers(a + 1, n)) for a, n in zip(lo, cps))
    # the box: whole chunks [lo, hi) plus up to a partial chunk on either side
    pre = tuple(draw(st.integers(0, s - 1)) if a > 0 else 0 for s, a in zip(chunk_shape, lo))
    post = tuple(draw(st.integers(0, s - 1)) if b < n else 0
                 for s, b, n in zip(chunk_shape, hi, cps))
    region_start = tuple(a * s - p for a, s, p in zip(lo, chunk_shape, pre))
    shape = tuple((b - a) * s + p + q for a, b, s, p, q in zip(lo, hi, chunk_shape, pre, post))
    dtype = draw(st.sampled_from(["u1", "<u2", "<i4", "<f8", "<c16", "u1,<u2"]))
    swap = {"<u2": 2, "<i4": 4, "<f8": 8, "<c16": 8}.get(dtype, 0)
    swap = draw(st.sampled_from([0, swap])) if swap else 0
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed", "broadcast"]))
    steps = draw(st.sampled_from(STEPS))
    level = draw(st.sampled_from(LEVELS))
    checksum = draw(st.booleans())
    skip_fill = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    blosc = dict(blosc_cname=draw(st.sampled_from(BLOSC_CNAMES)),
                 blosc_clevel=draw(st.integers(0, 9)), blosc_shuffle=draw(st.integers(-1, 2)),
                 blosc_typesize=draw(st.sampled_from([1, 2, 3, 4, 8, 16, 255, 256])),
                 blosc_blocksize=draw(st.sampled_from([0, 0, 1, 16, 100, 4096])))
    return (chunk_shape, cps, region_start, shape, dtype, swap, layout, steps, level, checksum,
            skip_fill, seed, blosc)


@settings(max_examples=150, deadline=None)
@given(encode_case())
def test_hypothesis_vs_numcodecs(case):
    (chunk_shape, cps, region_start, shape, dtype, swap, layout, steps, level, checksum,
     skip_fill, seed, blosc) = case
    rng = np.random.default_rng(seed)
    value = make_value(rng, shape, dtype, layout)
    if layout != "broadcast" and value.size and rng.random() < 0.5:
        value[...] = np.zeros((), dtype)  # a box of fill, then some data back
        flat = value.reshape(-1) if value.flags.c_contiguous else None
        if flat is not None and rng.random() < 0.5:
            flat[rng.integers(0, flat.size)] = np.ones((), dtype) if not np.dtype(dtype).names \
                else np.frombuffer(b"\x01" * np.dtype(dtype).itemsize, dtype)[0]
    chunks = inside_chunks(chunk_shape, region_start, shape, cps)
    chunks = list(rng.permutation(chunks))
    stored = np.dtype(dtype).newbyteorder(">") if swap else np.dtype(dtype)
    fill = np.zeros((), dtype)[()] if np.dtype(dtype).names else 0
    data, sizes = encode_chunks(value, chunks, steps=steps, chunk_shape=chunk_shape,
                                region_start=region_start, chunks_per_shard=cps, swap_unit=swap,
                                stored_dtype=stored, fill_value=fill, skip_fill=skip_fill,
                                zstd_level=level, zstd_checksum=checksum, **blosc)
    for lin, enc in zip(chunks, split(data, sizes)):
        raw = twin_raw(value, lin, chunk_shape, region_start, cps, stored)
        block = value[chunk_box(lin, chunk_shape, region_start, cps)]
        if skip_fill and zarr_all_equal(np.ascontiguousarray(block), fill):
            assert enc is None
        else:
            assert enc == ref_encode(raw, steps, level, checksum, blosc)
