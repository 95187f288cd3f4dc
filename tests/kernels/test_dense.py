"""Tests of zkernels._dense.reconstruct_dense: uncompressed inner chunks straight into a box.

Oracles: a plain-numpy twin (decode each chunk with np.frombuffer, byte-swap, place it into a
full shard array holding the fill value, slice the box) and zarr 3.1.6 itself reading
uncompressed sharded arrays. Every traversal of the kernel is exercised: row by row (C-order
output, ordinary stores), storage order (streaming stores, element-strided outputs) and chunk
C order (offsets off the slot grid, shared chunk bytes).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BytesCodec, ShardingCodec
from zarr.core.indexing import _morton_order

from zkernels._dense import reconstruct_dense
from zkernels._shard_index import parse_shard_index, shard_index_nbytes
from zkernels.errors import CorruptChunkError, ShardIndexError, ZKernelsError

EMPTY = np.uint64(2**64 - 1)

# dtype, swap units that make sense for it (0 = no swap)
DTYPES = {
    "u1": (0,),
    "i2": (0, 2),
    "u2": (0, 2),
    "i4": (0, 4),
    "f4": (0, 4),
    "f8": (0, 8),
    "c8": (0, 4),
    "c16": (0, 8),
    "V16": (0, 4, 8),
    "V3": (0,),
    "u1,<u2": (0,),  # structured, itemsize 3
    "V5": (0,),
}


# ------------------------------------------------------------------------------------------------
# building shards and the numpy twin


def chunk_order(cps, layout, rng):
    """Storage position of each chunk (linear C-order index -> slot)."""
    n = int(np.prod(cps))
    if layout == "morton" and n:
        order = np.asarray(_morton_order(tuple(cps)))
        lin = np.ravel_multi_index(tuple(order.T), cps) if len(cps) else np.zeros(1, np.intp)
        pos = np.empty(n, np.intp)
        pos[lin] = np.arange(n)
        return pos
    if layout == "c":
        return np.arange(n)
    return rng.permutation(n)


def make_shard(rng, cps, chunk_shape, itemsize, *, empty_frac=0.0, layout="morton", lead=0):
    """Random shard bytes and its parsed index.

    layout: "morton" / "c" / "random" packed back to back (zarr's layout), "gaps" (random gaps,
    not multiples of the chunk size), "shared" (two entries pointing at the same bytes).
    """
    cps = tuple(cps)
    n = int(np.prod(cps))
    cn = int(np.prod(chunk_shape)) * itemsize
    empty = rng.random(n) < empty_frac
    pos = chunk_order(cps, "random" if layout in ("gaps", "shared") else layout, rng)
    index = np.full((n, 2), EMPTY, dtype=np.uint64)
    full = np.flatnonzero(~empty)
    # place non-empty chunks in storage order
    offsets = np.empty(n, dtype=np.int64)
    cursor = lead
    for lin in sorted(full, key=lambda i: pos[i]):
        if layout == "gaps":
            cursor += int(rng.integers(0, 3 * itemsize + 5))
        offsets[lin] = cursor
        cursor += cn
    if layout == "shared" and len(full) >= 2:
        a, b = rng.choice(full, 2, replace=False)
        offsets[b] = offsets[a]
    index[full, 0] = offsets[full]
    index[full, 1] = cn
    shard = rng.integers(0, 256, cursor + int(rng.integers(0, 9)), dtype=np.uint8).tobytes()
    return shard, index.reshape(cps + (2,))


def twin(shard, index, chunk_shape, dtype, region_start, box_shape, fill_value, swap_unit):
    """The box, decoded chunk by chunk with numpy: the reference result."""
    dtype = np.dtype(dtype)
    cps = index.shape[:-1]
    shard_shape = tuple(c * s for c, s in zip(cps, chunk_shape))
    fill = np.frombuffer(fill_value if fill_value is not None else bytes(dtype.itemsize), dtype)
    full = np.empty(shard_shape, dtype)
    full[...] = fill[0]
    cn = int(np.prod(chunk_shape)) * dtype.itemsize
    for c in np.ndindex(*cps):
        off = int(index[c][0])
        if off == int(EMPTY):
            continue
        if not all(i * s < a + b and (i + 1) * s > a
                   for i, s, a, b in zip(c, chunk_shape, region_start, box_shape)):
            continue  # outside the box: never read
        raw = np.frombuffer(shard, np.uint8, count=cn, offset=off)
        if swap_unit:
            raw = raw.reshape(-1, swap_unit)[:, ::-1].ravel()
        chunk = np.frombuffer(raw.tobytes(), dtype).reshape(chunk_shape)
        full[tuple(slice(i * s, (i + 1) * s) for i, s in zip(c, chunk_shape))] = chunk
    return full[tuple(slice(a, a + b) for a, b in zip(region_start, box_shape))]


def as_bytes(a):
    return np.ascontiguousarray(a).tobytes()


def make_out(box_shape, dtype, layout, rng):
    """An output of `layout`, plus the backing buffer and a mask of the bytes `out` covers."""
    dtype = np.dtype(dtype)
    box_shape = tuple(box_shape)
    if layout == "C":
        out = np.empty(box_shape, dtype)
        return out, None, None
    if layout == "F":
        out = np.empty(box_shape, dtype, order="F")
        return out, None, None
    # views into a bigger buffer filled with a sentinel, so writes outside `out` are visible
    if layout == "view":  # step-1 slice of a bigger array: rows apart, last axis contiguous
        big_shape, sl = tuple(s + 3 for s in box_shape), tuple(slice(1, 1 + s) for s in box_shape)
    elif layout == "strided":  # non-contiguous everywhere
        big_shape = tuple(2 * s + 1 for s in box_shape)
        sl = tuple(slice(1, 1 + 2 * s, 2) for s in box_shape)
    elif layout == "reversed":  # negative strides
        big_shape, sl = tuple(s + 2 for s in box_shape), tuple(slice(s, 0, -1) for s in box_shape)
    elif layout == "unaligned":  # C-contiguous at an odd byte address
        nbytes = int(np.prod(box_shape)) * dtype.itemsize
        buf = np.full(nbytes + 16, 0xA5, np.uint8)
        out = buf[3 : 3 + nbytes].view(dtype).reshape(box_shape)
        return out, buf, _footprint(buf, out)
    else:
        raise AssertionError(layout)
    nbytes = int(np.prod(big_shape)) * dtype.itemsize
    buf = np.full(nbytes, 0xA5, np.uint8)
    big = buf.view(dtype).reshape(big_shape)
    out = big[sl]
    return out, buf, _footprint(buf, out)


def _footprint(buf, out):
    """Boolean mask over `buf`'s bytes: True where `out` has a byte."""
    mask = np.zeros(buf.size, bool)
    if out.size == 0:
        return mask
    base = out.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
    offs = np.zeros(out.shape, np.int64) + base
    for k, (n, s) in enumerate(zip(out.shape, out.strides)):
        shape = [1] * out.ndim
        shape[k] = n
        offs = offs + (np.arange(n, dtype=np.int64) * s).reshape(shape)
    offs = offs.ravel()[:, None] + np.arange(out.itemsize)
    mask[offs.ravel()] = True
    return mask


