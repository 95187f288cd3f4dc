#!/usr/bin/env python
"""Fuzz the chunk decode kernel (zkernels._decode.decode_chunks) over raw bytes.

Each case is a small grid of inner chunks under a random chain of steps (crc32c checks, then
zstd or blosc), spread over one to three source buffers (a `groups` table, as the pipeline's
coalesced reads make), each chunk one of: empty, a valid encoding (numcodecs, as zarr encodes;
zstd frames with and without a content size; blosc with any cname / shuffle / typesize /
blocksize), a valid encoding of the wrong size, a mutated encoding (flipped bytes, truncated,
extended, blosc header fields set to odd values; the crc32c recomputed or not, so mutations reach
the decompressor), random bytes, or an odd index entry (half empty, past the end, overflowing).

Asserted: decode_chunks never crashes; never reads outside the bytes it is given (every source
sits right before, or right after, an inaccessible page, so a stray read faults); never writes
outside `out` (a view into a sentinel-filled buffer); and returns exactly the box a reference
computes (numcodecs' blosc, libzstd's one-shot ZSTD_decompress, Python crc32c), or raises the
zkernels error the reference predicts for the first bad chunk of the box (in C order).

Usage::

    python scripts/fuzz_decode.py --seconds 600          # run for ten minutes
    python scripts/fuzz_decode.py --examples 20000       # or this many cases
    python scripts/fuzz_decode.py --seconds 60 --seed 1  # reproducible batches

tests/kernels/test_fuzz_decode.py imports this file and calls :func:`run` for a few seconds.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import mmap
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

try:
    import zkernels  # noqa: F401
except ImportError:  # running from a source checkout: python scripts/fuzz_decode.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numcodecs
import numcodecs.blosc
import numcodecs.zstd
from zkernels._decode import can_decode, decode_chunks

from zkernels.errors import (
    ChecksumError,
    CorruptChunkError,
    ShardIndexError,
    ZKernelsError,
)

MAX = 2**64 - 1
STATS: collections.Counter[str] = collections.Counter()
SPECIAL = [0, 1, 3, 4, 15, 16, 17, 255, 2**31 - 1, 2**31, 2**32 - 1, 2**63, MAX - 16, MAX - 1,
           MAX]
CHAINS = [
    (), ("crc32c",), ("zstd",), ("blosc",), ("crc32c", "zstd"), ("crc32c", "blosc"),
    ("crc32c", "crc32c", "zstd"), ("crc32c", "crc32c", "blosc"),
]
BLOSC_CNAMES = ["lz4", "lz4hc", "blosclz", "zstd", "zlib"]


# ------------------------------------------------------------------------------------------------
# references


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(bytes(data)))


def _crc_bytes(data: bytes) -> bytes:
    return _crc32c(data).to_bytes(4, "little")


class _Zstd:
    """libzstd's one-shot ZSTD_decompress, from numcodecs' own build (the kernel uses a reused
    context and ZSTD_decompressDCtx: the two must agree)."""

    lib = None

    @classmethod
    def decompress(cls, data: bytes, cap: int):
        if cls.lib is None:
            lib = ctypes.CDLL(numcodecs.zstd.__file__)
            lib.ZSTD_decompress.restype = ctypes.c_size_t
            lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                            ctypes.c_size_t]
            lib.ZSTD_isError.restype = ctypes.c_uint
            lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            cls.lib = lib
        dst = ctypes.create_string_buffer(max(cap, 1))
        r = cls.lib.ZSTD_decompress(dst, cap, data, len(data))
        if cls.lib.ZSTD_isError(r):
            return None
        return dst.raw[:r]


def ref_chunk(stored: bytes, steps, expected: int, validate: bool):
    """(decoded bytes, None) or (None, exception class) for one chunk's stored bytes."""
    data = stored
    for s in steps:
        if s == "crc32c":
            if len(data) < 4:
                return None, CorruptChunkError
            body = data[:-4]
            if validate and _crc_bytes(body) != data[-4:]:
                return None, ChecksumError
            data = body
        elif s == "zstd":
            data = _Zstd.decompress(data, expected)
            if data is None:
                return None, CorruptChunkError
        else:  # blosc: the header must be sane and fit in the bytes given, then numcodecs decodes
            if len(data) < 16:
                return None, CorruptChunkError
            nbytes = int.from_bytes(data[4:8], "little")
            cbytes = int.from_bytes(data[12:16], "little")
            if cbytes >= 2**31 or cbytes > len(data) or cbytes < 16:
                return None, CorruptChunkError
            if nbytes != expected:
                return None, CorruptChunkError
            try:
                data = bytes(numcodecs.blosc.decompress(data))
            except (RuntimeError, ValueError):  # numcodecs: "error during blosc decompression"
                return None, CorruptChunkError
            if len(data) != expected:
                return None, CorruptChunkError
    if len(data) != expected:
        return None, CorruptChunkError
    return data, None


