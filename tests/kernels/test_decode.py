"""Tests of zkernels._decode.decode_chunks: compressed inner chunks decoded straight into a box.

Oracles: a numcodecs twin (every chunk decoded by numcodecs' own Zstd/Blosc objects and zarr's
crc32c check done with google_crc32c, byte-swapped with numpy, placed into a full shard array
holding the fill value, the box sliced out) and zarr 3.1.6 itself reading sharded arrays with
zstd / blosc / crc32c inner codecs. Chunks are encoded exactly as zarr encodes them: numcodecs'
Zstd and Blosc (typesize = item size), crc32c appended little-endian. Corrupt input must raise
our errors naming the inner chunk, and must never be read past the bytes given (guard pages).
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import threading

import google_crc32c
import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zkernels._decode import blosc_lz4_frame, can_decode, codec_libraries, decode_chunks

from zkernels._shard_index import parse_shard_index, shard_index_nbytes
from zkernels.errors import (
    ChecksumError,
    CorruptChunkError,
    ShardIndexError,
    ZKernelsError,
)

EMPTY = np.uint64(2**64 - 1)
MAX = 2**64 - 1

needs_libs = pytest.mark.skipif(
    not (can_decode(["zstd"]) and can_decode(["blosc"])),
    reason=f"codec libraries not found: {codec_libraries()}",
)
pytestmark = needs_libs

# dtype, swap units that make sense for it (0 = no swap)
DTYPES = {
    "u1": (0,),
    "u2": (0, 2),
    "i4": (0, 4),
    "f8": (0, 8),
    "c16": (0, 8),
    "V16": (0, 4, 8),
    "u1,<u2": (0,),  # structured, itemsize 3
    "V5": (0,),
}


def blosc(cname, shuffle, clevel=5):
    # zarr's BloscCodec: typesize = the item size (numcodecs >= 0.16), blocksize 0 (automatic)
    return lambda itemsize: numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=shuffle,
                                            blocksize=0, typesize=itemsize)


def zstd(level=0, checksum=False):
    return lambda itemsize: numcodecs.Zstd(level=level, checksum=checksum)


# name -> the chain in decode order: "crc32c", or a factory of a numcodecs codec (by item size)
CODECS = {
    "raw": (),
    "crc32c": ("crc32c",),
    "zstd": (zstd(),),
    "zstd-l5-checksum": (zstd(5, True),),
    "blosc-lz4-shuffle": (blosc("lz4", numcodecs.Blosc.SHUFFLE),),
    "blosc-lz4hc-bitshuffle": (blosc("lz4hc", numcodecs.Blosc.BITSHUFFLE),),
    "blosc-zstd-bitshuffle": (blosc("zstd", numcodecs.Blosc.BITSHUFFLE, 3),),
    "blosc-blosclz-noshuffle": (blosc("blosclz", numcodecs.Blosc.NOSHUFFLE),),
    "blosc-zlib-shuffle": (blosc("zlib", numcodecs.Blosc.SHUFFLE, 1),),
    "crc32c+zstd": ("crc32c", zstd(1)),
    "crc32c+crc32c+blosc": ("crc32c", "crc32c", blosc("lz4", numcodecs.Blosc.SHUFFLE)),
}


def chain(name, itemsize):
    """(steps for decode_chunks, the chain with codec objects)."""
    objs = tuple(s if s == "crc32c" else s(itemsize) for s in CODECS[name])
    steps = tuple(s if s == "crc32c" else s.codec_id for s in objs)
    return steps, objs


def crc_bytes(data) -> bytes:
    return int(google_crc32c.value(bytes(data))).to_bytes(4, "little")


def encode(raw: bytes, objs) -> bytes:
    """Encode one chunk the way zarr does: the chain's encoders in reverse decode order."""
    data = bytes(raw)
    for s in reversed(objs):
        data = data + crc_bytes(data) if s == "crc32c" else bytes(s.encode(data))
    return data


def decode_ref(stored: bytes, objs) -> bytes:
    """numcodecs' (and zarr's crc32c codec's) decode of one chunk."""
    data = bytes(stored)
    for s in objs:
        if s == "crc32c":
            assert crc_bytes(data[:-4]) == data[-4:]
            data = data[:-4]
        else:
            data = bytes(s.decode(data))
    return data


# ------------------------------------------------------------------------------------------------
# building shards and the numcodecs twin