def check(shard, index, out, chunk_shape, region_start, fill_value, swap_unit, buf=None,
          mask=None, streaming=None):
    expected = twin(shard, index, chunk_shape, out.dtype, region_start, out.shape, fill_value,
                    swap_unit)
    before = buf.copy() if buf is not None else None
    reconstruct_dense(shard, index, out, chunk_shape=chunk_shape, region_start=region_start,
                      fill_value=fill_value, swap_unit=swap_unit, streaming=streaming)
    assert as_bytes(out) == as_bytes(expected)
    if buf is not None:
        assert np.array_equal(buf[~mask], before[~mask]), "wrote outside out"


# ------------------------------------------------------------------------------------------------
# parametrized against the twin


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("streaming", [None, True, False])
def test_whole_shard_dtypes(dtype, swap, streaming):
    rng = np.random.default_rng(abs(hash((dtype, swap, streaming))) % 2**32)
    dt = np.dtype(dtype)
    unit = DTYPES[dtype][-1] if swap else 0
    chunk_shape, cps = (4, 24), (3, 2)  # rows of 24 elements: >= 64 bytes, streaming kicks in
    shard, index = make_shard(rng, cps, chunk_shape, dt.itemsize, empty_frac=0.3)
    out = np.empty((12, 48), dt)
    fill = rng.integers(0, 256, dt.itemsize, dtype=np.uint8).tobytes()
    check(shard, index, out, chunk_shape, (0, 0), fill, unit, streaming=streaming)
    check(shard, index, out, chunk_shape, (0, 0), None, unit, streaming=streaming)