def ref_decode(sources, locs, groups, steps, chunk_shape, itemsize, start, shape, fill, swap,
               first, last, validate):
    """The box as bytes (C order, shape + (itemsize,)) after decoding chunks [first, last), or
    the exception class of the first bad chunk among them."""
    cps = locs.shape[:-1]
    expected = int(np.prod(chunk_shape)) * itemsize
    full = np.full(tuple(c * s for c, s in zip(cps, chunk_shape)) + (itemsize,), 0xA5, np.uint8)
    if any(s == 0 for s in shape):
        return full[tuple(slice(a, a + b) for a, b in zip(start, shape))], None
    ranges = [range(a // s, (a + b - 1) // s + 1) for s, a, b in zip(chunk_shape, start, shape)]
    box_chunks = [tuple(r[i] for r, i in zip(ranges, idx))
                  for idx in np.ndindex(*[len(r) for r in ranges])]
    fill_row = np.frombuffer(fill if fill is not None else bytes(itemsize), np.uint8)
    for c in box_chunks[first:last]:
        sl = tuple(slice(i * s, (i + 1) * s) for i, s in zip(c, chunk_shape))
        off, nb = (int(v) for v in locs[c])
        if off == MAX and nb == MAX:
            full[sl] = fill_row
            continue
        if off == MAX or nb == MAX:
            return None, ShardIndexError
        g = int(groups[c]) if groups is not None else 0
        if not 0 <= g < len(sources):
            return None, ValueError
        if off + nb > len(sources[g]):
            return None, ShardIndexError
        raw, exc = ref_chunk(bytes(sources[g][off : off + nb]), steps, expected, validate)
        if exc is not None:
            return None, exc
        raw = np.frombuffer(raw, np.uint8)
        if swap:
            raw = raw.reshape(-1, swap)[:, ::-1]
        full[sl] = raw.reshape(tuple(chunk_shape) + (itemsize,))
    return full[tuple(slice(a, a + b) for a, b in zip(start, shape))], None


# ------------------------------------------------------------------------------------------------
# guarded memory

_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def guarded(data: bytes, at_end: bool = True) -> np.ndarray:
    """`data` between two inaccessible pages, flush against the one after it (at_end) or the one
    before it: a read past the end (or before the start) faults."""
    n = len(data)
    pages = -(-n // _PAGE) or 1
    m = mmap.mmap(-1, (pages + 2) * _PAGE)
    arr = np.frombuffer(m, np.uint8)
    base = arr.ctypes.data
    if _libc.mprotect(base, _PAGE, 0) or _libc.mprotect(base + (pages + 1) * _PAGE, _PAGE, 0):
        raise OSError(ctypes.get_errno(), "mprotect failed")
    lo = (pages + 1) * _PAGE - n if at_end else _PAGE
    view = arr[lo : lo + n]
    view[:] = np.frombuffer(data, np.uint8)
    return view


# ------------------------------------------------------------------------------------------------
# generation


def _encoder(data, step, itemsize):
    """A numcodecs encoder for a compressor step, with drawn parameters."""
    if step == "zstd":
        how = data.draw(st.sampled_from(["numcodecs", "numcodecs", "no-size", "checksum"]),
                        label="zstd kind")
        if how == "no-size":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=1, write_content_size=False)
            return lambda b: cctx.compress(b)
        return numcodecs.Zstd(level=data.draw(st.integers(-3, 5), label="level"),
                              checksum=how == "checksum").encode
    typesize = data.draw(st.sampled_from([itemsize, itemsize, 1, 2, 4, 8, 16]), label="typesize")
    return numcodecs.Blosc(
        cname=data.draw(st.sampled_from(BLOSC_CNAMES), label="cname"),
        clevel=data.draw(st.integers(0, 9), label="clevel"),
        shuffle=data.draw(st.integers(0, 2), label="shuffle"),
        blocksize=data.draw(st.sampled_from([0, 0, 16, 64, 256]), label="blocksize"),
        typesize=typesize,
    ).encode


def _encode(data, raw, steps, itemsize):
    out = bytes(raw)
    for s in reversed(steps):
        out = out + _crc_bytes(out) if s == "crc32c" else bytes(_encoder(data, s, itemsize)(out))
    return out


def _raw(rng, n):
    kind = rng.integers(0, 3)
    if kind == 0:
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if kind == 1:
        return np.repeat(rng.integers(0, 4, n // 4 + 1, dtype=np.uint8), 4)[:n].tobytes()
    return bytes([int(rng.integers(0, 256))]) * n


def _mutate(data, rng, stored: bytes, steps) -> bytes:
    b = bytearray(stored)
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "header", "random"]),
                    label="mutation")
    ncrc = sum(1 for s in steps if s == "crc32c")
    # the part a decompressor sees: without the crc32c tails
    inner = b[: len(b) - 4 * ncrc] if ncrc and len(b) >= 4 * ncrc else b
    if how == "flip" and inner:
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            inner[int(rng.integers(0, len(inner)))] = int(rng.integers(0, 256))
    elif how == "truncate":
        del inner[data.draw(st.integers(0, max(len(inner) - 1, 0)), label="cut"):]
    elif how == "extend":
        inner += rng.integers(0, 256, data.draw(st.integers(1, 20), label="ext"),
                              dtype=np.uint8).tobytes()
    elif how == "header" and len(inner) >= 16:  # blosc header fields, zstd frame header bytes
        pos = data.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 15]), label="field")
        if pos in (4, 8, 12):
            val = data.draw(st.sampled_from(SPECIAL + [len(inner), len(inner) - 1,
                                                       len(inner) + 1]), label="value")
            inner[pos : pos + 4] = (val % 2**32).to_bytes(4, "little")
        else:
            inner[pos] = data.draw(st.integers(0, 255), label="byte")
    elif how == "random":
        inner = bytearray(rng.integers(0, 256, data.draw(st.integers(0, 80), label="len"),
                                       dtype=np.uint8).tobytes())
    out = bytes(inner)
    fix = data.draw(st.booleans(), label="fix crc")
    for _ in range(ncrc):
        out = out + (_crc_bytes(out) if fix else rng.integers(0, 256, 4, np.uint8).tobytes())
    return out


