"""Tests of zkernels._shard_index: parse, encode and the dense check of a shard index.

Oracles: a plain-numpy twin (np.frombuffer with '<u8' / '>u8', the `crc32c` package), and zarr
3.1.6 itself: real sharded arrays written by zarr, their index sliced from the stored shard and
decoded by zarr's own ShardingCodec.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.indexing import _morton_order

from zkernels._shard_index import (
    check_dense,
    encode_shard_index,
    parse_shard_index,
    shard_index_nbytes,
)
from zkernels.errors import ChecksumError, ShardIndexError, ZKernelsError

crc32c_pkg = pytest.importorskip("crc32c")

MAX = 2**64 - 1
EMPTY = np.uint64(MAX)


# ------------------------------------------------------------------------------------------------
# the numpy twin


def twin_encode(index, byteorder="little", checksum=True):
    body = np.ascontiguousarray(index, dtype=("<u8" if byteorder == "little" else ">u8")).tobytes()
    if checksum:
        body += crc32c_pkg.crc32c(body).to_bytes(4, "little")
    return body


def twin_parse(raw, cps, byteorder="little", checksum=True):
    n = int(np.prod(cps))
    body = bytes(raw[: 16 * n])
    assert len(raw) == 16 * n + (4 if checksum else 0)
    if checksum:
        assert int.from_bytes(bytes(raw[16 * n :]), "little") == crc32c_pkg.crc32c(body)
    dt = "<u8" if byteorder == "little" else ">u8"
    return np.frombuffer(body, dt).astype(np.uint64).reshape(tuple(cps) + (2,))


def random_index(rng, cps, empty_frac=0.3, chunk_nbytes=None, lead=0):
    """A valid index: non-empty chunks packed back to back in random order after `lead` bytes."""
    n = int(np.prod(cps))
    index = np.full((n, 2), EMPTY)
    cursor = lead
    for lin in rng.permutation(n):
        if rng.random() < empty_frac:
            continue
        nb = chunk_nbytes if chunk_nbytes is not None else int(rng.integers(0, 50))
        index[lin] = (cursor, nb)
        cursor += nb
    return index.reshape(tuple(cps) + (2,)), cursor


CPS = [(1,), (7,), (1, 1), (4, 3), (3, 1, 5), (2, 2, 2, 2), (1, 4, 1, 3), (32, 32)]


# ------------------------------------------------------------------------------------------------
# basics


def test_shard_index_nbytes():
    assert shard_index_nbytes(0) == 4
    assert shard_index_nbytes(10) == 164
    assert shard_index_nbytes(10, checksum=False) == 160
    assert shard_index_nbytes((4, 8)) == 16 * 32 + 4
    with pytest.raises(ValueError):
        shard_index_nbytes(-1)


@pytest.mark.parametrize("cps", CPS, ids=str)
@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("checksum", [True, False])
def test_vs_twin(cps, byteorder, checksum):
    rng = np.random.default_rng(len(cps) * 100 + int(np.prod(cps)))
    index, size = random_index(rng, cps)
    raw = twin_encode(index, byteorder, checksum)
    assert encode_shard_index(index, byteorder=byteorder, checksum=checksum) == raw
    got = parse_shard_index(raw, cps, byteorder=byteorder, checksum=checksum)
    assert got.dtype == np.uint64 and got.dtype.isnative
    assert got.flags.c_contiguous and got.shape == tuple(cps) + (2,)
    np.testing.assert_array_equal(got, twin_parse(raw, cps, byteorder, checksum))
    np.testing.assert_array_equal(got, index)
    # with the shard size: index at the end, then at the start (offsets shifted past it)
    nbi = len(raw)
    got = parse_shard_index(raw, cps, byteorder=byteorder, checksum=checksum,
                            shard_nbytes=size + nbi, index_location="end")
    np.testing.assert_array_equal(got, index)
    shifted = index.copy()
    shifted[shifted[..., 0] != EMPTY, 0] += np.uint64(nbi)
    raw2 = encode_shard_index(shifted, byteorder=byteorder, checksum=checksum)
    got = parse_shard_index(raw2, cps, byteorder=byteorder, checksum=checksum,
                            shard_nbytes=size + nbi, index_location="start")
    np.testing.assert_array_equal(got, shifted)


def test_buffer_types_and_aliases():
    rng = np.random.default_rng(5)
    index, _ = random_index(rng, (4, 4))
    raw = encode_shard_index(index)
    for buf in (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, np.uint8),
                np.frombuffer(raw, np.uint32), memoryview(np.frombuffer(raw, np.uint32))):
        np.testing.assert_array_equal(parse_shard_index(buf, (4, 4)), index)
    np.testing.assert_array_equal(parse_shard_index(raw, [4, 4]), index)
    raw_be = encode_shard_index(index, byteorder=">")
    assert raw_be == encode_shard_index(index, byteorder="big")
    from zarr.codecs.bytes import Endian

    np.testing.assert_array_equal(parse_shard_index(raw_be, (4, 4), byteorder=Endian.big), index)
    with pytest.raises(ValueError, match="byteorder"):
        parse_shard_index(raw, (4, 4), byteorder="middle")
    with pytest.raises(ValueError, match="index_location"):
        parse_shard_index(raw, (4, 4), index_location="middle")
    with pytest.raises(TypeError, match="C-contiguous"):
        parse_shard_index(np.frombuffer(raw + raw, np.uint8)[::2], (4, 4))


def test_encode_any_layout_and_byte_order():
    rng = np.random.default_rng(6)
    index, _ = random_index(rng, (3, 5))
    expected = twin_encode(index)
    assert encode_shard_index(index.astype(">u8")) == expected
    assert encode_shard_index(np.asfortranarray(index)) == expected
    big = np.zeros((6, 10, 4), np.uint64)
    big[::2, ::2, 1:3] = index
    view = big[::2, ::2, 1:3]
    assert not view.flags.c_contiguous
    assert encode_shard_index(view) == expected
    assert encode_shard_index(index, byteorder="big", checksum=False) == twin_encode(
        index, "big", False)


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros((3, 2), np.int64), "uint64"),
        (np.zeros((3, 2), np.float64), "uint64"),
        (np.zeros((3, 2), np.uint32), "uint64"),
        (np.zeros((3, 3), np.uint64), "shape"),
        (np.zeros((2, 3, 1), np.uint64), "shape"),
        (np.zeros((), np.uint64), "shape"),
        ([[0, 1]], "numpy"),
    ],
)
def test_encode_rejects(bad, msg):
    with pytest.raises(ShardIndexError, match=msg):
        encode_shard_index(bad)


def test_zero_length_entries_are_legal():
    index = np.array([[[0, 0], [5, 0]], [[0, 5], [MAX, MAX]]], np.uint64)
    raw = encode_shard_index(index)
    nbi = len(raw)
    # at the end: zero-length chunks anywhere inside the data region, even at its end
    got = parse_shard_index(raw, (2, 2), shard_nbytes=5 + nbi)
    np.testing.assert_array_equal(got, index)
    # a zero-length entry at the boundary of the index overlaps nothing
    nbi2 = shard_index_nbytes(2)
    index2 = np.array([[[nbi2, 0], [nbi2, 5]]], np.uint64)
    got = parse_shard_index(encode_shard_index(index2), (1, 2), shard_nbytes=nbi2 + 5,
                            index_location="start")
    np.testing.assert_array_equal(got, index2)


# ------------------------------------------------------------------------------------------------
# hypothesis


@st.composite
def index_cases(draw):
    ndim = draw(st.integers(1, 4))
    cps = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    return {
        "cps": cps,
        "byteorder": draw(st.sampled_from(["little", "big"])),
        "checksum": draw(st.booleans()),
        "empty_frac": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "location": draw(st.sampled_from(["start", "end"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=200, deadline=None)
@given(index_cases())
def test_hypothesis_round_trip(case):
    rng = np.random.default_rng(case["seed"])
    cps, bo, ck = case["cps"], case["byteorder"], case["checksum"]
    nbi = shard_index_nbytes(int(np.prod(cps)), ck)
    lead = nbi if case["location"] == "start" else 0
    index, end = random_index(rng, cps, case["empty_frac"], lead=lead)
    size = end + (0 if case["location"] == "start" else nbi)
    raw = encode_shard_index(index, byteorder=bo, checksum=ck)
    assert raw == twin_encode(index, bo, ck)
    got = parse_shard_index(raw, cps, byteorder=bo, checksum=ck, shard_nbytes=size,
                            index_location=case["location"])
    np.testing.assert_array_equal(got, index)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_hypothesis_arbitrary_entries(data):
    """Arbitrary uint64 pairs: parse returns them or raises ShardIndexError, as the twin says."""
    n = data.draw(st.integers(1, 6))
    special = st.sampled_from([0, 1, MAX, MAX - 1, 2**63, 100])
    vals = data.draw(st.lists(st.one_of(st.integers(0, 200), special), min_size=2 * n,
                              max_size=2 * n))
    index = np.array(vals, np.uint64).reshape(n, 2)
    shard_nbytes = data.draw(st.one_of(st.none(), st.integers(0, 400)))
    location = data.draw(st.sampled_from(["start", "end"]))
    raw = encode_shard_index(index)
    nbi = len(raw)

    def twin_error():
        if shard_nbytes is not None and shard_nbytes < nbi:
            return "too short"
        for off, nb in index.tolist():
            if off == MAX and nb == MAX:
                continue
            if off == MAX or nb == MAX:
                return "half empty"
            if off + nb > MAX:
                return "overflow"
            if shard_nbytes is not None and off + nb > shard_nbytes:
                return "past the end"
            if location == "start":
                lo, hi = 0, nbi
            elif shard_nbytes is not None:
                lo, hi = shard_nbytes - nbi, shard_nbytes
            else:
                lo = hi = 0
            if nb and off < hi and off + nb > lo:
                return "overlaps"
        return None

    expected = twin_error()
    if expected is None:
        got = parse_shard_index(raw, (n,), shard_nbytes=shard_nbytes, index_location=location)
        np.testing.assert_array_equal(got, index)
    else:
        with pytest.raises(ShardIndexError, match=expected):
            parse_shard_index(raw, (n,), shard_nbytes=shard_nbytes, index_location=location)


# ------------------------------------------------------------------------------------------------
# corrupted input


def _valid(cps=(2, 3), location="end", checksum=True):
    rng = np.random.default_rng(9)
    nbi = shard_index_nbytes(int(np.prod(cps)), checksum)
    index, end = random_index(rng, cps, 0.2, chunk_nbytes=10,
                              lead=nbi if location == "start" else 0)
    size = end + (0 if location == "start" else nbi)
    return index, size, nbi


@pytest.mark.parametrize("checksum", [True, False])
def test_wrong_length(checksum):
    index, _size, nbi = _valid(checksum=checksum)
    raw = encode_shard_index(index, checksum=checksum)
    for bad in (raw[:-1], raw + b"\x00", raw[:16], b""):
        with pytest.raises(ShardIndexError, match=rf"has {len(bad)} bytes, expected {nbi}"):
            parse_shard_index(bad, (2, 3), checksum=checksum)


@pytest.mark.parametrize("pos", [0, 17, -5, -1])
def test_flipped_byte_checksum(pos):
    index, _size, _nbi = _valid()
    raw = bytearray(encode_shard_index(index))
    raw[pos] ^= 0x40
    with pytest.raises(ChecksumError, match=r"stored crc32c 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}"):
        parse_shard_index(bytes(raw), (2, 3))


def test_offset_past_the_end():
    index, size, nbi = _valid()
    bad = index.copy()
    bad[1, 2] = (size - nbi - 5, 10)  # runs into the index region
    bad[1, 1] = (size + 1, 10)
    with pytest.raises(ShardIndexError, match=r"entry \(1, 1\) \(offset=\d+, nbytes=10\).*"
                                              rf"past the end of the {size}-byte shard"):
        parse_shard_index(encode_shard_index(bad), (2, 3), shard_nbytes=size)
    bad = index.copy()
    bad[0, 1] = (MAX - 3, 10)
    with pytest.raises(ShardIndexError, match=r"entry \(0, 1\).*overflows"):
        parse_shard_index(encode_shard_index(bad), (2, 3))


def test_overlapping_the_index_end():
    index, size, nbi = _valid()
    bad = index.copy()
    bad[0, 2] = (size - nbi - 5, 10)
    with pytest.raises(ShardIndexError, match=rf"entry \(0, 2\).*overlaps the shard index, "
                                              rf"which occupies bytes \[{size - nbi}, {size}\)"):
        parse_shard_index(encode_shard_index(bad), (2, 3), shard_nbytes=size)
    # without the shard size the end location cannot be checked
    parse_shard_index(encode_shard_index(bad), (2, 3))


def test_overlapping_the_index_start():
    index, size, nbi = _valid(location="start")
    parse_shard_index(encode_shard_index(index), (2, 3), shard_nbytes=size,
                      index_location="start")
    bad = index.copy()
    bad[1, 0] = (nbi - 1, 10)
    for kw in ({"shard_nbytes": size}, {}):
        with pytest.raises(ShardIndexError, match=rf"entry \(1, 0\).*overlaps the shard index, "
                                                  rf"which occupies bytes \[0, {nbi}\)"):
            parse_shard_index(encode_shard_index(bad), (2, 3), index_location="start", **kw)


@pytest.mark.parametrize("which", [0, 1])
def test_half_empty(which):
    index, size, _nbi = _valid()
    bad = index.copy()
    bad[1, 2, which] = EMPTY
    with pytest.raises(ShardIndexError, match=r"entry \(1, 2\).*half empty"):
        parse_shard_index(encode_shard_index(bad), (2, 3), shard_nbytes=size)


def test_shard_too_short_for_index():
    index, _size, nbi = _valid()
    raw = encode_shard_index(index)
    with pytest.raises(ShardIndexError, match=rf"shard of {nbi - 1} bytes is too short to hold "
                                              rf"its {nbi}-byte index"):
        parse_shard_index(raw, (2, 3), shard_nbytes=nbi - 1)
    with pytest.raises(ValueError):
        parse_shard_index(raw, (2, 3), shard_nbytes=-1)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        parse_shard_index(b"\x00" * 3, (1,))
    assert issubclass(ChecksumError, ZKernelsError)


# ------------------------------------------------------------------------------------------------
# against zarr


def _zarr_shards(tmp_path, *, endian, checksum, location, compressors, store_kind, dtype="u2"):
    store = (zarr.storage.MemoryStore() if store_kind == "memory"
             else zarr.storage.LocalStore(tmp_path))
    inner = (4, 8)
    shard = (16, 16)
    index_codecs = [BytesCodec(endian=endian)] + ([Crc32cCodec()] if checksum else [])
    codecs = [BytesCodec()] + ([ZstdCodec()] if compressors else [])
    codec = ShardingCodec(chunk_shape=inner, codecs=codecs, index_codecs=index_codecs,
                          index_location=location)
    arr = zarr.create_array(store=store, shape=(40, 32), chunks=shard, dtype=dtype, fill_value=0,
                            serializer=codec, compressors=None,
                            config={"write_empty_chunks": False})
    rng = np.random.default_rng(4)
    data = rng.integers(1, 1000, (40, 32)).astype(dtype)
    data[:4, :8] = 0  # empty inner chunks
    data[20:28, 16:32] = 0
    arr[:] = data
    out = []
    for key in ("c/0/0", "c/0/1", "c/1/0", "c/1/1", "c/2/0", "c/2/1"):
        raw = asyncio.run(store.get(key, prototype=default_buffer_prototype()))
        if raw is not None:
            out.append((key, raw.to_bytes()))
    return codec, (4, 2), out


@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("checksum", [True, False])
@pytest.mark.parametrize("location", ["end", "start"])
@pytest.mark.parametrize("compressors", [False, True])
@pytest.mark.parametrize("store_kind", ["memory", "local"])
def test_against_zarr(tmp_path, endian, checksum, location, compressors, store_kind):
    codec, cps, shards = _zarr_shards(tmp_path, endian=endian, checksum=checksum,
                                      location=location, compressors=compressors,
                                      store_kind=store_kind)
    assert shards
    nbi = shard_index_nbytes(int(np.prod(cps)), checksum)
    assert nbi == codec._shard_index_size(cps)
    saw_empty = False
    for key, raw in shards:
        idx_raw = raw[:nbi] if location == "start" else raw[-nbi:]
        got = parse_shard_index(idx_raw, cps, byteorder=endian, checksum=checksum,
                                shard_nbytes=len(raw), index_location=location)
        buf = default_buffer_prototype().buffer.from_bytes(idx_raw)
        expected = asyncio.run(codec._decode_shard_index(buf, cps)).offsets_and_lengths
        np.testing.assert_array_equal(got, expected)
        assert encode_shard_index(got, byteorder=endian, checksum=checksum) == idx_raw
        saw_empty |= bool((got[..., 0] == EMPTY).any())
        # zarr's own encoder agrees too
        from zarr.codecs.sharding import _ShardIndex

        zbytes = asyncio.run(codec._encode_shard_index(_ShardIndex(got))).to_bytes()
        assert zbytes == idx_raw
        # dense check: uncompressed inner chunks all have 4*8*2 bytes
        dense, perm = check_dense(got, 64)
        if not compressors:
            assert dense
            offsets = got.reshape(-1, 2)[perm, 0]
            assert (np.diff(offsets.astype(np.int64)) == 64).all()
            # zarr writes morton order: the permutation is the morton order minus empties
            morton = np.ravel_multi_index(tuple(np.asarray(_morton_order(cps)).T), cps)
            nonempty = got.reshape(-1, 2)[:, 0] != EMPTY
            np.testing.assert_array_equal(perm, morton[nonempty[morton]])
    assert saw_empty


# ------------------------------------------------------------------------------------------------
# check_dense


def twin_dense(index, chunk_nbytes):
    flat = index.reshape(-1, 2)
    full = np.flatnonzero(~((flat[:, 0] == EMPTY) & (flat[:, 1] == EMPTY)))
    entries = [(int(flat[i, 0]), int(flat[i, 1]), int(i)) for i in full]
    if any(nb != chunk_nbytes or off == MAX or off + nb > MAX for off, nb, _ in entries):
        return False, None
    entries.sort()
    for (o1, n1, _), (o2, _, _) in itertools.pairwise(entries):
        if o1 + n1 > o2:
            return False, None
    return True, [i for _, _, i in entries]


@pytest.mark.parametrize("cps", [(1,), (5,), (4, 4), (3, 2, 5), (8, 8)], ids=str)
@pytest.mark.parametrize("kind", ["packed", "gaps", "empty", "all-empty"])
def test_check_dense_dense(cps, kind):
    rng = np.random.default_rng(int(np.prod(cps)))
    cn = 24
    index, _ = random_index(rng, cps, 0.0 if kind in ("packed", "gaps") else
                            (1.0 if kind == "all-empty" else 0.4), chunk_nbytes=cn, lead=7)
    if kind == "gaps":
        flat = index.reshape(-1, 2)
        order = np.argsort(flat[:, 0], kind="stable")
        flat[order, 0] += np.cumsum(rng.integers(0, 30, len(order))).astype(np.uint64)
    dense, perm = check_dense(index, cn)
    exp_dense, exp_perm = twin_dense(index, cn)
    assert dense and exp_dense
    assert perm.dtype == np.intp
    np.testing.assert_array_equal(perm, exp_perm)


@pytest.mark.parametrize(
    "mutate",
    ["size", "overlap", "same-offset", "half-empty", "overflow"],
)
def test_check_dense_not_dense(mutate):
    rng = np.random.default_rng(3)
    cn = 16
    index, _ = random_index(rng, (4, 4), 0.0, chunk_nbytes=cn)
    flat = index.reshape(-1, 2)
    if mutate == "size":
        flat[5, 1] = cn + 1
    elif mutate == "overlap":
        j = int(np.flatnonzero(flat[:, 0] == 0)[0])
        k = int(np.flatnonzero(flat[:, 0] == cn)[0])
        flat[k, 0] = cn - 1
        assert j != k
    elif mutate == "same-offset":
        flat[3, 0] = flat[4, 0]
    elif mutate == "half-empty":
        flat[2, 0] = EMPTY
    else:
        flat[2, 0] = MAX - 4
    dense, perm = check_dense(index, cn)
    assert twin_dense(index, cn)[0] is False
    assert dense is False
    assert perm.dtype == np.intp and perm.size == 0


def test_check_dense_zero_size_chunks():
    index = np.array([[5, 0], [5, 0], [MAX, MAX], [3, 0]], np.uint64)
    dense, perm = check_dense(index, 0)
    assert dense
    np.testing.assert_array_equal(perm, [3, 0, 1])
    assert check_dense(index, 1)[0] is False


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_check_dense_hypothesis(data):
    n = data.draw(st.integers(0, 12))
    cn = data.draw(st.integers(0, 5))
    entries = data.draw(st.lists(st.one_of(
        st.just((MAX, MAX)),
        st.tuples(st.integers(0, 60), st.sampled_from([cn, cn, cn, cn + 1])),
        st.tuples(st.sampled_from([0, MAX, MAX - 2]), st.sampled_from([cn, MAX])),
    ), min_size=n, max_size=n))
    index = np.array(entries, np.uint64).reshape(n, 2)
    dense, perm = check_dense(index, cn)
    exp_dense, exp_perm = twin_dense(index, cn)
    assert dense == exp_dense
    if dense:
        # ties (zero-size chunks at one offset) may come in any order: compare offsets, set
        np.testing.assert_array_equal(index[perm, 0], index[exp_perm, 0])
        assert sorted(perm.tolist()) == sorted(exp_perm)
    else:
        assert perm.size == 0


def test_check_dense_rejects_bad_arrays():
    with pytest.raises(ShardIndexError):
        check_dense(np.zeros((3, 2), np.int64), 8)
    with pytest.raises(ShardIndexError):
        check_dense(np.zeros((3, 3), np.uint64), 8)


# ------------------------------------------------------------------------------------------------
# the GIL is released: counted, not timed


def test_parse_releases_gil():
    n = 1 << 22  # 4 Mi entries: a 64 MiB index
    rng = np.random.default_rng(0)
    index = np.empty((n, 2), np.uint64)
    index[:, 1] = 8
    index[:, 0] = rng.permutation(n).astype(np.uint64) * np.uint64(8)
    raw = encode_shard_index(index, byteorder="big")
    started = threading.Event()
    done = threading.Event()
    result = []

    def work():
        started.set()
        result.append(parse_shard_index(raw, (n,), byteorder="big", shard_nbytes=8 * n + len(raw)))
        done.set()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    count = 0
    while not done.is_set():
        count += 1
    t.join()
    np.testing.assert_array_equal(result[0], index)
    # one call of tens of milliseconds (crc32c + byteswap of 64 MiB): the main thread spins
    # freely only if the call let go of the GIL.
    assert count > 10_000, count