@pytest.mark.parametrize("layout", ["C", "F", "view", "strided", "reversed", "unaligned"])
@pytest.mark.parametrize("shard_layout", ["morton", "c", "random", "gaps", "shared"])
@pytest.mark.parametrize("box", ["whole", "sub", "edge", "one-column", "one-element"])
@pytest.mark.parametrize("streaming", [None, True])
def test_layouts_and_boxes(layout, shard_layout, box, streaming):
    rng = np.random.default_rng(abs(hash((layout, shard_layout, box, streaming))) % 2**32)
    dt = np.dtype("<u4")
    chunk_shape, cps = (3, 5, 20), (2, 3, 2)
    shard_shape = tuple(c * s for c, s in zip(chunk_shape, cps))
    if box == "whole":
        start, shape = (0, 0, 0), shard_shape
    elif box == "sub":
        start, shape = (1, 4, 7), (4, 9, 30)
    elif box == "edge":  # array edge: the box stops inside the last chunks
        start, shape = (0, 0, 0), (5, 12, 33)
    elif box == "one-column":
        start, shape = (2, 3, 17), (3, 8, 1)
    else:
        start, shape = (4, 11, 39), (1, 1, 1)
    shard, index = make_shard(rng, cps, chunk_shape, dt.itemsize, empty_frac=0.25,
                              layout=shard_layout, lead=int(rng.integers(0, 40)))
    out, buf, mask = make_out(shape, dt, layout, rng)
    check(shard, index, out, chunk_shape, start, b"\x01\x02\x03\x04", 4, buf, mask,
          streaming=streaming)
    check(shard, index, out, chunk_shape, start, None, 0, buf, mask, streaming=streaming)


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
def test_ndim(ndim):
    rng = np.random.default_rng(ndim)
    chunk_shape = (3, 2, 4, 5)[:ndim]
    cps = (2, 3, 1, 2)[:ndim]
    shard, index = make_shard(rng, cps, chunk_shape, 8, empty_frac=0.3)
    shard_shape = tuple(c * s for c, s in zip(chunk_shape, cps))
    for order in "CF":
        out = np.empty(shard_shape, "f8", order=order)
        check(shard, index, out, chunk_shape, (0,) * ndim, None, 8)


def test_zero_size_box_and_empty_shard():
    rng = np.random.default_rng(1)
    shard, index = make_shard(rng, (2, 2), (3, 3), 2)
    out = np.empty((0, 4), "u2")
    reconstruct_dense(shard, index, out, chunk_shape=(3, 3), region_start=(2, 1))
    # an all-empty shard needs no bytes at all
    index = np.full((2, 2, 2), EMPTY)
    out = np.ones((6, 6), "u2")
    reconstruct_dense(b"", index, out, chunk_shape=(3, 3), region_start=(0, 0),
                      fill_value=b"\x07\x00")
    assert (out == 7).all()


