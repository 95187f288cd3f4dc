"""zkernels._coalesce.plan_chunk_reads (a shard's inner chunks -> coalesced reads and the decode
kernel's tables) against a numpy twin built on coalesce_ranges, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkernels._coalesce import ChunkReadPlan, coalesce_ranges, plan_chunk_reads
from zkernels._shard_index import parse_shard_index

EMPTY = np.uint64(2**64 - 1)


def plan_twin(index, lin, max_gap, max_size):
    """The plan in numpy: look up the chunks, drop empty and zero-length ones, coalesce."""
    flat = index.reshape(-1, 2)
    lin = np.asarray(lin, dtype=np.intp)
    offs, nbs = flat[lin, 0], flat[lin, 1]
    keep = (offs != EMPTY) & (nbs != 0)
    want = lin[keep]
    locs = np.full_like(flat, EMPTY)
    groups = np.full(flat.shape[0], -1, dtype=np.int32)
    plan = coalesce_ranges(
        offs[keep], nbs[keep], max_gap_bytes=max_gap, max_coalesced_bytes=max_size
    )
    locs[want, 0] = plan.request_offset
    locs[want, 1] = nbs[keep]
    groups[want] = plan.request_group
    return plan.groups, locs.reshape(index.shape), groups.reshape(index.shape[:-1])


def box_lin(cps, lo, hi):
    axes = [np.arange(a, b) for a, b in zip(lo, hi)]
    return np.ravel_multi_index(np.ix_(*axes), cps).reshape(-1) if axes else np.zeros(1, np.intp)


def assert_same(got, want):
    assert isinstance(got, ChunkReadPlan)
    for g, w, name in zip(got, want, ("ranges", "locs", "groups")):
        assert g.dtype == w.dtype, name
        np.testing.assert_array_equal(g, w, err_msg=name)


def random_index(rng, cps, p_empty=0.2, p_zero=0.05, gap=64, shuffle=True):
    n = int(np.prod(cps))
    sizes = rng.integers(1, 5000, n).astype(np.uint64)
    sizes[rng.random(n) < p_zero] = 0
    order = rng.permutation(n) if shuffle else np.arange(n)
    offs = np.empty(n, np.uint64)
    pos = 0
    for i in order:
        pos += int(rng.integers(0, gap + 1))
        offs[i] = pos
        pos += int(sizes[i])
    index = np.stack([offs, sizes], axis=-1)
    index[rng.random(n) < p_empty] = EMPTY
    return index.reshape(*cps, 2)


@pytest.mark.parametrize("cps", [(1,), (7,), (4, 4), (3, 5, 2), (2, 1, 3, 2)])
@pytest.mark.parametrize("gap, size", [(0, 1), (64, 1 << 20), (0, 1 << 30), (1 << 30, 6000)])
def test_box_mode_vs_twin(cps, gap, size):
    rng = np.random.default_rng(hash((cps, gap, size)) % 2**32)
    index = random_index(rng, cps)
    for _ in range(10):
        lo = [int(rng.integers(0, n)) for n in cps]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, cps)]
        got = plan_chunk_reads(index, box=(lo, hi), max_gap_bytes=gap, max_coalesced_bytes=size)
        assert_same(got, plan_twin(index, box_lin(cps, lo, hi), gap, size))


@pytest.mark.parametrize("cps", [(9,), (4, 4), (3, 5, 2)])
def test_list_mode_vs_twin(cps):
    rng = np.random.default_rng(len(cps))
    index = random_index(rng, cps)
    n = int(np.prod(cps))
    for k in (1, 2, n // 2, n):
        lin = np.sort(rng.choice(n, size=k, replace=False))
        got = plan_chunk_reads(index, chunks=lin, max_gap_bytes=64, max_coalesced_bytes=20000)
        assert_same(got, plan_twin(index, lin, 64, 20000))


def test_whole_shard_back_to_back():
    # chunks back to back (C order here), no gaps: one read covers the box
    sizes = np.arange(1, 17, dtype=np.uint64) * 10
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64)
    index = np.stack([offs, sizes], -1).reshape(4, 4, 2)
    got = plan_chunk_reads(index, box=((0, 0), (4, 4)), max_gap_bytes=0, max_coalesced_bytes=10**6)
    np.testing.assert_array_equal(got.ranges, [[0, int(sizes.sum())]])
    np.testing.assert_array_equal(got.locs, index)
    assert (got.groups == 0).all()


def test_empty_and_zero_length_chunks_are_not_read():
    index = np.full((2, 2, 2), EMPTY, np.uint64)
    index[0, 1] = (100, 0)  # zero bytes: reads as the fill value
    got = plan_chunk_reads(index, box=((0, 0), (2, 2)), max_gap_bytes=0, max_coalesced_bytes=1)
    assert got.ranges.shape == (0, 2)
    assert (got.locs == EMPTY).all() and (got.groups == -1).all()


def test_empty_box_and_empty_list():
    index = random_index(np.random.default_rng(0), (3, 3))
    for where in ({"box": ((1, 1), (1, 3))}, {"chunks": np.zeros(0, np.int64)}):
        got = plan_chunk_reads(index, **where, max_gap_bytes=0, max_coalesced_bytes=1)
        assert got.ranges.shape == (0, 2)
        assert (got.groups == -1).all()


def test_zero_dimensional_shard():
    index = np.array([5, 7], np.uint64)  # one chunk, shape (2,): chunks_per_shard ()
    got = plan_chunk_reads(index, box=((), ()), max_gap_bytes=0, max_coalesced_bytes=1)
    np.testing.assert_array_equal(got.ranges, [[5, 12]])
    np.testing.assert_array_equal(got.locs, [0, 7])
    assert got.groups.shape == () and int(got.groups) == 0


def test_plan_of_a_parsed_zarr_index():
    # an index as the shard index kernel returns it, then read back through the plan
    rng = np.random.default_rng(3)
    cps = (4, 4)
    chunks = [rng.bytes(int(rng.integers(1, 50))) for _ in range(16)]
    shard = b"".join(chunks)
    offs = np.concatenate([[0], np.cumsum([len(c) for c in chunks])[:-1]]).astype("<u8")
    raw = np.stack([offs, [len(c) for c in chunks]], -1).astype("<u8").tobytes()
    index = parse_shard_index(
        np.frombuffer(raw, np.uint8), cps, byteorder="little", checksum=False,
        shard_nbytes=len(shard) + len(raw), index_location="end",
    )
    got = plan_chunk_reads(index, box=((1, 1), (3, 4)), max_gap_bytes=8, max_coalesced_bytes=60)
    data = [shard[a:b] for a, b in got.ranges.tolist()]
    for i in range(1, 3):
        for j in range(1, 4):
            off, nb = (int(v) for v in got.locs[i, j])
            g = int(got.groups[i, j])
            assert data[g][off : off + nb] == chunks[i * 4 + j]
    assert (got.groups[0] == -1).all() and (got.groups[:, 0] == -1).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"box": ((0,), (3,))}, "outside the chunk grid"),
        ({"box": ((2,), (1,))}, "outside the chunk grid"),
        ({"box": ((0, 0), (1, 1))}, "dimensions"),
        ({"chunks": [2]}, r"\[0, 2\)"),
        ({"chunks": [-1]}, r"\[0, 2\)"),
        ({"chunks": [[0]]}, "one-dimensional"),
        ({}, "exactly one"),
        ({"box": ((0,), (1,)), "chunks": [0]}, "exactly one"),
    ],
)
def test_bad_arguments(kwargs, match):
    index = np.zeros((2, 2), np.uint64)
    with pytest.raises(ValueError, match=match):
        plan_chunk_reads(index, **kwargs, max_gap_bytes=0, max_coalesced_bytes=1)


@pytest.mark.parametrize(
    "index, match",
    [
        (np.zeros((2, 2), np.int64), "uint64"),
        (np.zeros((2, 3), np.uint64), "uint64"),
        (np.array([[EMPTY, 5]], np.uint64), "half-empty"),
        (np.array([[5, EMPTY]], np.uint64), "half-empty"),
        (np.array([[2**63, 2**63]], np.uint64), "overflows"),
    ],
)
def test_bad_index(index, match):
    with pytest.raises(ValueError, match=match):
        plan_chunk_reads(index, chunks=[0], max_gap_bytes=0, max_coalesced_bytes=1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.integers(0, 2**32 - 1),
    st.integers(0, 200),
    st.integers(1, 20000),
    st.booleans(),
)
def test_hypothesis_vs_twin(cps, seed, gap, size, shuffle):
    rng = np.random.default_rng(seed)
    cps = tuple(cps)
    index = random_index(rng, cps, gap=100, shuffle=shuffle)
    lo = [int(rng.integers(0, n + 1)) for n in cps]
    hi = [int(rng.integers(a, n + 1)) for a, n in zip(lo, cps)]
    got = plan_chunk_reads(index, box=(lo, hi), max_gap_bytes=gap, max_coalesced_bytes=size)
    assert_same(got, plan_twin(index, box_lin(cps, lo, hi), gap, size))
    lin = rng.choice(int(np.prod(cps)), size=int(rng.integers(0, np.prod(cps) + 1)))
    got = plan_chunk_reads(index, chunks=lin, max_gap_bytes=gap, max_coalesced_bytes=size)
    assert_same(got, plan_twin(index, lin, gap, size))