def raw_chunk(rng, nbytes):
    """Chunk bytes: random (blosc stores them memcpyed), compressible, or constant."""
    kind = rng.integers(0, 3)
    if kind == 0:
        return rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    if kind == 1:
        return np.repeat(rng.integers(0, 6, nbytes // 3 + 1, dtype=np.uint8), 3)[:nbytes].tobytes()
    return bytes([int(rng.integers(0, 256))]) * nbytes


def make_shard(rng, cps, chunk_shape, itemsize, objs, *, empty_frac=0.0, n_groups=1,
               layout="random", lead=0, raw=raw_chunk):
    """(sources, locs, groups or None): the chunks (`raw(rng, nbytes)`) encoded, laid out in
    `n_groups` buffers.

    layout: "c" (C order, packed), "random" (random order, packed), "gaps" (random gaps).
    With several groups every chunk goes to a random buffer: the pipeline's coalesced reads.
    """
    cps = tuple(cps)
    n = int(np.prod(cps))
    cn = int(np.prod(chunk_shape)) * itemsize
    empty = rng.random(n) < empty_frac
    order = np.arange(n) if layout == "c" else rng.permutation(n)
    group = rng.integers(0, n_groups, n) if n_groups > 1 else np.zeros(n, np.int64)
    bufs = [bytearray(rng.integers(0, 256, lead, dtype=np.uint8).tobytes())
            for _ in range(n_groups)]
    locs = np.full((n, 2), EMPTY, dtype=np.uint64)
    for lin in order:
        if empty[lin]:
            continue
        buf = bufs[group[lin]]
        if layout == "gaps":
            buf += rng.integers(0, 256, int(rng.integers(0, 7)), dtype=np.uint8).tobytes()
        stored = encode(raw(rng, cn), objs)
        locs[lin] = (len(buf), len(stored))
        buf += stored
    for buf in bufs:
        buf += rng.integers(0, 256, int(rng.integers(0, 5)), dtype=np.uint8).tobytes()
    groups = group.astype(np.int32).reshape(cps) if n_groups > 1 else None
    return [bytes(b) for b in bufs], locs.reshape(cps + (2,)), groups


def touches(c, chunk_shape, region_start, box_shape):
    return all(i * s < a + b and (i + 1) * s > a
               for i, s, a, b in zip(c, chunk_shape, region_start, box_shape))


def twin(sources, locs, groups, objs, chunk_shape, dtype, region_start, box_shape, fill_value,
         swap_unit, only=None):
    """The box, decoded chunk by chunk with numcodecs and numpy: the reference result.

    `only`: the set of chunk coordinates to decode (others keep the fill value).
    """
    dtype = np.dtype(dtype)
    cps = locs.shape[:-1]
    shard_shape = tuple(c * s for c, s in zip(cps, chunk_shape))
    fill = np.frombuffer(fill_value if fill_value is not None else bytes(dtype.itemsize), dtype)
    full = np.empty(shard_shape, dtype)
    full[...] = fill[0]
    for c in np.ndindex(*cps):
        off, nb = (int(v) for v in locs[c])
        if off == MAX or not touches(c, chunk_shape, region_start, box_shape):
            continue
        if only is not None and c not in only:
            continue
        src = sources[int(groups[c]) if groups is not None else 0]
        raw = np.frombuffer(decode_ref(src[off : off + nb], objs), np.uint8)
        if swap_unit:
            raw = raw.reshape(-1, swap_unit)[:, ::-1].ravel()
        chunk = np.frombuffer(raw.tobytes(), dtype).reshape(chunk_shape)
        full[tuple(slice(i * s, (i + 1) * s) for i, s in zip(c, chunk_shape))] = chunk
    return full[tuple(slice(a, a + b) for a, b in zip(region_start, box_shape))]


def as_bytes(a):
    return np.ascontiguousarray(a).tobytes()


def make_out(box_shape, dtype, layout):
    """An output of `layout` inside a sentinel-filled buffer, plus the buffer and `out`'s mask."""
    dtype = np.dtype(dtype)
    box_shape = tuple(box_shape)
    if layout in ("C", "F"):
        big_shape, sl = box_shape, ()
    elif layout == "view":
        big_shape, sl = tuple(s + 3 for s in box_shape), tuple(slice(1, 1 + s) for s in box_shape)
    elif layout == "strided":
        big_shape = tuple(2 * s + 1 for s in box_shape)
        sl = tuple(slice(1, 1 + 2 * s, 2) for s in box_shape)
    elif layout == "reversed":
        big_shape, sl = tuple(s + 2 for s in box_shape), tuple(slice(s, 0, -1) for s in box_shape)
    else:
        raise AssertionError(layout)
    nbytes = int(np.prod(big_shape)) * dtype.itemsize
    buf = np.full(nbytes + 32, 0xA5, np.uint8)
    big = np.ndarray(big_shape, dtype, buffer=buf, offset=16, order="F" if layout == "F" else "C")
    out = big[sl]
    mask = np.zeros(buf.size, bool)
    if out.size:
        base = out.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
        offs = np.zeros(out.shape, np.int64) + base
        for k, (n, s) in enumerate(zip(out.shape, out.strides)):
            sh = [1] * out.ndim
            sh[k] = n
            offs = offs + (np.arange(n, dtype=np.int64) * s).reshape(sh)
        mask[(offs.ravel()[:, None] + np.arange(dtype.itemsize)).ravel()] = True
    return out, buf, mask


def check(sources, locs, groups, objs, steps, out, chunk_shape, region_start, fill_value,
          swap_unit, buf=None, mask=None, **kw):
    expected = twin(sources, locs, groups, objs, chunk_shape, out.dtype, region_start, out.shape,
                    fill_value, swap_unit)
    before = buf.copy() if buf is not None else None
    res = decode_chunks(sources, locs, out, steps=steps, chunk_shape=chunk_shape,
                        region_start=region_start, groups=groups, fill_value=fill_value,
                        swap_unit=swap_unit, **kw)
    assert res is None
    assert as_bytes(out) == as_bytes(expected)
    if buf is not None:
        assert np.array_equal(buf[~mask], before[~mask]), "wrote outside out"


def box_chunks(chunk_shape, region_start, box_shape):
    """The box's chunks in C order (the ordinals of first/last)."""
    if any(b == 0 for b in box_shape):
        return []
    ranges = [range(a // s, (a + b - 1) // s + 1)
              for s, a, b in zip(chunk_shape, region_start, box_shape)]
    return [tuple(r[i] for r, i in zip(ranges, idx))
            for idx in np.ndindex(*[len(r) for r in ranges])]


# ------------------------------------------------------------------------------------------------
# the libraries


def test_libraries_and_can_decode():
    libs = codec_libraries()
    assert set(libs) == {"zstd", "blosc"}
    assert "numcodecs" in libs["zstd"] and "libzstd 1." in libs["zstd"]
    assert "numcodecs" in libs["blosc"]
    libs["zstd"] = "changed"
    assert codec_libraries()["zstd"] != "changed"  # a copy
    for steps in [(), ("crc32c",), ("zstd",), ("blosc",), ("crc32c", "zstd"),
                  ["crc32c", "crc32c", "blosc"], ("crc32c",) * 8]:
        assert can_decode(steps), steps
    for steps in [("gzip",), ("zstd", "crc32c"), ("zstd", "blosc"), ("blosc", "blosc"),
                  ("crc32c",) * 9, ("bytes",)]:
        assert not can_decode(steps), steps


# ------------------------------------------------------------------------------------------------
# parametrized against the twin


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("swap", [False, True])
def test_codecs_and_dtypes(codec, dtype, swap):
    rng = np.random.default_rng(abs(hash((codec, dtype, swap))) % 2**32)
    dt = np.dtype(dtype)
    unit = DTYPES[dtype][-1] if swap else 0
    steps, objs = chain(codec, dt.itemsize)
    chunk_shape, cps = (4, 24), (3, 2)
    sources, locs, groups = make_shard(rng, cps, chunk_shape, dt.itemsize, objs, empty_frac=0.3)
    fill = rng.integers(0, 256, dt.itemsize, dtype=np.uint8).tobytes()
    for out_layout in ("C", "strided"):
        out, buf, mask = make_out((12, 48), dt, out_layout)
        check(sources, locs, groups, objs, steps, out, chunk_shape, (0, 0), fill, unit, buf, mask)
    out = np.empty((7, 30), dt, order="F")  # a sub-box cutting chunks, zero fill
    check(sources, locs, groups, objs, steps, out, chunk_shape, (3, 11), None, unit)


@pytest.mark.parametrize("codec", ["raw", "crc32c+zstd", "blosc-lz4-shuffle"])
@pytest.mark.parametrize("layout", ["C", "F", "view", "strided", "reversed"])
@pytest.mark.parametrize("box", ["whole", "sub", "edge", "one-column", "one-element"])
def test_layouts_and_boxes(codec, layout, box):
    rng = np.random.default_rng(abs(hash((codec, layout, box))) % 2**32)
    dt = np.dtype(">u4")
    steps, objs = chain(codec, dt.itemsize)
    chunk_shape, cps = (3, 5, 20), (2, 3, 2)
    shard_shape = tuple(c * s for c, s in zip(chunk_shape, cps))
    start, shape = {
        "whole": ((0, 0, 0), shard_shape),
        "sub": ((1, 4, 7), (4, 9, 30)),
        "edge": ((0, 0, 0), (5, 12, 33)),
        "one-column": ((2, 3, 17), (3, 8, 1)),
        "one-element": ((4, 11, 39), (1, 1, 1)),
    }[box]
    sources, locs, groups = make_shard(rng, cps, chunk_shape, dt.itemsize, objs, empty_frac=0.25,
                                       layout="gaps", lead=int(rng.integers(0, 40)))
    out, buf, mask = make_out(shape, dt, layout)
    check(sources, locs, groups, objs, steps, out, chunk_shape, start, b"\x01\x02\x03\x04", 4,
          buf, mask)
    check(sources, locs, groups, objs, steps, out, chunk_shape, start, None, 0, buf, mask)


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("codec", ["zstd", "crc32c+crc32c+blosc"])
def test_ndim(ndim, codec):
    rng = np.random.default_rng(ndim)
    chunk_shape = (3, 2, 4, 5)[:ndim]
    cps = (2, 3, 1, 2)[:ndim]
    steps, objs = chain(codec, 8)
    sources, locs, groups = make_shard(rng, cps, chunk_shape, 8, objs, empty_frac=0.3)
    shard_shape = tuple(c * s for c, s in zip(chunk_shape, cps))
    for order in "CF":
        out = np.empty(shard_shape, "f8", order=order)
        check(sources, locs, groups, objs, steps, out, chunk_shape, (0,) * ndim, None, 8)
    if ndim:  # a single element in the middle
        start = tuple(s // 2 for s in shard_shape)
        out = np.empty((1,) * ndim, "f8")
        check(sources, locs, groups, objs, steps, out, chunk_shape, start, None, 0)


def test_empty_chunks_and_nan_fill():
    rng = np.random.default_rng(5)
    steps, objs = chain("crc32c+zstd", 8)
    sources, locs, _ = make_shard(rng, (3, 3), (4, 4), 8, objs, empty_frac=0.5)
    assert (locs[..., 0] == EMPTY).any() and (locs[..., 0] != EMPTY).any()
    nan = b"\x01\x00\x00\x00\x00\x00\xf8\x7f"  # a quiet NaN with a payload: kept bit for bit
    out = np.zeros((12, 12), "f8")
    check(sources, locs, None, objs, steps, out, (4, 4), (0, 0), nan, 0)
    empty = locs[..., 0] == EMPTY
    blocks = out.reshape(3, 4, 3, 4).transpose(0, 2, 1, 3)
    assert as_bytes(blocks[empty]) == nan * (int(empty.sum()) * 16)
    # an all-empty shard reads no bytes at all (an empty source is fine)
    locs = np.full((3, 3, 2), EMPTY)
    out = np.zeros((5, 7), "f8")
    decode_chunks([b""], locs, out, steps=steps, chunk_shape=(4, 4), region_start=(3, 2),
                  fill_value=nan)
    assert as_bytes(out) == nan * 35
    # a zero-size box touches no chunk; first=last=0 is its only partition
    out = np.empty((0, 4), "f8")
    decode_chunks([b""], locs, out, steps=steps, chunk_shape=(4, 4), region_start=(2, 1))
    with pytest.raises(ValueError, match="outside"):
        decode_chunks([b""], locs, out, steps=steps, chunk_shape=(4, 4), region_start=(2, 1),
                      last=1)


@pytest.mark.parametrize("codec", ["zstd", "crc32c+crc32c+blosc", "raw"])
@pytest.mark.parametrize("n_groups", [2, 5])
def test_groups(codec, n_groups):
    rng = np.random.default_rng(n_groups)
    steps, objs = chain(codec, 2)
    cps, chunk_shape = (4, 5), (6, 7)
    sources, locs, groups = make_shard(rng, cps, chunk_shape, 2, objs, empty_frac=0.2,
                                       n_groups=n_groups, layout="gaps", lead=9)
    assert len(set(groups.ravel().tolist())) > 1
    out = np.empty((24, 35), "u2")
    check(sources, locs, groups, objs, steps, out, chunk_shape, (0, 0), b"\x03\x00", 2)
    out = np.empty((13, 20), "u2")
    check(sources, locs, groups, objs, steps, out, chunk_shape, (5, 6), None, 0)
    # sources as other buffer types; groups of another integer type are converted
    srcs = [bytearray(s) if i % 3 == 0 else memoryview(s) if i % 3 == 1
            else np.frombuffer(s, np.uint8) for i, s in enumerate(sources)]
    out = np.empty((24, 35), "u2")
    check(srcs, locs, groups.astype(np.int64), objs, steps, out, chunk_shape, (0, 0), None, 0)
    # without the table every chunk is looked for in sources[0]: wrong bytes, an error
    with pytest.raises(ZKernelsError):
        decode_chunks(sources, locs, np.empty((24, 35), "u2"), steps=steps,
                      chunk_shape=chunk_shape, region_start=(0, 0))


def _owner_ordinals(chunk_shape, region_start, box_shape):
    """For each element of the box, the ordinal of its chunk among the box's chunks."""
    lo = [a // s for s, a in zip(chunk_shape, region_start)]
    cnt = [(a + b - 1) // s + 1 - l for s, a, b, l in zip(chunk_shape, region_start, box_shape, lo)]
    idx = [(a + np.arange(b)) // s - l for s, a, b, l in zip(chunk_shape, region_start, box_shape,
                                                             lo)]
    grids = np.meshgrid(*idx, indexing="ij")
    return np.ravel_multi_index(grids, cnt), int(np.prod(cnt))


@pytest.mark.parametrize("codec", ["crc32c+zstd", "blosc-zstd-bitshuffle", "raw"])
@pytest.mark.parametrize("box", [((0, 0, 0), (8, 9, 10)), ((1, 2, 3), (6, 5, 6)),
                                 ((3, 4, 5), (1, 1, 1))])
def test_partitions(codec, box):
    rng = np.random.default_rng(17)
    steps, objs = chain(codec, 4)
    cps, chunk_shape = (4, 3, 5), (2, 3, 2)
    start, shape = box
    sources, locs, groups = make_shard(rng, cps, chunk_shape, 4, objs, empty_frac=0.25,
                                       n_groups=3)
    fill = b"\x09\x08\x07\x06"
    expected = twin(sources, locs, groups, objs, chunk_shape, "<i4", start, shape, fill, 0)
    owner, n_touched = _owner_ordinals(chunk_shape, start, shape)
    assert n_touched == len(box_chunks(chunk_shape, start, shape))
    kw = {"steps": steps, "chunk_shape": chunk_shape, "region_start": start, "groups": groups,
          "fill_value": fill}
    cuts = sorted({0, n_touched, *rng.integers(0, n_touched + 1, 3).tolist()})
    union = np.full(shape, -1, "<i4")
    for a, b in itertools.pairwise(cuts):
        part = np.full(shape, -1, "<i4")
        decode_chunks(sources, locs, part, first=a, last=b, **kw)
        mine = (owner >= a) & (owner < b)
        assert (part[~mine] == -1).all(), "a partition wrote outside its own chunks"
        assert np.array_equal(part[mine], expected[mine])
        decode_chunks(sources, locs, union, first=a, last=b, **kw)
    assert as_bytes(union) == as_bytes(expected)
    # every single-chunk partition, and the empty ones
    for a in range(n_touched + 1):
        part = np.full(shape, -1, "<i4")
        decode_chunks(sources, locs, part, first=a, last=a, **kw)
        assert (part == -1).all()
        if a < n_touched:
            decode_chunks(sources, locs, part, first=a, last=a + 1, **kw)
            assert np.array_equal(part[owner == a], expected[owner == a])
            assert (part[owner != a] == -1).all()
    # default last = all; first alone
    part = np.full(shape, -1, "<i4")
    decode_chunks(sources, locs, part, first=n_touched // 2, **kw)
    assert np.array_equal(part[owner >= n_touched // 2], expected[owner >= n_touched // 2])
    assert (part[owner < n_touched // 2] == -1).all()


def test_partition_skips_bad_chunks_of_other_partitions():
    rng = np.random.default_rng(18)
    steps, objs = chain("zstd", 1)
    sources, locs, _ = make_shard(rng, (1, 3), (4, 4), 1, objs)
    locs[0, 2, 0] = len(sources[0]) + 10  # bad, but only in ordinal 2
    out = np.zeros((4, 12), "u1")
    decode_chunks(sources, locs, out, steps=steps, chunk_shape=(4, 4), region_start=(0, 0),
                  first=0, last=2)
    with pytest.raises(ShardIndexError, match=r"inner chunk \(0, 2\)"):
        decode_chunks(sources, locs, out, steps=steps, chunk_shape=(4, 4), region_start=(0, 0),
                      first=1, last=3)
    # a box that does not touch the bad chunk does not read it
    decode_chunks(sources, locs, out[:, :8], steps=steps, chunk_shape=(4, 4), region_start=(0, 0))


def test_validate_false_skips_crc():
    rng = np.random.default_rng(19)
    for codec in ("crc32c", "crc32c+zstd", "crc32c+crc32c+blosc"):
        steps, objs = chain(codec, 2)
        sources, locs, _ = make_shard(rng, (2, 2), (8, 8), 2, objs, layout="c")
        expected = twin(sources, locs, None, objs, (8, 8), "u2", (0, 0), (16, 16), None, 0)
        bad = bytearray(sources[0])
        for c in np.ndindex(2, 2):  # flip every stored checksum (the last 4 bytes of a chunk)
            end = int(locs[c][0] + locs[c][1])
            bad[end - 2] ^= 0x5A
        out = np.empty((16, 16), "u2")
        decode_chunks([bytes(bad)], locs, out, steps=steps, chunk_shape=(8, 8),
                      region_start=(0, 0), validate=False)
        assert as_bytes(out) == as_bytes(expected)
        with pytest.raises(ChecksumError, match=r"inner chunk \(0, 0\): chunk crc32c mismatch"):
            decode_chunks([bytes(bad)], locs, out, steps=steps, chunk_shape=(8, 8),
                          region_start=(0, 0))
        with pytest.raises(ChecksumError):
            decode_chunks([bytes(bad)], locs, out, steps=steps, chunk_shape=(8, 8),
                          region_start=(0, 0), validate=True)


def test_zstd_frame_without_content_size():
    zstandard = pytest.importorskip("zstandard")
    rng = np.random.default_rng(20)
    data = (rng.integers(0, 50, (16, 16)) * 3).astype("<i8")
    frames = []
    for i in range(4):
        cctx = zstandard.ZstdCompressor(level=3, write_content_size=False, write_checksum=i % 2)
        frame = cctx.compress(data[(i // 2) * 8 : (i // 2 + 1) * 8,
                                   (i % 2) * 8 : (i % 2 + 1) * 8].tobytes())
        assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
        frames.append(frame)
    # streamed frames, too (content size unknown to the writer)
    sio = zstandard.ZstdCompressor(level=1).compressobj()
    frames[3] = sio.compress(data[8:, 8:].tobytes()) + sio.flush()
    assert zstandard.get_frame_parameters(frames[3]).content_size == zstandard.CONTENTSIZE_UNKNOWN
    shard = b"".join(frames)
    offs = np.cumsum([0] + [len(f) for f in frames])
    locs = np.array([[offs[i], len(frames[i])] for i in range(4)], np.uint64).reshape(2, 2, 2)
    out = np.empty((16, 16), ">i8")
    decode_chunks([shard], locs, out, steps=("zstd",), chunk_shape=(8, 8), region_start=(0, 0),
                  swap_unit=8)
    np.testing.assert_array_equal(out, data)


def test_buffer_types_and_locs_conversion():
    rng = np.random.default_rng(21)
    steps, objs = chain("blosc-lz4-shuffle", 4)
    sources, locs, _ = make_shard(rng, (2, 2), (4, 4), 4, objs)
    expected = twin(sources, locs, None, objs, (4, 4), "i4", (0, 0), (8, 8), None, 0)
    shard = sources[0]
    padded = shard + bytes(-len(shard) % 4)
    for buf in (bytearray(shard), memoryview(shard), np.frombuffer(shard, np.uint8),
                np.frombuffer(padded, np.uint32), memoryview(np.frombuffer(padded, np.uint32))):
        out = np.empty((8, 8), "i4")
        decode_chunks([buf], locs, out, steps=steps, chunk_shape=(4, 4), region_start=(0, 0))
        assert as_bytes(out) == as_bytes(expected)
    # sources as a tuple; locs non-contiguous (F order): converted
    out = np.empty((8, 8), "i4")
    decode_chunks((shard,), np.asfortranarray(locs), out, steps=list(steps), chunk_shape=[4, 4],
                  region_start=[0, 0])
    assert as_bytes(out) == as_bytes(expected)
    out = np.empty((8, 8), "i4")
    decode_chunks([shard], locs, out, steps=steps, chunk_shape=(4, 4), region_start=(0, 0),
                  fill_value=np.array(5, "i4"))
    assert as_bytes(out) == as_bytes(expected)


def test_threads_share_one_output():
    """Two threads decode the two halves of one box at once (each with its own zstd context)."""
    rng = np.random.default_rng(22)
    steps, objs = chain("crc32c+zstd", 2)
    cps, chunk_shape = (8, 8), (32, 32)
    sources, locs, groups = make_shard(rng, cps, chunk_shape, 2, objs, n_groups=2)
    expected = twin(sources, locs, groups, objs, chunk_shape, "u2", (0, 0), (256, 256), None, 0)
    for _ in range(3):
        out = np.zeros((256, 256), "u2")
        kw = {"steps": steps, "chunk_shape": chunk_shape, "region_start": (0, 0),
              "groups": groups}
        ts = [threading.Thread(target=decode_chunks, args=(sources, locs, out),
                               kwargs={**kw, "first": a, "last": b})
              for a, b in ((0, 32), (32, 64))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert as_bytes(out) == as_bytes(expected)


# ------------------------------------------------------------------------------------------------
# hypothesis against the twin


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 4))
    chunk_shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    cps = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(list(DTYPES)))
    shard_shape = [c * s for c, s in zip(chunk_shape, cps)]
    start, shape = [], []
    for n in shard_shape:
        a = draw(st.integers(0, n))
        b = draw(st.integers(a, n))
        start.append(a)
        shape.append(b - a)
    return {
        "chunk_shape": chunk_shape,
        "cps": cps,
        "dtype": dtype,
        "unit": draw(st.sampled_from(DTYPES[dtype])),
        "codec": draw(st.sampled_from(list(CODECS))),
        "start": tuple(start),
        "shape": tuple(shape),
        "layout": draw(st.sampled_from(["C", "F", "view", "strided", "reversed"])),
        "shard_layout": draw(st.sampled_from(["c", "random", "gaps"])),
        "n_groups": draw(st.sampled_from([1, 1, 2, 3])),
        "empty_frac": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "fill": draw(st.booleans()),
        "partition": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=120, deadline=None)
@given(cases())
def test_hypothesis_vs_twin(case):
    rng = np.random.default_rng(case["seed"])
    dt = np.dtype(case["dtype"])
    steps, objs = chain(case["codec"], dt.itemsize)
    sources, locs, groups = make_shard(rng, case["cps"], case["chunk_shape"], dt.itemsize, objs,
                                       empty_frac=case["empty_frac"], n_groups=case["n_groups"],
                                       layout=case["shard_layout"], lead=int(rng.integers(0, 5)))
    out, buf, mask = make_out(case["shape"], dt, case["layout"])
    fill = rng.integers(0, 256, dt.itemsize, dtype=np.uint8).tobytes() if case["fill"] else None
    args = (sources, locs, groups, objs, steps)
    if not case["partition"]:
        check(*args, out, case["chunk_shape"], case["start"], fill, case["unit"], buf, mask)
        return
    # two partitions, in reverse order: together they make the whole box
    n = len(box_chunks(case["chunk_shape"], case["start"], case["shape"]))
    cut = int(rng.integers(0, n + 1))
    kw = {"steps": steps, "chunk_shape": case["chunk_shape"], "region_start": case["start"],
          "groups": groups, "fill_value": fill, "swap_unit": case["unit"]}
    before = buf.copy()
    decode_chunks(sources, locs, out, first=cut, last=n, **kw)
    decode_chunks(sources, locs, out, first=0, last=cut, **kw)
    expected = twin(*args[:4], case["chunk_shape"], dt, case["start"], case["shape"], fill,
                    case["unit"])
    assert as_bytes(out) == as_bytes(expected)
    assert np.array_equal(buf[~mask], before[~mask]), "wrote outside out"


# ------------------------------------------------------------------------------------------------
# against zarr


def shard_bytes(store, key):
    return store._store_dict[key].to_bytes()


ZARR_CHAINS = {
    # name: (bytes-to-bytes codecs in zarr's (encode) order, decode steps)
    "zstd": ([ZstdCodec(level=3)], ("zstd",)),
    "zstd+crc32c": ([ZstdCodec(level=1, checksum=True), Crc32cCodec()], ("crc32c", "zstd")),
    "blosc-lz4": ([BloscCodec(cname="lz4", clevel=5)], ("blosc",)),  # shuffle: zarr's pick
    "blosc-zstd-bitshuffle+crc32c+crc32c": (
        [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec(), Crc32cCodec()],
        ("crc32c", "crc32c", "blosc")),
    "crc32c": ([Crc32cCodec()], ("crc32c",)),
}


@pytest.mark.parametrize("chain_name", list(ZARR_CHAINS))
@pytest.mark.parametrize("endian,index_location", [("little", "end"), ("big", "start")])
@pytest.mark.parametrize("dtype", ["u2", "f8", "c16"])
def test_against_zarr(chain_name, endian, index_location, dtype):
    rng = np.random.default_rng(8)
    shape, shard, inner = (45, 70), (16, 32), (8, 16)  # edge shards cut chunks
    dt = np.dtype(dtype)
    codecs, steps = ZARR_CHAINS[chain_name]
    store = zarr.storage.MemoryStore()
    fill = 3
    arr = zarr.create_array(
        store=store, shape=shape, chunks=shard, dtype=dt, fill_value=fill, compressors=None,
        serializer=ShardingCodec(chunk_shape=inner,
                                 codecs=[BytesCodec(endian=endian), *codecs],
                                 index_location=index_location),
        config={"write_empty_chunks": False},
    )
    data = (rng.integers(0, 40, shape) * 7).astype(dt)
    data[:8, :16] = fill  # some empty inner chunks
    data[24:40, 32:48] = fill
    arr[:] = data
    stored = dt.newbyteorder("<" if endian == "little" else ">")
    swap = 0 if stored.isnative or dt.itemsize == 1 else (dt.itemsize // 2 if dt.kind == "c"
                                                          else dt.itemsize)
    cps = (shard[0] // inner[0], shard[1] // inner[1])
    nbi = shard_index_nbytes(int(np.prod(cps)))
    fill_bytes = np.array(fill, dt).tobytes()
    got = np.full(shape, 77, dt)
    n_empty = 0
    for si in range(-(-shape[0] // shard[0])):
        for sj in range(-(-shape[1] // shard[1])):
            key = f"c/{si}/{sj}"
            raw = shard_bytes(store, key)
            idx_raw = raw[:nbi] if index_location == "start" else raw[-nbi:]
            locs = parse_shard_index(idx_raw, cps, shard_nbytes=len(raw),
                                     index_location=index_location)
            n_empty += int((locs[..., 0] == EMPTY).sum())
            r0, c0 = si * shard[0], sj * shard[1]
            box = got[r0 : r0 + shard[0], c0 : c0 + shard[1]]
            # the edge shards: only the part inside the array
            decode_chunks([raw], locs, box, steps=steps, chunk_shape=inner, region_start=(0, 0),
                          fill_value=fill_bytes, swap_unit=swap)
            # a sub-box into an F-ordered output, in two partitions
            sub = np.empty((min(5, box.shape[0] - 2), min(19, box.shape[1] - 3)), dt, order="F")
            n = len(box_chunks(inner, (2, 3), sub.shape))
            kw = {"steps": steps, "chunk_shape": inner, "region_start": (2, 3),
                  "fill_value": fill_bytes, "swap_unit": swap}
            decode_chunks([raw], locs, sub, first=0, last=n // 2, **kw)
            decode_chunks([raw], locs, sub, first=n // 2, last=n, **kw)
            np.testing.assert_array_equal(sub, arr[r0 + 2 : r0 + 2 + sub.shape[0],
                                                   c0 + 3 : c0 + 3 + sub.shape[1]])
    assert n_empty >= 3
    np.testing.assert_array_equal(got, arr[:])
    np.testing.assert_array_equal(got, data)


# ------------------------------------------------------------------------------------------------
# corrupted input: our errors, naming the chunk

_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def guarded(data: bytes) -> np.ndarray:
    """`data` in a buffer that ends where an inaccessible page begins: a read past it crashes."""
    n = len(data)
    pages = -(-n // _PAGE) or 1
    m = mmap.mmap(-1, (pages + 1) * _PAGE)
    arr = np.frombuffer(m, np.uint8)
    assert _libc.mprotect(arr.ctypes.data + pages * _PAGE, _PAGE, 0) == 0  # PROT_NONE
    view = arr[pages * _PAGE - n : pages * _PAGE]
    view[:] = np.frombuffer(data, np.uint8)
    return view


def one_chunk(stored, steps, *, chunk_shape=(4, 6), dtype="u2", guard=True, validate=True,
              at=(1, 2)):
    """Decode a (2, 3)-chunk shard whose chunk `at` is `stored` (the others empty)."""
    locs = np.full((2, 3, 2), EMPTY)
    locs[at] = (0, len(stored))
    out = np.full((2 * chunk_shape[0], 3 * chunk_shape[1]), 0x5A, dtype)
    src = guarded(stored) if guard else stored
    decode_chunks([src], locs, out, steps=steps, chunk_shape=chunk_shape, region_start=(0, 0),
                  validate=validate)
    return out


def raw24(seed=0, dtype="u2"):
    return (np.random.default_rng(seed).integers(0, 9, (4, 6))).astype(dtype).tobytes()


def test_guarded_helper_works():
    out = one_chunk(raw24(), ())
    assert as_bytes(out[4:, 12:]) == raw24()
    out = one_chunk(encode(raw24(), chain("crc32c+zstd", 2)[1]), ("crc32c", "zstd"))
    assert as_bytes(out[4:, 12:]) == raw24()


def _zstd(data, **kw):
    return bytes(numcodecs.Zstd(level=1, **kw).encode(data))


def _blosc(data, cname="lz4", shuffle=1, typesize=2):
    return bytes(numcodecs.Blosc(cname=cname, shuffle=shuffle, typesize=typesize).encode(data))


def corrupt_cases():
    """(name, stored bytes of chunk (1, 2), steps, exception, message)."""
    zstandard = pytest.importorskip("zstandard")
    raw = raw24()
    cases = []
    good_crc = raw + crc_bytes(raw)
    bad = bytearray(good_crc)
    bad[5] ^= 1
    cases.append(("bad-crc", bytes(bad), ("crc32c",), ChecksumError, "crc32c mismatch"))
    bad = bytearray(good_crc)
    bad[-1] ^= 0x80
    cases.append(("bad-crc-stored", bytes(bad), ("crc32c",), ChecksumError, "stored 0x"))
    two = good_crc + crc_bytes(good_crc)
    bad = bytearray(two)
    bad[-5] ^= 1  # the inner checksum is wrong, the outer one (over it) fixed up
    bad = bytes(bad[:-4]) + crc_bytes(bad[:-4])
    cases.append(("bad-inner-crc", bad, ("crc32c", "crc32c"), ChecksumError, "mismatch"))
    for n in (0, 1, 3):
        cases.append((f"crc-short-{n}", b"\x01" * n, ("crc32c",), CorruptChunkError,
                      f"chunk of {n} bytes is too short"))
    cases.append(("crc-then-short", crc_bytes(b""), ("crc32c", "crc32c"), CorruptChunkError,
                  "chunk of 0 bytes is too short"))
    cases.append(("raw-short", raw[:-1], (), CorruptChunkError, "decodes to 47 bytes, expected 48"))
    cases.append(("raw-long", raw + b"\x00", (), CorruptChunkError, "decodes to 49 bytes"))
    cases.append(("crc-wrong-size", raw[:-2] + crc_bytes(raw[:-2]), ("crc32c",),
                  CorruptChunkError, "decodes to 46 bytes, expected 48"))
    # zstd
    cases.append(("zstd-garbage", bytes(range(7, 107)), ("zstd",), CorruptChunkError,
                  "could not decode: zstd: "))
    cases.append(("zstd-empty", b"", ("zstd",), CorruptChunkError, "decodes to 0 bytes"))
    frame = _zstd(raw)
    cases.append(("zstd-truncated", frame[:-3], ("zstd",), CorruptChunkError, "zstd"))
    cases.append(("zstd-larger", _zstd(raw + b"\x00\x01"), ("zstd",), CorruptChunkError,
                  "decodes to 50 bytes, expected 48"))
    cases.append(("zstd-smaller", _zstd(raw[:40]), ("zstd",), CorruptChunkError,
                  "decodes to 40 bytes, expected 48"))
    nocs = zstandard.ZstdCompressor(write_content_size=False)
    cases.append(("zstd-larger-no-size", nocs.compress(raw + raw), ("zstd",), CorruptChunkError,
                  "zstd: Destination buffer is too small"))
    cases.append(("zstd-smaller-no-size", nocs.compress(raw[:30]), ("zstd",), CorruptChunkError,
                  "decodes to 30 bytes, expected 48"))
    bad = bytearray(_zstd(raw, checksum=True))
    bad[-1] ^= 1  # the frame's own checksum
    cases.append(("zstd-frame-checksum", bytes(bad), ("zstd",), CorruptChunkError,
                  "zstd: Restored data doesn't match checksum"))
    cases.append(("zstd-2-bytes", frame[:2], ("zstd",), CorruptChunkError, "zstd"))
    # blosc
    for cname, shuffle in (("lz4", 1), ("zstd", 2), ("blosclz", 0)):
        blob = _blosc(raw, cname, shuffle)
        for cut in sorted({len(blob) - 1, len(blob) - 7, len(blob) // 2, 17, 16}):
            cases.append((f"blosc-{cname}-truncated-{cut}", blob[:cut], ("blosc",),
                          CorruptChunkError, "blosc: bad header"))
        for cut in (0, 1, 15):
            cases.append((f"blosc-{cname}-short-{cut}", blob[:cut], ("blosc",),
                          CorruptChunkError, "blosc: bad header"))
        cb = bytearray(blob)
        cb[12:16] = (len(blob) + 1).to_bytes(4, "little")  # header cbytes past the bytes given
        cases.append((f"blosc-{cname}-cbytes-past-end", bytes(cb), ("blosc",),
                      CorruptChunkError, "blosc: bad header"))
        cb[12:16] = (15).to_bytes(4, "little")  # cbytes shorter than the header
        cases.append((f"blosc-{cname}-cbytes-tiny", bytes(cb), ("blosc",), CorruptChunkError,
                      "blosc: bad header"))
        nb = bytearray(blob)
        nb[4:8] = (50).to_bytes(4, "little")  # header nbytes: a different chunk size
        cases.append((f"blosc-{cname}-nbytes-50", bytes(nb), ("blosc",), CorruptChunkError,
                      "decodes to 50 bytes, expected 48"))
        nb[4:8] = (2**31).to_bytes(4, "little")
        cases.append((f"blosc-{cname}-nbytes-huge", bytes(nb), ("blosc",), CorruptChunkError,
                      f"decodes to -?{2**31} bytes"))  # the sign: see test_blosc_nbytes_unsigned
    cases.append(("blosc-larger", _blosc(raw + raw), ("blosc",), CorruptChunkError,
                  "decodes to 96 bytes, expected 48"))
    cases.append(("blosc-smaller", _blosc(raw[:32]), ("blosc",), CorruptChunkError,
                  "decodes to 32 bytes, expected 48"))
    cases.append(("blosc-garbage", bytes(range(200, 250)), ("blosc",), CorruptChunkError,
                  "blosc"))
    # a chain: the crc is checked before the decompressor sees anything
    blob = _blosc(raw)
    cases.append(("crc+blosc-truncated", blob[:-2] + crc_bytes(blob[:-2]), ("crc32c", "blosc"),
                  CorruptChunkError, "blosc: bad header"))
    cases.append(("crc+blosc-bad-crc", blob + crc_bytes(blob[1:]), ("crc32c", "blosc"),
                  ChecksumError, "crc32c mismatch"))
    return cases


CORRUPT = corrupt_cases()


@pytest.mark.parametrize("name,stored,steps,exc,msg", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupted_chunk(name, stored, steps, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        one_chunk(stored, steps)  # guarded: reading past `stored` would crash
    assert isinstance(info.value, ZKernelsError) and isinstance(info.value, ValueError)
    assert "inner chunk (1, 2)" in str(info.value)


def test_blosc_nbytes_unsigned():
    blob = bytearray(_blosc(raw24()))
    blob[4:8] = (2**31 + 5).to_bytes(4, "little")
    with pytest.raises(CorruptChunkError, match=f"chunk decodes to {2**31 + 5} bytes"):
        one_chunk(bytes(blob), ("blosc",))


def test_blosc_cbytes_bounds_the_read():
    """A blosc chunk whose header claims more bytes than given is refused before blosc runs:
    with the bytes placed right before an inaccessible page, a read past them would crash."""
    raw = (np.arange(512) % 7).astype("u2").tobytes()
    blob = _blosc(raw, "lz4", 1)
    for cut in range(16, len(blob)):
        locs = np.full((1, 1, 2), EMPTY)
        locs[0, 0] = (0, cut)
        with pytest.raises(CorruptChunkError, match=r"inner chunk \(0, 0\).*blosc: bad header"):
            decode_chunks([guarded(blob[:cut])], locs, np.empty((1, 512), "u2"), steps=("blosc",),
                          chunk_shape=(1, 512), region_start=(0, 0))
    # the whole blob, guarded: decodes
    locs[0, 0] = (0, len(blob))
    out = np.empty((1, 512), "u2")
    decode_chunks([guarded(blob)], locs, out, steps=("blosc",), chunk_shape=(1, 512),
                  region_start=(0, 0))
    assert out.tobytes() == raw


def test_zstd_truncations_are_errors():
    raw = (np.arange(300) % 11).astype("<u8").tobytes()
    frame = _zstd(raw)
    locs = np.full((1, 2), EMPTY)
    for cut in range(len(frame)):
        locs[0] = (0, cut)
        with pytest.raises(CorruptChunkError, match=r"inner chunk \(0,\)"):
            decode_chunks([guarded(frame[:cut])], locs, np.empty(300, "<u8"), steps=("zstd",),
                          chunk_shape=(300,), region_start=(0,))


def test_crc_validate_false_still_strips_and_checks_length():
    raw = raw24()
    bad = raw + b"\x00\x00\x00\x00"  # a wrong checksum: ignored, but still 4 bytes stripped
    out = one_chunk(bad, ("crc32c",), validate=False)
    assert as_bytes(out[4:, 12:]) == raw
    with pytest.raises(CorruptChunkError, match="too short"):
        one_chunk(b"\x00\x00\x00", ("crc32c",), validate=False)
    with pytest.raises(CorruptChunkError, match="decodes to 44 bytes"):
        one_chunk(raw, ("crc32c",), validate=False)


def index_cases():
    rng = np.random.default_rng(30)
    _, objs = chain("crc32c+zstd", 2)
    sources, locs, _ = make_shard(rng, (2, 3), (4, 5), 2, objs, layout="c")
    src = sources[0]
    c = (1, 1)
    n = len(src)
    cases = []
    bad = locs.copy()
    bad[c][1] = EMPTY
    cases.append(("half-empty-nbytes", [src], bad, None, ShardIndexError, "half-empty"))
    bad = locs.copy()
    bad[c][0] = EMPTY
    cases.append(("half-empty-offset", [src], bad, None, ShardIndexError, "half-empty"))
    bad = locs.copy()
    bad[c][0] = n - int(bad[c][1]) + 1
    cases.append(("offset-past-end", [src], bad, None, ShardIndexError,
                  f"past the end of its {n}-byte buffer"))
    bad = locs.copy()
    bad[c][1] = n - int(bad[c][0]) + 1
    cases.append(("nbytes-past-end", [src], bad, None, ShardIndexError, "past the end"))
    bad = locs.copy()
    bad[c] = (n + 5, 0)
    cases.append(("empty-range-past-end", [src], bad, None, ShardIndexError, "past the end"))
    bad = locs.copy()
    bad[c][0] = 2**64 - 20
    cases.append(("offset-overflow", [src], bad, None, ShardIndexError, "past the end"))
    bad = locs.copy()
    bad[c] = (8, 2**64 - 9)
    cases.append(("nbytes-overflow", [src], bad, None, ShardIndexError, "past the end"))
    cases.append(("truncated-source", [src[: int(locs[c][0]) + 3]], locs, None, ShardIndexError,
                  "past the end"))
    groups = np.zeros((2, 3), np.int32)
    groups[c] = 1
    small = b"\x00" * 10
    cases.append(("past-end-of-group", [src, small], locs, groups, ShardIndexError,
                  "past the end of its 10-byte buffer"))
    for g in (2, -1):
        groups = np.zeros((2, 3), np.int32)
        groups[c] = g
        cases.append((f"group-{g}", [src, src], locs, groups, ValueError,
                      "source number out of range"))
    return cases


INDEX = index_cases()


@pytest.mark.parametrize("name,sources,locs,groups,exc,msg", INDEX, ids=[c[0] for c in INDEX])
def test_bad_index_entries(name, sources, locs, groups, exc, msg):
    out = np.zeros((8, 15), "u2")
    with pytest.raises(exc, match=msg) as info:
        decode_chunks(sources, locs, out, steps=("crc32c", "zstd"), chunk_shape=(4, 5),
                      region_start=(0, 0), groups=groups)
    assert "inner chunk (1, 1)" in str(info.value)
    if exc is ShardIndexError:
        assert isinstance(info.value, ValueError)


def test_argument_errors():
    rng = np.random.default_rng(31)
    steps, objs = chain("zstd", 2)
    sources, locs, _ = make_shard(rng, (2, 2), (4, 4), 2, objs)
    out = np.empty((8, 8), "u2")
    kw = {"steps": steps, "chunk_shape": (4, 4), "region_start": (0, 0)}
    for bad in (locs.astype(np.int64), locs.astype(">u8"), locs[..., :1], locs.reshape(2, 4),
                locs.reshape(-1)[:3], locs.tolist()):
        with pytest.raises(ShardIndexError, match="locs must be a uint64 array"):
            decode_chunks(sources, bad, out, **kw)
    with pytest.raises(ValueError, match="dimensions disagree"):
        decode_chunks(sources, locs[0], out, **kw)
    with pytest.raises(ValueError, match=r"groups has shape \(2, 3\), expected \(2, 2\)"):
        decode_chunks(sources, locs, out, groups=np.zeros((2, 3), np.int32), **kw)
    with pytest.raises(ValueError, match="groups has shape"):
        decode_chunks(sources, locs, out, groups=np.zeros(4, np.int32), **kw)
    for first, last in ((-1, 4), (0, 5), (3, 2), (5, 5), (0, -1)):
        with pytest.raises(ValueError, match=r"chunk ordinals .* outside \[0, 4\)"):
            decode_chunks(sources, locs, out, first=first, last=last, **kw)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        decode_chunks(sources, locs, out[:2, :2], first=0, last=2, **kw)
    with pytest.raises(TypeError):
        decode_chunks(sources, locs, out, first=1.5, **kw)
    with pytest.raises(ValueError, match="crc32c after the decompressor"):
        decode_chunks(sources, locs, out, **{**kw, "steps": ("zstd", "crc32c")})
    for two in (("zstd", "blosc"), ("blosc", "zstd"), ("zstd", "zstd")):
        with pytest.raises(ValueError, match="at most one decompressor"):
            decode_chunks(sources, locs, out, **{**kw, "steps": two})
    with pytest.raises(ValueError, match="at most 8 steps"):
        decode_chunks(sources, locs, out, **{**kw, "steps": ("crc32c",) * 9})
    with pytest.raises(ValueError, match="no sources"):
        decode_chunks([], locs, out, **kw)
    with pytest.raises(TypeError):
        decode_chunks([np.frombuffer(sources[0], np.uint8)[::2]], locs, out, **kw)
    with pytest.raises(ValueError, match="outside the shard"):
        decode_chunks(sources, locs, out, chunk_shape=(4, 4), region_start=(1, 0), steps=steps)
    with pytest.raises(ValueError, match="fill_value has 1 bytes"):
        decode_chunks(sources, locs, out, fill_value=b"\x00", **kw)
    with pytest.raises(ValueError, match="swap_unit"):
        decode_chunks(sources, locs, out, swap_unit=4, **kw)
    ro = np.empty((8, 8), "u2")
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        decode_chunks(sources, locs, ro, **kw)
    with pytest.raises(TypeError, match="plain data"):
        decode_chunks(sources, locs, np.empty((8, 8), object), **kw)


def test_unknown_step_is_a_value_error():
    rng = np.random.default_rng(32)
    sources, locs, _ = make_shard(rng, (2, 2), (4, 4), 2, ())
    with pytest.raises(ValueError, match="gzip"):
        decode_chunks(sources, locs, np.empty((8, 8), "u2"), steps=("gzip",), chunk_shape=(4, 4),
                      region_start=(0, 0))


def test_unknown_step_is_refused():
    rng = np.random.default_rng(32)
    sources, locs, _ = make_shard(rng, (2, 2), (4, 4), 2, ())
    out = np.full((8, 8), 7, "u2")
    with pytest.raises((LookupError, ValueError)):  # KeyError today, ValueError once fixed
        decode_chunks(sources, locs, out, steps=("gzip",), chunk_shape=(4, 4),
                      region_start=(0, 0))
    assert (out == 7).all()


def test_error_leaves_later_chunks_unwritten():
    """Chunks are decoded in C order; the error stops the call at the bad chunk."""
    rng = np.random.default_rng(33)
    steps, objs = chain("crc32c+zstd", 1)
    sources, locs, _ = make_shard(rng, (2, 2), (4, 4), 1, objs, layout="c")
    bad = bytearray(sources[0])
    bad[int(locs[0, 1, 0])] ^= 1
    out = np.zeros((8, 8), "u1")
    with pytest.raises(ChecksumError, match=r"inner chunk \(0, 1\)"):
        decode_chunks([bytes(bad)], locs, out, steps=steps, chunk_shape=(4, 4),
                      region_start=(0, 0), fill_value=b"\x01")
    expected = twin(sources, locs, None, objs, (4, 4), "u1", (0, 0), (8, 8), None, 0)
    assert np.array_equal(out[:4, :4], expected[:4, :4])
    assert (out[:, 4:] == 0).all() and (out[4:] == 0).all()


# ------------------------------------------------------------------------------------------------
# the GIL is released: counted, not timed


def test_releases_gil():
    rng = np.random.default_rng(3)
    cps, chunk_shape = (16, 16), (128, 128)  # 32 MiB of float64, zstd-compressed
    objs = (numcodecs.Zstd(level=1),)
    data = rng.integers(0, 1000, (2048, 2048)).astype("<f8")
    blocks = data.reshape(16, 128, 16, 128).transpose(0, 2, 1, 3).reshape(256, 128, 128)
    stored = [encode(b.tobytes(), objs) for b in blocks]
    offs = np.cumsum([0] + [len(s) for s in stored])
    locs = np.stack([offs[:-1], [len(s) for s in stored]], axis=1).astype(np.uint64)
    shard = b"".join(stored)
    out = np.empty((2048, 2048), ">f8")
    started = threading.Event()
    done = threading.Event()

    def work():
        started.set()
        decode_chunks([shard], locs.reshape(cps + (2,)), out, steps=("zstd",),
                      chunk_shape=chunk_shape, region_start=(0, 0), swap_unit=8)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    count = 0
    while not done.is_set():
        count += 1
    t.join()
    np.testing.assert_array_equal(out, data)
    # One call of tens of milliseconds and no bytecode around it in the worker: with the GIL
    # released the main thread spins freely (hundreds of thousands of iterations); holding it, the
    # main thread would be blocked from the call's start to its end and count next to nothing.
    assert count > 10_000, count


# ------------------------------------------------------------------------------------------------
# list mode (coordinate selections): listed chunks decoded whole, one slot each


@pytest.mark.parametrize("codec", ["raw", "zstd", "crc32c+zstd", "blosc-lz4-shuffle"])
@pytest.mark.parametrize("swap", [False, True])
def test_list_mode_vs_twin(codec, swap):
    rng = np.random.default_rng(11)
    dt = np.dtype("f8")
    unit = 8 if swap else 0
    steps, objs = chain(codec, dt.itemsize)
    chunk_shape, cps = (4, 6), (3, 5)
    sources, locs, groups = make_shard(rng, cps, chunk_shape, dt.itemsize, objs, empty_frac=0.3,
                                       n_groups=2)
    fill = np.float64(np.nan).tobytes()
    full = twin(sources, locs, groups, objs, chunk_shape, dt, (0, 0), (12, 30), fill, unit)
    chunks = np.array([7, 0, 14, 7, 3], dtype=np.int64)  # any order, repeats allowed
    out = np.full((len(chunks), *chunk_shape), 99.0, dt)
    decode_chunks(sources, locs, out, steps=steps, chunk_shape=chunk_shape, region_start=(),
                  groups=groups, fill_value=fill, swap_unit=unit, chunks=chunks)
    for i, lin in enumerate(chunks):
        r, c = np.unravel_index(lin, cps)
        want = full[r * 4 : r * 4 + 4, c * 6 : c * 6 + 6]
        np.testing.assert_array_equal(out[i], want)  # NaN == NaN here: the fill of empty chunks


def test_list_mode_partitions_write_only_their_slots():
    rng = np.random.default_rng(12)
    steps, objs = chain("zstd", 2)
    sources, locs, groups = make_shard(rng, (4, 4), (3, 5), 2, objs)
    chunks = np.arange(16)[::-1].copy()
    whole = np.empty((16, 3, 5), "u2")
    decode_chunks(sources, locs, whole, steps=steps, chunk_shape=(3, 5), region_start=(),
                  chunks=chunks)
    part = np.zeros_like(whole)
    decode_chunks(sources, locs, part, steps=steps, chunk_shape=(3, 5), region_start=(),
                  chunks=chunks, first=5, last=11)
    np.testing.assert_array_equal(part[5:11], whole[5:11])
    assert not part[:5].any() and not part[11:].any()


def test_list_mode_errors():
    rng = np.random.default_rng(13)
    steps, objs = chain("zstd", 2)
    sources, locs, groups = make_shard(rng, (2, 2), (3, 5), 2, objs)
    kw = dict(steps=steps, chunk_shape=(3, 5), region_start=())
    with pytest.raises(ValueError, match="chunk numbers"):
        decode_chunks(sources, locs, np.empty((1, 3, 5), "u2"), chunks=[4], **kw)
    with pytest.raises(ValueError, match="C-contiguous of shape"):
        decode_chunks(sources, locs, np.empty((2, 3, 5), "u2"), chunks=[1], **kw)
    with pytest.raises(ValueError, match="C-contiguous of shape"):
        decode_chunks(sources, locs, np.empty((2, 5, 3), "u2").transpose(0, 2, 1), chunks=[0, 1],
                      **kw)
    bad = bytearray(sources[0])
    off, nb = (int(v) for v in locs[1, 0])
    bad[off + nb // 2] ^= 0xFF
    with pytest.raises(ZKernelsError, match=r"inner chunk \(1, 0\)"):
        decode_chunks([bytes(bad)], locs, np.empty((2, 3, 5), "u2"), chunks=[0, 2], **kw)


# ------------------------------------------------------------------------------------------------
# subset mode: some of the box's chunks, each into its own place (a shard decoded piece by piece)


@pytest.mark.parametrize("codec", ["raw", "zstd", "crc32c+zstd", "blosc-lz4-shuffle"])
@pytest.mark.parametrize("layout", ["C", "strided", "reversed"])
@pytest.mark.parametrize("box", [((0, 0, 0), (8, 9, 10)), ((1, 2, 3), (6, 5, 6))])
def test_subset_mode_pieces_make_the_whole(codec, layout, box):
    rng = np.random.default_rng(21)
    steps, objs = chain(codec, 2)
    cps, chunk_shape = (4, 3, 5), (2, 3, 2)
    start, shape = box
    sources, locs, groups = make_shard(rng, cps, chunk_shape, 2, objs, empty_frac=0.25,
                                       n_groups=3)
    fill = b"\x07\x09"
    expected = twin(sources, locs, groups, objs, chunk_shape, "<u2", start, shape, fill, 2)
    kw = {"steps": steps, "chunk_shape": chunk_shape, "region_start": start, "groups": groups,
          "fill_value": fill, "swap_unit": 2}
    lins = np.array([np.ravel_multi_index(c, cps) for c in box_chunks(chunk_shape, start, shape)])
    pieces = np.array_split(rng.permutation(lins), 4)  # any order, any split
    out, buf, mask = make_out(shape, "<u2", layout)
    before = buf.copy()
    owner = np.full(shape, -1)
    for c in box_chunks(chunk_shape, start, shape):
        sl = tuple(slice(max(i * s - a, 0), min((i + 1) * s - a, n))
                   for i, s, a, n in zip(c, chunk_shape, start, shape))
        owner[sl] = np.ravel_multi_index(c, cps)
    done = np.zeros(shape, bool)
    for piece in pieces:
        decode_chunks(sources, locs, out, subset=piece, **kw)
        done |= np.isin(owner, piece)
        # the chunks of this and earlier pieces are decoded; the others untouched (sentinel)
        assert as_bytes(out[done]) == as_bytes(expected[done])
        assert (np.ascontiguousarray(out).view(np.uint8).reshape(*shape, 2)[~done] == 0xA5).all()
    assert as_bytes(out) == as_bytes(expected)
    assert np.array_equal(buf[~mask], before[~mask]), "wrote outside out"


def test_subset_mode_first_last_and_empty():
    rng = np.random.default_rng(22)
    steps, objs = chain("zstd", 2)
    sources, locs, _ = make_shard(rng, (2, 3), (4, 4), 2, objs)
    kw = {"steps": steps, "chunk_shape": (4, 4), "region_start": (0, 0)}
    whole = np.empty((8, 12), "u2")
    decode_chunks(sources, locs, whole, **kw)
    part = np.zeros_like(whole)
    decode_chunks(sources, locs, part, subset=[5, 0, 3], first=1, last=3, **kw)  # chunks 0, 3
    np.testing.assert_array_equal(part[0:4, 0:4], whole[0:4, 0:4])
    np.testing.assert_array_equal(part[4:8, 0:4], whole[4:8, 0:4])
    part[0:4, 0:4] = part[4:8, 0:4] = 0
    assert not part.any()
    decode_chunks(sources, locs, part, subset=np.array([], np.int64), **kw)
    assert not part.any()
    # a chunk past the end of its buffer is only an error when it is in the subset
    bad = locs.copy()
    bad[1, 2, 0] = len(sources[0]) + 1
    decode_chunks(sources, bad, part, subset=[0, 1, 2], **kw)
    with pytest.raises(ShardIndexError, match=r"inner chunk \(1, 2\)"):
        decode_chunks(sources, bad, part, subset=[5], **kw)


def test_subset_mode_errors():
    rng = np.random.default_rng(23)
    steps, objs = chain("zstd", 2)
    sources, locs, _ = make_shard(rng, (2, 3), (4, 4), 2, objs)
    kw = {"steps": steps, "chunk_shape": (4, 4)}
    out = np.empty((4, 8), "u2")  # chunks (0, 1), (0, 2) of the shard
    decode_chunks(sources, locs, out, region_start=(0, 4), subset=[1, 2], **kw)
    for bad in ([0], [3], [1, 5], [-1], [6]):
        with pytest.raises(ValueError, match="subset"):
            decode_chunks(sources, locs, out, region_start=(0, 4), subset=bad, **kw)
    with pytest.raises(ValueError, match="1-d"):
        decode_chunks(sources, locs, out, region_start=(0, 4), subset=[[1, 2]], **kw)
    with pytest.raises(ValueError, match="exclude each other"):
        decode_chunks(sources, locs, np.empty((1, 4, 4), "u2"), region_start=(), chunks=[1],
                      subset=[1], **kw)
    with pytest.raises(ValueError, match="outside"):
        decode_chunks(sources, locs, out, region_start=(0, 4), subset=[1, 2], first=1, last=3,
                      **kw)


@pytest.mark.parametrize("codec", ["raw", "zstd", "blosc-lz4-shuffle"])
@pytest.mark.parametrize("swap", [0, 2])
def test_streaming_stores_write_the_same(codec, swap):
    rng = np.random.default_rng(24)
    steps, objs = chain(codec, 2)
    sources, locs, groups = make_shard(rng, (3, 4), (8, 16), 2, objs, empty_frac=0.2, n_groups=2)
    kw = {"steps": steps, "chunk_shape": (8, 16), "groups": groups, "fill_value": b"\x01\x02",
          "swap_unit": swap}
    for start, shape in [((0, 0), (24, 64)), ((3, 5), (17, 50))]:
        plain = np.zeros(shape, "<u2")
        decode_chunks(sources, locs, plain, region_start=start, **kw)
        fast = np.zeros(shape, "<u2")
        decode_chunks(sources, locs, fast, region_start=start, streaming=True, **kw)
        np.testing.assert_array_equal(fast, plain)
        view = np.zeros((shape[0] + 2, shape[1] + 7), "<u2")  # unaligned rows
        decode_chunks(sources, locs, view[1:-1, 3:-4], region_start=start, streaming=True, **kw)
        np.testing.assert_array_equal(view[1:-1, 3:-4], plain)
        assert not view[0].any() and not view[-1].any()
        assert not view[:, :3].any() and not view[:, -4:].any()


# ------------------------------------------------------------------------------------------------
# blosc lz4 frames decoded by zk_blosc.h (no c-blosc call, no per-chunk allocation)

def _blosc_frame(data: np.ndarray, cname: str, clevel: int, shuffle: int):
    return numcodecs.blosc.compress(data, cname.encode(), clevel, shuffle)


def _blosc_data(kind: str, n_items: int, typesize: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = {
        "random": lambda n: rng.integers(0, 256, n, dtype=np.uint8),
        "ramp": lambda n: (np.arange(n) // 7).astype(np.uint8),
        "smooth": lambda n: np.cumsum(rng.integers(-2, 3, n)).astype(np.uint8),
        "zeros": lambda n: np.zeros(n, np.uint8),
    }[kind](n_items * typesize)
    return raw.view(f"V{typesize}") if typesize > 1 else raw


@pytest.mark.parametrize("typesize", [1, 2, 3, 4, 8, 16, 17, 32])
@pytest.mark.parametrize("cname", ["lz4", "lz4hc"])
@pytest.mark.parametrize("shuffle", [numcodecs.Blosc.NOSHUFFLE, numcodecs.Blosc.SHUFFLE])
def test_blosc_lz4_frames_as_c_blosc(typesize, cname, shuffle):
    """Every lz4 frame c-blosc writes (any type size, block size, leftover block, split or
    not) decodes here to c-blosc's bytes; only memcpyed frames are left to c-blosc."""
    taken = 0
    # c-blosc picks the block size from the data size (numcodecs passes no other): small
    # frames are one block, split into typesize streams from 128 items on; large ones several
    # blocks, the last one short
    for kind, n_items, clevel in itertools.product(
        ["random", "ramp", "smooth", "zeros"], [1, 100, 127, 128, 129, 4096, 40_000, 70_001],
        [1, 9],
    ):
        data = _blosc_data(kind, n_items, typesize, n_items + typesize)
        frame = _blosc_frame(data, cname, clevel, shuffle)
        got = blosc_lz4_frame(frame, data.nbytes)
        memcpyed = frame[2] & 0x02
        if memcpyed:
            assert got is None
            continue
        taken += 1
        assert got == numcodecs.blosc.decompress(frame), (kind, n_items, clevel)
        assert got == data.tobytes()
    assert taken >= 16  # the fast path is really the one checked


# name -> (chunk shape, chunks per shard): chunks that are one run of a whole-shard C output
_RUN_GEOMETRIES = {
    "1-d": ((40,), (5,)),
    "full-width": ((3, 30), (4, 1)),
    "full-planes": ((2, 3, 8), (3, 1, 1)),
}


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("geometry", list(_RUN_GEOMETRIES))
@pytest.mark.parametrize("layout", ["C", "view", "F"])
@pytest.mark.parametrize("streaming", [False, True])
def test_chunks_that_are_one_run_of_out(codec, geometry, layout, streaming):
    """Whole chunks that are one run of the output (1-d arrays, chunks as wide as the array),
    boxes that cut them, views whose rows lie apart, F order and byte swaps: every codec gives
    numcodecs' decode copied into place, and nothing is written outside `out`."""
    rng = np.random.default_rng([list(CODECS).index(codec), list(_RUN_GEOMETRIES).index(geometry)])
    chunk_shape, cps = _RUN_GEOMETRIES[geometry]
    dt = np.dtype("<u4")
    steps, objs = chain(codec, dt.itemsize)
    sources, locs, groups = make_shard(rng, cps, chunk_shape, dt.itemsize, objs,
                                       empty_frac=0.2, n_groups=2, layout="gaps")
    shard_shape = tuple(c * s for c, s in zip(cps, chunk_shape))
    whole = ((0,) * len(cps), shard_shape)
    rows_cut = ((1,) + (0,) * (len(cps) - 1), (shard_shape[0] - 2,) + shard_shape[1:])
    for (start, shape), swap in [(whole, 0), (rows_cut, 0), (whole, 4)]:
        out, buf, mask = make_out(shape, dt, layout)
        check(sources, locs, groups, objs, steps, out, chunk_shape, start, b"\x07\x00\x00\x09",
              swap, buf, mask, streaming=streaming)


# (item size, frame type size): zarr writes the item size; other type sizes are valid frames too
_ROW_SIZES = [(2, 2), (4, 4), (8, 8), (16, 16), (3, 3), (2, 4), (2, 3), (8, 2)]
# name -> (chunk shape, chunks per shard, blosc block size): rows of 40-70 items; forced small
# blocks end inside rows; "merged": chunks as wide as the shard, so a whole-shard C output holds
# a chunk's rows back to back (one run)
_ROW_GEOMETRIES = {
    "rows": ((6, 64), (3, 3), 0),
    "blocks-across-rows": ((10, 70), (3, 2), 600),
    "merged": ((5, 48), (4, 1), 1024),
    "3-d": ((2, 3, 40), (3, 2, 2), 0),
    "short-rows": ((40, 6), (3, 3), 0),
}


@pytest.mark.parametrize("itemsize,typesize", _ROW_SIZES)
@pytest.mark.parametrize("geometry", list(_ROW_GEOMETRIES))
@pytest.mark.parametrize("layout", ["C", "view", "F"])
@pytest.mark.parametrize("streaming", [False, True])
def test_blosc_frames_of_long_rows(itemsize, typesize, geometry, layout, streaming):
    """Shuffled lz4 frames of chunks with long rows, blocks that end inside a row, type sizes
    that are not the item size (or do not divide the rows), whole and cut chunks: the same bytes
    as c-blosc's decode copied into place, with nothing written outside `out`."""
    rng = np.random.default_rng([itemsize, typesize, list(_ROW_GEOMETRIES).index(geometry)])
    chunk_shape, cps, blocksize = _ROW_GEOMETRIES[geometry]
    codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE,
                            blocksize=blocksize, typesize=typesize)
    made = []

    def raw(rng, nbytes):  # mostly compressible; random bytes make a frame stored as it is
        made.append(nbytes)
        if len(made) > 2 and rng.random() < 0.15:
            return rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
        runs = rng.integers(0, 4, nbytes // 96 + 1, dtype=np.uint8)
        return np.repeat(runs, 96)[:nbytes].tobytes()

    sources, locs, groups = make_shard(rng, cps, chunk_shape, itemsize, (codec,),
                                       empty_frac=0.15, n_groups=2, layout="gaps", raw=raw)
    frames = [sources[int(groups[c])][int(locs[c][0]):] for c in np.ndindex(*cps)
              if locs[c][0] != EMPTY]
    assert sum(not f[2] & 0x02 for f in frames) >= 2  # lz4-compressed frames, not stored ones
    dt = np.dtype(f"V{itemsize}")
    shard_shape = tuple(c * s for c, s in zip(cps, chunk_shape))
    steps = ("blosc",)
    fill = bytes(range(1, itemsize + 1))
    for start, shape in [((0,) * len(cps), shard_shape),
                         (tuple(1 for _ in cps), tuple(n - 2 for n in shard_shape))]:
        out, buf, mask = make_out(shape, dt, layout)
        check(sources, locs, groups, (codec,), steps, out, chunk_shape, start, fill, 0, buf,
              mask, streaming=streaming)


@pytest.mark.parametrize(
    "cname,shuffle",
    [("blosclz", numcodecs.Blosc.SHUFFLE), ("zstd", numcodecs.Blosc.NOSHUFFLE),
     ("zlib", numcodecs.Blosc.SHUFFLE), ("lz4", numcodecs.Blosc.BITSHUFFLE)],
)
def test_blosc_other_frames_left_to_c_blosc(cname, shuffle):
    data = _blosc_data("ramp", 4096, 2, 1)
    frame = _blosc_frame(data, cname, 5, shuffle)
    assert blosc_lz4_frame(frame, data.nbytes) is None
    # and the kernel still decodes them (through blosc_decompress_ctx)
    out = np.empty(4096, "<u2")
    locs = np.array([[0, len(frame)]], dtype=np.uint64)
    src = np.frombuffer(frame, np.uint8)
    decode_chunks([src], locs, out, steps=("blosc",), chunk_shape=(4096,), region_start=(0,))
    assert out.tobytes() == data.tobytes()


def test_blosc_lz4_frame_checks():
    """Frames whose header or block table does not hold together are left to c-blosc (which
    then reports the error), never read past their bytes."""
    data = _blosc_data("ramp", 8192, 2, 3)
    frame = bytearray(_blosc_frame(data, "lz4", 5, numcodecs.Blosc.SHUFFLE))
    assert not frame[2] & 0x02  # compressed, not memcpyed
    assert blosc_lz4_frame(bytes(frame), data.nbytes) == data.tobytes()
    bad = {
        "version": (0, 3), "lz4 version": (1, 2), "future flag": (2, frame[2] | 0x08),
        "typesize 0": (3, 0),
    }
    for what, (pos, value) in bad.items():
        f = bytearray(frame)
        f[pos] = value
        assert blosc_lz4_frame(bytes(f), data.nbytes) is None, what
    for what, (pos, value) in {
        "blocksize past the output": (8, data.nbytes * 2), "blocksize 0": (8, 0),
        "nbytes past the output": (4, data.nbytes + 1), "block table past the frame": (12, 17),
        "first block start past the frame": (16, len(frame)),
        "first block start negative": (16, 0xFFFFFFF0),
    }.items():
        f = bytearray(frame)
        f[pos : pos + 4] = int(value).to_bytes(4, "little")
        assert blosc_lz4_frame(bytes(f), data.nbytes) is None, what
    assert blosc_lz4_frame(bytes(frame), data.nbytes - 2) is None  # output too small
    # a corrupted lz4 stream: left to c-blosc, whose error the kernel reports
    f = bytearray(frame)
    start = int.from_bytes(f[16:20], "little") + 4
    f[start + 4 : start + 40] = b"\xff" * 36
    out = np.empty(8192, "<u2")
    src = np.frombuffer(bytes(f), np.uint8)
    locs = np.array([[0, len(f)]], dtype=np.uint64)
    ours = blosc_lz4_frame(bytes(f), data.nbytes)
    try:
        theirs = numcodecs.blosc.decompress(bytes(f))
    except RuntimeError:
        theirs = None
    assert ours == theirs or ours is None
    if theirs is None:
        with pytest.raises(CorruptChunkError, match="blosc"):
            decode_chunks([src], locs, out, steps=("blosc",), chunk_shape=(8192,),
                          region_start=(0,))


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    typesize=st.sampled_from([1, 2, 4, 8]),
    n_flips=st.integers(1, 8),
)
def test_blosc_lz4_corrupted_frames_agree_with_c_blosc(seed, typesize, n_flips):
    """Random damage after the header: the kernel gives c-blosc's bytes or raises our error
    exactly where c-blosc fails (never a crash, never different bytes)."""
    rng = np.random.default_rng(seed)
    data = _blosc_data("ramp", 4096 // typesize, typesize, seed)
    frame = bytearray(_blosc_frame(data, "lz4", 5, numcodecs.Blosc.SHUFFLE))
    assert blosc_lz4_frame(bytes(frame), 4096) == data.tobytes()
    for pos in rng.integers(16, len(frame), n_flips):
        frame[pos] = int(rng.integers(0, 256))
    frame = bytes(frame)
    try:
        theirs = numcodecs.blosc.decompress(frame)
    except RuntimeError:
        theirs = None
    ours = blosc_lz4_frame(frame, 4096)
    if ours is not None:
        assert ours == theirs
    out = np.empty(4096, np.uint8)
    src = np.frombuffer(frame, np.uint8)
    locs = np.array([[0, len(frame)]], dtype=np.uint64)
    kw = {"steps": ("blosc",), "chunk_shape": (4096,), "region_start": (0,)}
    if theirs is None or len(theirs) != 4096:
        with pytest.raises(CorruptChunkError):
            decode_chunks([src], locs, out, **kw)
    else:
        decode_chunks([src], locs, out, **kw)
        assert out.tobytes() == theirs


def test_groups_are_never_truncated():
    """A source number that does not fit the kernel's int32, or is not an integer, is refused;
    it wrapped to another source (2**32 + 1 read source 1) or was truncated (1.7 read 1)."""
    srcs = [np.zeros(4, "u1"), np.full(4, 7, "u1")]
    kw = {"steps": [], "chunk_shape": (4,), "region_start": (0,)}
    locs = np.array([[0, 4]], np.uint64)
    for groups, err in [(np.array([2**32 + 1]), ValueError), (np.array([-2**40]), ValueError),
                        (np.array([1.7]), TypeError), (np.array([True]), TypeError),
                        (np.array([5]), ValueError)]:
        out = np.full(4, 9, "u1")
        with pytest.raises(err):
            decode_chunks(srcs, locs, out, groups=groups, **kw)
        assert (out == 9).all()
    out = np.empty(4, "u1")
    decode_chunks(srcs, locs, out, groups=np.array([1], np.uint64), **kw)
    assert (out == 7).all()