def _make_out(data, shape, itemsize):
    """`out` as a view into a sentinel-filled buffer; returns (out, buf, mask of out's bytes)."""
    layout = data.draw(st.sampled_from(["C", "F", "padded", "strided", "reversed"]),
                       label="layout")
    dtype = np.dtype(f"V{itemsize}")
    shape = tuple(shape)
    if layout in ("C", "F"):
        big_shape, sl = shape, tuple(slice(None) for _ in shape)
    elif layout == "padded":
        big_shape, sl = tuple(s + 2 for s in shape), tuple(slice(1, 1 + s) for s in shape)
    elif layout == "strided":
        big_shape = tuple(2 * s + 1 for s in shape)
        sl = tuple(slice(1, 1 + 2 * s, 2) for s in shape)
    else:
        big_shape, sl = tuple(s + 1 for s in shape), tuple(slice(s, 0, -1) for s in shape)
    nbytes = int(np.prod(big_shape)) * itemsize
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
        mask[(offs.ravel()[:, None] + np.arange(itemsize)).ravel()] = True
    return out, buf, mask


def _out_bytes(out):
    c = np.ascontiguousarray(out)
    return np.frombuffer(c.tobytes(), np.uint8).reshape(out.shape + (out.itemsize,))


# ------------------------------------------------------------------------------------------------
# the fuzz body


