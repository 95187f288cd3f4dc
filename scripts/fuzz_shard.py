#!/usr/bin/env python
"""Fuzz the shard kernels over raw bytes: parse_shard_index, check_dense, reconstruct_dense.

Each case is random shard bytes and random index bytes, plausible (a valid index, then mutated:
flipped bytes, entries set to boundary values, the checksum recomputed or not) or not (random
bytes of about the right length), random chunk shapes, item sizes, boxes and output layouts. The
only property asserted: every call returns the result a plain-Python reference computes, or
raises the zkernels error (a ValueError subclass) the reference predicts; it never crashes; it
never writes outside `out` (the output is a view into a guarded buffer); and after an error `out`
is untouched.

Usage::

    python scripts/fuzz_shard.py --seconds 600         # run for ten minutes
    python scripts/fuzz_shard.py --examples 20000      # or this many cases
    python scripts/fuzz_shard.py --seconds 60 --seed 1 # reproducible batches

tests/kernels/test_fuzz_shard.py imports this file and calls :func:`run` for a few seconds.
Hypothesis drives the generation (and shrinks a failure to a small case); atheris is not needed.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

try:
    import zkernels  # noqa: F401
except ImportError:  # running from a source checkout: python scripts/fuzz_shard.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkernels._dense import reconstruct_dense
from zkernels._shard_index import check_dense, encode_shard_index, parse_shard_index
from zkernels.errors import (
    ChecksumError,
    CorruptChunkError,
    ShardIndexError,
    ZKernelsError,
)

MAX = 2**64 - 1
# outcome counts, to see that the generator reaches every branch (printed by main)
STATS: collections.Counter[str] = collections.Counter()
SPECIAL = [0, 1, 7, 15, 16, 63, 64, 255, 1024, 2**32 - 1, 2**32, 2**63, MAX - 16, MAX - 1, MAX]


# ------------------------------------------------------------------------------------------------
# plain-Python references


def _crc32c(data: bytes) -> int:
    """CRC-32C: the `crc32c` package when installed, else a table from the definition."""
    try:
        import crc32c
    except ImportError:
        pass
    else:
        return crc32c.crc32c(data)
    crc = 0xFFFFFFFF
    arr = np.frombuffer(data, np.uint8)
    table = _crc_table()
    for b in arr.tolist():
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_TABLE: list[int] = []


def _crc_table() -> list[int]:
    if not _TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _TABLE.append(c)
    return _TABLE


def ref_parse(raw, cps, byteorder, checksum, shard_nbytes, location):
    """(index, None) or (None, exception class), as parse_shard_index must answer."""
    n = int(np.prod(cps))
    nbi = 16 * n + (4 if checksum else 0)
    if len(raw) != nbi:
        return None, ShardIndexError
    if shard_nbytes is not None and shard_nbytes < nbi:
        return None, ShardIndexError
    body = bytes(raw[: 16 * n])
    if checksum and int.from_bytes(bytes(raw[16 * n :]), "little") != _crc32c(body):
        return None, ChecksumError
    vals = np.frombuffer(body, "<u8" if byteorder == "little" else ">u8").astype(np.uint64)
    if location == "start":
        lo, hi = 0, nbi
    elif shard_nbytes is not None:
        lo, hi = shard_nbytes - nbi, shard_nbytes
    else:
        lo = hi = 0
    for i in range(n):
        off, nb = int(vals[2 * i]), int(vals[2 * i + 1])
        if off == MAX and nb == MAX:
            continue
        if off == MAX or nb == MAX or off + nb > MAX:
            return None, ShardIndexError
        if shard_nbytes is not None and off + nb > shard_nbytes:
            return None, ShardIndexError
        if nb and off < hi and off + nb > lo:
            return None, ShardIndexError
    return vals.reshape(tuple(cps) + (2,)), None


def ref_check_dense(index, chunk_nbytes):
    flat = index.reshape(-1, 2)
    entries = []
    for i, (off, nb) in enumerate(flat.tolist()):
        if off == MAX and nb == MAX:
            continue
        if nb != chunk_nbytes or off == MAX or off + nb > MAX:
            return False, None
        entries.append((off, i))
    entries.sort()
    for (o1, _), (o2, _) in itertools.pairwise(entries):
        if o1 + chunk_nbytes > o2:
            return False, None
    return True, [i for _, i in entries]


def ref_reconstruct(shard, index, chunk_shape, itemsize, start, shape, fill, swap_unit):
    """The box as bytes (C order, shape + (itemsize,)), or the exception class predicted."""
    cps = index.shape[:-1]
    cn = int(np.prod(chunk_shape)) * itemsize
    full_shape = tuple(c * s for c, s in zip(cps, chunk_shape))
    full = np.empty(full_shape + (itemsize,), np.uint8)
    full[...] = np.frombuffer(fill if fill is not None else bytes(itemsize), np.uint8)
    if any(s == 0 for s in shape):
        return full[tuple(slice(a, a + b) for a, b in zip(start, shape))], None
    for c in np.ndindex(*cps):
        touches = all(i * s < a + b and (i + 1) * s > a
                      for i, s, a, b in zip(c, chunk_shape, start, shape))
        if not touches:
            continue
        off, nb = (int(v) for v in index[c])
        if off == MAX and nb == MAX:
            continue
        if off == MAX or nb == MAX or off + nb > MAX or off + nb > len(shard):
            return None, ShardIndexError
        if nb != cn:
            return None, CorruptChunkError
        raw = np.frombuffer(shard, np.uint8, count=cn, offset=off)
        if swap_unit:
            raw = raw.reshape(-1, swap_unit)[:, ::-1]
        full[tuple(slice(i * s, (i + 1) * s) for i, s in zip(c, chunk_shape))] = raw.reshape(
            tuple(chunk_shape) + (itemsize,))
    return full[tuple(slice(a, a + b) for a, b in zip(start, shape))], None


# ------------------------------------------------------------------------------------------------
# generation helpers


def _mutate(data, raw: bytearray, what: str) -> None:
    n = data.draw(st.integers(0, 4), label=f"{what} flips")
    for _ in range(n):
        if not raw:
            return
        pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
        raw[pos] = data.draw(st.integers(0, 255), label="byte")


def _index_values(data, n, cn, shard_len):
    """A plausible index (chunks packed, some empty), then entries set to odd values."""
    vals = []
    cursor = data.draw(st.integers(0, 64), label="lead")
    for _ in range(n):
        kind = data.draw(st.sampled_from(["chunk", "chunk", "chunk", "empty", "odd"]),
                         label="entry")
        if kind == "empty":
            vals += [MAX, MAX]
        elif kind == "chunk":
            vals += [cursor, cn]
            cursor += cn + data.draw(st.sampled_from([0, 0, 0, 1, cn]), label="gap")
        else:
            off = data.draw(st.one_of(st.sampled_from(SPECIAL), st.integers(0, shard_len + 8)),
                            label="off")
            nb = data.draw(st.one_of(st.sampled_from(SPECIAL + [cn, cn - 1, cn + 1]),
                                     st.integers(0, 2 * cn + 2)), label="nb")
            vals += [off, nb]
    return [v % 2**64 for v in vals]


def _make_out(data, shape, itemsize):
    """`out` as a view into a guarded byte buffer; returns (out, buf, mask of out's bytes)."""
    layout = data.draw(st.sampled_from(["C", "F", "padded", "strided", "reversed", "unaligned"]),
                       label="layout")
    dtype = np.dtype(f"V{itemsize}")
    shape = tuple(shape)
    if layout in ("C", "F", "unaligned"):
        big_shape, sl = shape, tuple(slice(None) for _ in shape)
    elif layout == "padded":
        big_shape, sl = tuple(s + 2 for s in shape), tuple(slice(1, 1 + s) for s in shape)
    elif layout == "strided":
        big_shape = tuple(2 * s + 1 for s in shape)
        sl = tuple(slice(1, 1 + 2 * s, 2) for s in shape)
    else:
        big_shape, sl = tuple(s + 1 for s in shape), tuple(slice(s, 0, -1) for s in shape)
    nbytes = int(np.prod(big_shape)) * itemsize
    lead = 3 if layout == "unaligned" else 16
    buf = np.full(nbytes + lead + 16, 0xA5, np.uint8)
    order = "F" if layout == "F" else "C"
    big = np.ndarray(big_shape, dtype, buffer=buf, offset=lead, order=order)
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
    """out's elements as a C-order uint8 array of shape out.shape + (itemsize,)."""
    c = np.ascontiguousarray(out)
    return np.frombuffer(c.tobytes(), np.uint8).reshape(out.shape + (out.itemsize,))


# ------------------------------------------------------------------------------------------------
# the fuzz bodies


def fuzz_parse(data) -> None:
    ndim = data.draw(st.integers(1, 3), label="ndim")
    cps = tuple(data.draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim), label="cps"))
    n = int(np.prod(cps))
    byteorder = data.draw(st.sampled_from(["little", "big"]), label="byteorder")
    checksum = data.draw(st.booleans(), label="checksum")
    location = data.draw(st.sampled_from(["start", "end"]), label="location")
    nbi = 16 * n + (4 if checksum else 0)
    if data.draw(st.booleans(), label="random bytes"):
        length = data.draw(st.sampled_from([nbi, nbi, nbi - 1, nbi + 1, 0, 4]), label="len")
        raw = bytearray(data.draw(st.binary(min_size=max(length, 0), max_size=max(length, 0)),
                                  label="raw"))
    else:
        vals = _index_values(data, n, data.draw(st.integers(0, 40), label="cn"), 400)
        raw = bytearray(encode_shard_index(np.array(vals, np.uint64).reshape(cps + (2,)),
                                           byteorder=byteorder, checksum=checksum))
        _mutate(data, raw, "index")
        if checksum and data.draw(st.booleans(), label="fix crc"):
            raw[-4:] = _crc32c(bytes(raw[:-4])).to_bytes(4, "little")
    shard_nbytes = data.draw(st.one_of(st.none(), st.integers(0, 600),
                                       st.sampled_from([nbi, nbi - 1, MAX])), label="shard_nbytes")
    expected, exc = ref_parse(bytes(raw), cps, byteorder, checksum, shard_nbytes, location)
    try:
        got = parse_shard_index(bytes(raw), cps, byteorder=byteorder, checksum=checksum,
                                shard_nbytes=shard_nbytes, index_location=location)
    except ZKernelsError as e:
        assert exc is not None and type(e) is exc, (exc, e)
        assert isinstance(e, ValueError)
        STATS[f"parse {type(e).__name__}"] += 1
        return
    assert exc is None, f"expected {exc.__name__}, parse returned"
    STATS["parse ok"] += 1
    assert got.dtype == np.uint64 and got.dtype.isnative and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    assert encode_shard_index(got, byteorder=byteorder, checksum=checksum) == bytes(raw)