def test_buffer_types():
    rng = np.random.default_rng(2)
    shard, index = make_shard(rng, (2, 2), (4, 4), 4)
    expected = twin(shard, index, (4, 4), "i4", (0, 0), (8, 8), None, 0)
    padded = shard + bytes(-len(shard) % 4)
    for buf in (shard, bytearray(shard), memoryview(shard), np.frombuffer(shard, np.uint8),
                np.frombuffer(padded, np.uint32), memoryview(np.frombuffer(padded, np.uint32))):
        out = np.empty((8, 8), "i4")
        reconstruct_dense(buf, index, out, chunk_shape=(4, 4), region_start=(0, 0))
        assert as_bytes(out) == as_bytes(expected)
    # index in non-native byte order, non-contiguous: converted
    out = np.empty((8, 8), "i4")
    idx2 = np.asfortranarray(index.astype(index.dtype.newbyteorder()))
    reconstruct_dense(shard, idx2, out, chunk_shape=(4, 4), region_start=(0, 0))
    assert as_bytes(out) == as_bytes(expected)
    # fill value as numpy scalar bytes
    out = np.empty((8, 8), "i4")
    reconstruct_dense(shard, index, out, chunk_shape=(4, 4), region_start=(0, 0),
                      fill_value=np.array(5, "i4"))


# ------------------------------------------------------------------------------------------------
# hypothesis against the twin


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 4))
    chunk_shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    cps = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(list(DTYPES)))
    unit = draw(st.sampled_from(DTYPES[dtype]))
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
        "unit": unit,
        "start": tuple(start),
        "shape": tuple(shape),
        "layout": draw(st.sampled_from(["C", "F", "view", "strided", "reversed", "unaligned"])),
        "shard_layout": draw(st.sampled_from(["morton", "c", "random", "gaps", "shared"])),
        "empty_frac": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "fill": draw(st.booleans()),
        "streaming": draw(st.sampled_from([None, True, False])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=150, deadline=None)
@given(cases())
def test_hypothesis_vs_twin(case):
    rng = np.random.default_rng(case["seed"])
    dt = np.dtype(case["dtype"])
    shard, index = make_shard(rng, case["cps"], case["chunk_shape"], dt.itemsize,
                              empty_frac=case["empty_frac"], layout=case["shard_layout"])
    out, buf, mask = make_out(case["shape"], dt, case["layout"], rng)
    fill = rng.integers(0, 256, dt.itemsize, dtype=np.uint8).tobytes() if case["fill"] else None
    check(shard, index, out, case["chunk_shape"], case["start"], fill, case["unit"], buf, mask,
          streaming=case["streaming"])


# ------------------------------------------------------------------------------------------------
# against zarr


def shard_bytes(store, key):
    return store._store_dict[key].to_bytes()