def fuzz_one(data) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    steps = data.draw(st.sampled_from(CHAINS), label="steps")
    ndim = data.draw(st.integers(1, 3), label="ndim")
    chunk_shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim),
                                  label="chunk_shape"))
    cps = tuple(data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim), label="cps"))
    itemsize = data.draw(st.sampled_from([1, 2, 3, 4, 8, 16]), label="itemsize")
    swap = data.draw(st.sampled_from([0] + [u for u in (2, 4, 8) if itemsize % u == 0]),
                     label="swap")
    n_src = data.draw(st.integers(1, 3), label="sources")
    validate = data.draw(st.sampled_from([True, True, True, False]), label="validate")
    n = int(np.prod(cps))
    cn = int(np.prod(chunk_shape)) * itemsize
    bufs = [bytearray(rng.integers(0, 256, data.draw(st.integers(0, 8), label="lead"),
                                   dtype=np.uint8).tobytes()) for _ in range(n_src)]
    groups = np.zeros(n, np.int32)
    locs = np.full((n, 2), MAX, np.uint64)
    kinds = ["empty", "valid", "valid", "valid", "wrong size", "mutated", "mutated", "random",
             "odd entry"]
    for lin in range(n):
        kind = data.draw(st.sampled_from(kinds), label="chunk")
        g = int(rng.integers(0, n_src))
        groups[lin] = g
        if kind == "empty":
            continue
        if kind == "odd entry":
            off = data.draw(st.one_of(st.sampled_from(SPECIAL),
                                      st.integers(0, len(bufs[g]) + 8)), label="off")
            nb = data.draw(st.one_of(st.sampled_from(SPECIAL), st.integers(0, 2 * cn + 2)),
                           label="nb")
            locs[lin] = (off % 2**64, nb % 2**64)
            continue
        if kind == "random":
            stored = rng.integers(0, 256, data.draw(st.integers(0, 2 * cn + 40), label="len"),
                                  dtype=np.uint8).tobytes()
        else:
            size = cn
            if kind == "wrong size":
                size = max(0, cn + data.draw(st.sampled_from([-itemsize, -1, 1, itemsize, cn]),
                                             label="delta"))
            stored = _encode(data, _raw(rng, size), steps, itemsize)
            if kind == "mutated":
                stored = _mutate(data, rng, stored, steps)
        locs[lin] = (len(bufs[g]), len(stored))
        bufs[g] += stored
        bufs[g] += rng.integers(0, 256, data.draw(st.sampled_from([0, 0, 1, 5]), label="gap"),
                                dtype=np.uint8).tobytes()
    if data.draw(st.booleans(), label="truncate a source"):
        g = int(rng.integers(0, n_src))
        del bufs[g][int(rng.integers(0, len(bufs[g]) + 1)):]
    at_end = data.draw(st.booleans(), label="guard after")
    sources = [guarded(bytes(b), at_end) for b in bufs]
    locs = locs.reshape(cps + (2,))
    groups = groups.reshape(cps)
    if data.draw(st.sampled_from([False] * 9 + [True]), label="bad group"):
        groups.flat[int(rng.integers(0, n))] = data.draw(st.sampled_from([-1, n_src, 2**31 - 1]),
                                                         label="group")
    use_groups = n_src > 1 or data.draw(st.booleans(), label="pass groups")

    start, shape = [], []
    for c, s in zip(cps, chunk_shape):
        a = data.draw(st.integers(0, c * s - 1), label="start")
        start.append(a)
        shape.append(data.draw(st.integers(1, c * s - a), label="extent"))
    start = tuple(start)
    n_touched = int(np.prod([(a + b - 1) // s + 1 - a // s
                             for s, a, b in zip(chunk_shape, start, shape)]))
    first, last = 0, n_touched
    if data.draw(st.sampled_from([False, False, False, True]), label="partition"):
        first = data.draw(st.integers(0, n_touched), label="first")
        last = data.draw(st.integers(first, n_touched), label="last")
    fill = data.draw(st.one_of(st.none(), st.binary(min_size=itemsize, max_size=itemsize)),
                     label="fill")
    out, buf, mask = _make_out(data, shape, itemsize)
    before = buf.copy()
    g_arg = groups if use_groups else None
    if g_arg is None:  # every chunk in sources[0]
        groups[...] = 0
    expected, exc = ref_decode(sources, locs, g_arg, steps, chunk_shape, itemsize, start, shape,
                               fill, swap, first, last, validate)
    try:
        decode_chunks(sources, locs, out, steps=steps, chunk_shape=chunk_shape,
                      region_start=start, groups=g_arg, first=first, last=last, fill_value=fill,
                      swap_unit=swap, validate=validate)
    except ValueError as e:
        assert exc is not None, f"decode_chunks raised {e!r}, the reference decoded"
        assert type(e) is exc, (exc, e)
        assert exc is ValueError or isinstance(e, ZKernelsError)
        assert "inner chunk (" in str(e), e
        STATS[f"{'+'.join(steps) or 'raw'}: {type(e).__name__}"] += 1
        return
    finally:
        assert np.array_equal(buf[~mask], before[~mask]), "wrote outside out"
    assert exc is None, f"expected {exc.__name__}, decode_chunks returned"
    got = _out_bytes(out)
    # chunks outside [first, last) keep the sentinel on both sides
    assert np.array_equal(got, expected), "wrong bytes"
    STATS[f"{'+'.join(steps) or 'raw'}: ok" + (" (non-empty)" if first < last else "")] += 1