def fuzz_dense(data) -> None:
    ndim = data.draw(st.integers(1, 3), label="ndim")
    chunk_shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim),
                                  label="chunk_shape"))
    cps = tuple(data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim), label="cps"))
    itemsize = data.draw(st.sampled_from([1, 2, 3, 4, 8, 16]), label="itemsize")
    swap_unit = data.draw(st.sampled_from([0] + [u for u in (2, 4, 8) if itemsize % u == 0]),
                          label="swap_unit")
    n = int(np.prod(cps))
    cn = int(np.prod(chunk_shape)) * itemsize
    # the shard: usually long enough for the plausible entries, sometimes truncated or random
    nominal = 64 + n * (cn + 2)
    vals = _index_values(data, n, cn, nominal)
    ends = [o + b for o, b in zip(vals[::2], vals[1::2]) if o != MAX and o + b <= nominal + 8]
    if data.draw(st.sampled_from([True, True, True, False]), label="long enough"):
        shard_len = max(ends, default=0) + data.draw(st.integers(0, 8), label="slack")
    else:
        shard_len = data.draw(st.integers(0, nominal), label="shard_len")
    shard = data.draw(st.binary(min_size=shard_len, max_size=shard_len), label="shard")
    if data.draw(st.booleans(), label="index via parse"):
        raw = bytearray(encode_shard_index(np.array(vals, np.uint64).reshape(cps + (2,))))
        _mutate(data, raw, "index")
        try:
            index = parse_shard_index(bytes(raw), cps)
        except ZKernelsError:
            STATS["dense: index rejected by parse"] += 1
            return
    else:
        index = np.array(vals, np.uint64).reshape(cps + (2,))

    dense, perm = check_dense(index, cn)
    exp_dense, exp_perm = ref_check_dense(index, cn)
    assert dense == exp_dense
    STATS[f"check_dense {dense}"] += 1
    if dense:
        flat = index.reshape(-1, 2)
        np.testing.assert_array_equal(flat[perm, 0], flat[exp_perm, 0])
        assert sorted(perm.tolist()) == sorted(exp_perm)
    else:
        assert perm.size == 0

    start, shape = [], []
    empty_box = data.draw(st.sampled_from([False] * 9 + [True]), label="empty box")
    for c, s in zip(cps, chunk_shape):
        a = data.draw(st.integers(0, c * s - 1), label="start")
        start.append(a)
        shape.append(data.draw(st.integers(0 if empty_box else 1, c * s - a), label="extent"))
    fill = data.draw(st.one_of(st.none(), st.binary(min_size=itemsize, max_size=itemsize)),
                     label="fill")
    streaming = data.draw(st.sampled_from([None, True, False]), label="streaming")
    out, buf, mask = _make_out(data, shape, itemsize)
    before = buf.copy()
    expected, exc = ref_reconstruct(shard, index, chunk_shape, itemsize, start, shape, fill,
                                    swap_unit)
    try:
        reconstruct_dense(shard, index, out, chunk_shape=chunk_shape, region_start=tuple(start),
                          fill_value=fill, swap_unit=swap_unit, streaming=streaming)
    except ZKernelsError as e:
        assert exc is not None and type(e) is exc, (exc, e)
        assert np.array_equal(buf, before), "out written before the error"
        STATS[f"reconstruct {type(e).__name__}"] += 1
        return
    finally:
        assert np.array_equal(buf[~mask], before[~mask]), "wrote outside out"
    assert exc is None, f"expected {exc.__name__}, reconstruct_dense returned"
    assert np.array_equal(_out_bytes(out), expected)
    STATS["reconstruct ok" + (" (non-empty box)" if out.size else "")] += 1


def fuzz_one(data) -> None:
    """One fuzz case: the parse fuzz and the dense fuzz."""
    fuzz_parse(data)
    fuzz_dense(data)


# ------------------------------------------------------------------------------------------------
# driver


def run(seconds: float | None = None, examples: int | None = None, seed: int | None = None,
        batch: int = 200, verbose: bool = False) -> int:
    """Run hypothesis batches of `batch` cases until `seconds` or `examples` is reached.

    Returns the number of cases run. A failure raises (hypothesis shrinks it first).
    """
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
    print(f"ok: {n} cases, no crash, no wrong answer, no write outside out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