@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("index_location", ["end", "start"])
@pytest.mark.parametrize("dtype", ["u2", "f4", "c16", "i8"])
def test_against_zarr(endian, index_location, dtype):
    rng = np.random.default_rng(7)
    shape, shard, inner = (45, 70), (16, 32), (8, 16)  # edge shards cut chunks
    dt = np.dtype(dtype)
    store = zarr.storage.MemoryStore()
    fill = 3
    arr = zarr.create_array(
        store=store, shape=shape, chunks=shard, dtype=dt, fill_value=fill, compressors=None,
        serializer=ShardingCodec(chunk_shape=inner, codecs=[BytesCodec(endian=endian)],
                                 index_location=index_location),
        config={"write_empty_chunks": False},
    )
    data = (rng.random(shape) * 1000).astype(dt)
    data[:8, :16] = fill  # some empty inner chunks
    data[24:40, 32:48] = fill
    arr[:] = data
    got = np.empty(shape, dt)
    got[...] = 77
    stored = dt.newbyteorder("<" if endian == "little" else ">")
    swap = 0 if stored.isnative or dt.itemsize == 1 else (dt.itemsize // 2 if dt.kind == "c"
                                                          else dt.itemsize)
    cps = (shard[0] // inner[0], shard[1] // inner[1])
    nbi = shard_index_nbytes(int(np.prod(cps)))
    fill_bytes = np.array(fill, dt).tobytes()
    for si in range(-(-shape[0] // shard[0])):
        for sj in range(-(-shape[1] // shard[1])):
            key = f"c/{si}/{sj}"
            if key not in store._store_dict:
                continue
            raw = shard_bytes(store, key)
            idx_raw = raw[:nbi] if index_location == "start" else raw[-nbi:]
            index = parse_shard_index(idx_raw, cps, shard_nbytes=len(raw),
                                      index_location=index_location)
            r0, c0 = si * shard[0], sj * shard[1]
            box = got[r0 : r0 + shard[0], c0 : c0 + shard[1]]
            reconstruct_dense(raw, index, box, chunk_shape=inner, region_start=(0, 0),
                              fill_value=fill_bytes, swap_unit=swap)
            # a sub-box too, into an F-ordered output
            sub = np.empty((min(5, box.shape[0] - 2), min(19, box.shape[1] - 3)), dt, order="F")
            reconstruct_dense(raw, index, sub, chunk_shape=inner, region_start=(2, 3),
                              fill_value=fill_bytes, swap_unit=swap)
            np.testing.assert_array_equal(sub, arr[r0 + 2 : r0 + 2 + sub.shape[0],
                                                   c0 + 3 : c0 + 3 + sub.shape[1]])
    np.testing.assert_array_equal(got, arr[:])


# ------------------------------------------------------------------------------------------------
# corrupted input: a clear error, nothing written


def corrupt_cases():
    rng = np.random.default_rng(11)
    shard, index = make_shard(rng, (2, 3), (4, 5), 2, empty_frac=0.2)
    full = [c for c in np.ndindex(2, 3) if index[c][0] != EMPTY]
    c = full[0]
    cases = []
    bad = index.copy()
    bad[c][1] = 39  # nbytes wrong
    cases.append(("nbytes", shard, bad, CorruptChunkError, "has 39 bytes, expected 40"))
    bad = index.copy()
    bad[c][0] = len(shard) - 10
    cases.append(("past-end", shard, bad, ShardIndexError, "past the end"))
    bad = index.copy()
    bad[c][0] = 2**64 - 20
    cases.append(("overflow", shard, bad, ShardIndexError, "overflows"))
    bad = index.copy()
    bad[c][1] = EMPTY
    cases.append(("half-empty", shard, bad, ShardIndexError, "half-empty"))
    last = max(int(index[c][0]) for c in full)
    cases.append(("truncated", shard[: last + 20], index, ShardIndexError, "past the end"))
    return cases


@pytest.mark.parametrize("name,shard,index,exc,msg", corrupt_cases(),
                         ids=[c[0] for c in corrupt_cases()])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_corrupted(name, shard, index, exc, msg, layout):
    out = np.full((8, 15), 0x5A5A, "u2", order=layout)
    with pytest.raises(exc, match=msg) as info:
        reconstruct_dense(shard, index, out, chunk_shape=(4, 5), region_start=(0, 0))
    assert isinstance(info.value, ZKernelsError)
    assert (out == 0x5A5A).all(), "out was written before the error"


def test_corrupted_chunk_outside_box_is_not_read():
    rng = np.random.default_rng(12)
    shard, index = make_shard(rng, (2, 2), (4, 4), 1)
    index[1, 1] = (len(shard) + 100, 16)  # bad, but outside the box below
    out = np.empty((4, 8), "u1")
    check(shard, index, out, (4, 4), (0, 0), None, 0)
    with pytest.raises(ShardIndexError, match=r"inner chunk \(1, 1\)"):
        reconstruct_dense(shard, index, np.empty((8, 8), "u1"), chunk_shape=(4, 4),
                          region_start=(0, 0))


def test_argument_errors():
    rng = np.random.default_rng(13)
    shard, index = make_shard(rng, (2, 2), (4, 4), 2)
    out = np.empty((8, 8), "u2")
    kw = {"chunk_shape": (4, 4), "region_start": (0, 0)}
    with pytest.raises(ValueError, match="dimensions disagree"):
        reconstruct_dense(shard, index, out, chunk_shape=(4, 4, 1), region_start=(0, 0))
    with pytest.raises(ValueError, match="dimensions disagree"):
        reconstruct_dense(shard, index[0], out, **kw)
    with pytest.raises(ValueError, match="outside the shard"):
        reconstruct_dense(shard, index, out, chunk_shape=(4, 4), region_start=(1, 0))
    with pytest.raises(ValueError, match="outside the shard"):
        reconstruct_dense(shard, index, out[:2], chunk_shape=(4, 4), region_start=(-1, 0))
    with pytest.raises(ValueError, match="chunk_shape must be positive"):
        reconstruct_dense(shard, index, out[:0], chunk_shape=(0, 4), region_start=(0, 0))
    with pytest.raises(ValueError, match="fill_value has 1 bytes"):
        reconstruct_dense(shard, index, out, fill_value=b"\x00", **kw)
    with pytest.raises(ValueError, match="swap_unit"):
        reconstruct_dense(shard, index, out, swap_unit=4, **kw)
    with pytest.raises(ValueError, match="swap_unit"):
        reconstruct_dense(shard, index, out, swap_unit=3, **kw)
    ro = np.empty((8, 8), "u2")
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        reconstruct_dense(shard, index, ro, **kw)
    with pytest.raises(TypeError):
        reconstruct_dense(shard, index, [[0] * 8] * 8, **kw)
    with pytest.raises(TypeError, match="plain data"):
        reconstruct_dense(shard, index, np.empty((8, 8), object), **kw)
    with pytest.raises(TypeError, match="plain data"):
        reconstruct_dense(shard, index, np.empty((8, 8), [("a", "u1"), ("b", object)]), **kw)
    with pytest.raises(ShardIndexError, match="uint64"):
        reconstruct_dense(shard, index.astype(np.int64), out, **kw)
    with pytest.raises(TypeError):
        reconstruct_dense(shard, index, out, chunk_shape=(4, "a"), region_start=(0, 0))
    with pytest.raises(TypeError, match="C-contiguous"):
        reconstruct_dense(np.frombuffer(shard, np.uint8)[::2], index, out, **kw)
    # sizes past Py_ssize_t: refused, not wrapped around
    empty = np.full((2, 2, 2), EMPTY)
    with pytest.raises(ValueError, match="too large"):
        reconstruct_dense(b"", empty, out[:1, :1], chunk_shape=(2**62, 4), region_start=(0, 0))
    with pytest.raises(ValueError, match="too large"):
        reconstruct_dense(b"", empty, out[:1, :1], chunk_shape=(2**40, 2**40),
                          region_start=(0, 0))
    with pytest.raises(ValueError, match="outside the shard"):
        reconstruct_dense(b"", empty, out[:1, :1], chunk_shape=(4, 4), region_start=(2**70, 0))


# ------------------------------------------------------------------------------------------------
# the GIL is released: counted, not timed


def test_releases_gil():
    rng = np.random.default_rng(3)
    cps, chunk_shape = (16, 16), (128, 128)  # 64 MiB of float64
    shard, index = make_shard(rng, cps, chunk_shape, 8, layout="random")
    out = np.empty((2048, 2048), "f8")
    started = threading.Event()
    done = threading.Event()

    def work():
        started.set()
        reconstruct_dense(shard, index, out, chunk_shape=chunk_shape, region_start=(0, 0),
                          swap_unit=8, streaming=False)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    count = 0
    while not done.is_set():
        count += 1
    t.join()
    # One call of tens of milliseconds and no bytecode around it in the worker: with the GIL
    # released the main thread spins freely (hundreds of thousands of iterations); holding it, the
    # main thread would be blocked from the call's start to its end and count next to nothing.
    assert count > 10_000, count