# ------------------------------------------------------------------------------------------------
# driver


def run(seconds: float | None = None, examples: int | None = None, seed: int | None = None,
        batch: int = 200, verbose: bool = False) -> int:
    """Run hypothesis batches of `batch` cases until `seconds` or `examples` is reached.

    Returns the number of cases run. A failure raises (hypothesis shrinks it first).
    """
    if not (can_decode(["zstd"]) and can_decode(["blosc"])):
        raise RuntimeError("the decode kernel found no zstd / blosc library")
    if seconds is None and examples is None:
        examples = 1000
    t0 = time.monotonic()
    done = 0
    rounds = 0
    while True:
        if examples is not None and done >= examples:
            break
        if seconds is not None and time.monotonic() - t0 >= seconds:
            break
        size = batch if examples is None else min(batch, examples - done)

        @settings(max_examples=size, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def body(data):
            fuzz_one(data)

        if seed is not None:
            body = hypothesis_seed(seed + rounds)(body)
        body()
        done += size
        rounds += 1
        if verbose:
            print(f"{done} cases, {time.monotonic() - t0:.1f} s", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="run for this long")
    p.add_argument("--examples", type=int, default=None, help="run this many cases")
    p.add_argument("--seed", type=int, default=None, help="seed of the first batch")
    p.add_argument("--batch", type=int, default=200, help="cases per hypothesis run")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    n = run(args.seconds, args.examples, args.seed, args.batch, verbose=not args.quiet)
    for k, v in sorted(STATS.items()):
        print(f"  {k:<36} {v}")
    print(f"ok: {n} cases, no crash, no wrong answer, no read past the input, no write outside "
          f"out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
