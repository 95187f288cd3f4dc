"""zkernels._coalesce.coalesce_ranges against a plain-Python twin, plus the plan's invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkernels._coalesce import CoalescedRanges, coalesce_ranges

U64_MAX = 2**64 - 1


def coalesce_twin(offsets, lengths, max_gap, max_size):
    """Plain-Python statement of the rules documented in coalesce_ranges."""
    n = len(offsets)
    order = sorted(range(n), key=lambda i: offsets[i])  # sorted() is stable
    groups: list[list[int]] = []
    req_group = [0] * n
    req_offset = [0] * n
    cur = None  # index into groups of the open non-empty group
    pending: list[int] = []  # zero-length requests past the open group's stop

    def flush(before=None):
        left = []
        last = None
        for j in pending:
            if before is not None and offsets[j] >= before:
                left.append(j)
                continue
            if offsets[j] != last:
                groups.append([offsets[j], offsets[j]])
                last = offsets[j]
            req_group[j] = len(groups) - 1
            req_offset[j] = 0
        return left

    for i in order:
        o, stop = offsets[i], offsets[i] + lengths[i]
        if stop == o:
            if cur is not None and o <= groups[cur][1]:
                req_group[i] = cur
                req_offset[i] = o - groups[cur][0]
            else:
                pending.append(i)
            continue
        if cur is not None:
            gs, ge = groups[cur]
            if stop <= ge or (o <= ge + max_gap and max(ge, stop) - gs <= max_size):
                groups[cur][1] = max(ge, stop)
                for j in pending:
                    req_group[j] = cur
                    req_offset[j] = offsets[j] - gs
                pending = []
                req_group[i] = cur
                req_offset[i] = o - gs
                continue
        left = flush(before=o)
        groups.append([o, stop])
        cur = len(groups) - 1
        for j in left:
            req_group[j] = cur
            req_offset[j] = 0
        pending = []
        req_group[i] = cur
        req_offset[i] = 0
    flush()
    return groups, req_group, req_offset


def check_plan(plan, offsets, lengths, max_gap, max_size):
    """Invariants every plan must meet, independent of the twin."""
    assert isinstance(plan, CoalescedRanges)
    groups, rg, ro = plan
    n = len(offsets)
    assert groups.dtype == np.uint64 and groups.ndim == 2 and groups.shape[1] == 2
    assert rg.dtype == np.intp and rg.shape == (n,)
    assert ro.dtype == np.uint64 and ro.shape == (n,)
    g = [(int(a), int(b)) for a, b in groups]
    assert all(a <= b for a, b in g)
    # sorted by start
    assert all(g[k][0] <= g[k + 1][0] for k in range(len(g) - 1))
    # every group is used
    assert set(rg.tolist()) == set(range(len(g)))
    members: dict[int, list[int]] = {}
    for i in range(n):
        k = int(rg[i])
        assert 0 <= k < len(g)
        gs, ge = g[k]
        # the request's bytes lie inside its group, and its slice is in range
        assert int(ro[i]) == offsets[i] - gs
        assert int(ro[i]) + lengths[i] <= ge - gs
        members.setdefault(k, []).append(i)
    for k, (gs, ge) in enumerate(g):
        mem = members[k]
        nonempty = [i for i in mem if lengths[i] > 0]
        if not nonempty:
            # an empty group: only zero-length requests, all at its offset
            assert gs == ge
            assert all(offsets[i] == gs for i in mem)
            continue
        # the group is exactly the hull of its non-empty requests
        assert gs == min(offsets[i] for i in nonempty)
        assert ge == max(offsets[i] + lengths[i] for i in nonempty)
        # size bound, unless a single oversized request (plus requests contained in it)
        if ge - gs > max_size:
            big = [i for i in nonempty if lengths[i] == ge - gs]
            assert big, (gs, ge, mem)
    # non-overlapping when the non-empty requests do not overlap
    spans = sorted((offsets[i], offsets[i] + lengths[i]) for i in range(n) if lengths[i])
    disjoint = all(spans[k][1] <= spans[k + 1][0] for k in range(len(spans) - 1))
    if disjoint:
        assert all(g[k][1] <= g[k + 1][0] for k in range(len(g) - 1))
    # gap-merging property: no two consecutive non-empty groups could have been merged
    ne = [(gs, ge) for gs, ge in g if ge > gs]
    for (a0, a1), (b0, b1) in itertools.pairwise(ne):
        mergeable = b0 <= a1 + max_gap and max(a1, b1) - a0 <= max_size
        assert not mergeable, ((a0, a1), (b0, b1))
    # empty groups lie outside every non-empty group's [start, stop]
    for gs, ge in g:
        if gs == ge:
            assert not any(a <= gs <= b for a, b in ne)


def run_both(offsets, lengths, max_gap, max_size):
    plan = coalesce_ranges(offsets, lengths, max_gap_bytes=max_gap, max_coalesced_bytes=max_size)
    offsets = [int(x) for x in offsets]  # Python ints: no uint64 wrap-around in the twin
    lengths = [int(x) for x in lengths]
    check_plan(plan, offsets, lengths, max_gap, max_size)
    groups, rg, ro = coalesce_twin(offsets, lengths, max_gap, max_size)
    assert plan.groups.tolist() == groups
    assert plan.request_group.tolist() == rg
    assert plan.request_offset.tolist() == ro
    return plan


CASES = {
    "empty": ([], [], 10, 100),
    "one": ([5], [10], 0, 100),
    "one-zero-length": ([5], [0], 0, 100),
    "adjacent": ([0, 10, 20], [10, 10, 10], 0, 100),
    "gap-equal-max": ([0, 20], [10, 10], 10, 100),
    "gap-one-over": ([0, 21], [10, 10], 10, 100),
    "unsorted": ([40, 0, 20, 60], [10, 10, 10, 10], 10, 100),
    "duplicates": ([0, 0, 50, 50, 0], [10, 10, 5, 5, 10], 0, 100),
    "overlapping": ([0, 5, 8], [10, 10, 30], 0, 100),
    "contained": ([0, 2, 4], [100, 3, 3], 0, 100),
    "huge": ([0, 10, 200, 1000], [10, 10, 500, 10], 1000, 100),
    "huge-duplicate": ([0, 0, 10], [500, 500, 5], 1000, 100),
    "huge-contains-small": ([0, 100, 600], [500, 10, 10], 1000, 100),
    "size-limit-exact": ([0, 50], [50, 50], 0, 100),
    "size-limit-over": ([0, 50], [50, 51], 0, 100),
    "overlap-over-size": ([0, 50], [100, 100], 0, 100),
    "zero-length-inside": ([0, 5, 10], [10, 0, 0], 0, 100),
    "zero-length-gap": ([0, 15, 18], [10, 0, 5], 10, 100),
    "zero-length-far": ([0, 500, 500, 600], [10, 0, 0, 10], 10, 100),
    "zero-length-first": ([7, 3, 10], [0, 0, 5], 0, 100),
    "zero-length-at-new-start": ([0, 50, 50], [10, 0, 10], 0, 100),
    "zero-length-only": ([4, 4, 2], [0, 0, 0], 100, 100),
    "max-size-one": ([0, 1, 2, 3], [1, 1, 1, 1], 100, 1),
    "u64-top": ([U64_MAX - 10, U64_MAX - 5], [5, 5], 0, 100),
    "u64-end": ([U64_MAX], [0], 0, 100),
    "big-gap-limit": ([0, 2**63], [1, 1], 2**64 + 5, 2**64 + 5),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_edge_cases(case):
    offsets, lengths, max_gap, max_size = CASES[case]
    max_gap_c = min(max_gap, U64_MAX)
    max_size_c = min(max_size, U64_MAX)
    plan = coalesce_ranges(offsets, lengths, max_gap_bytes=max_gap, max_coalesced_bytes=max_size)
    check_plan(plan, offsets, lengths, max_gap_c, max_size_c)
    groups, rg, ro = coalesce_twin(offsets, lengths, max_gap_c, max_size_c)
    assert plan.groups.tolist() == groups
    assert plan.request_group.tolist() == rg
    assert plan.request_offset.tolist() == ro


def test_known_answers():
    p = coalesce_ranges([10, 0, 30, 100, 5], [5, 5, 5, 10, 0], max_gap_bytes=10,
                        max_coalesced_bytes=30)
    assert p.groups.tolist() == [[0, 15], [30, 35], [100, 110]]
    assert p.request_group.tolist() == [0, 0, 1, 2, 0]
    assert p.request_offset.tolist() == [10, 0, 0, 0, 5]
    assert coalesce_ranges([0, 20], [10, 10], max_gap_bytes=10,
                           max_coalesced_bytes=100).groups.tolist() == [[0, 30]]
    assert coalesce_ranges([0, 21], [10, 10], max_gap_bytes=10,
                           max_coalesced_bytes=100).groups.tolist() == [[0, 10], [21, 31]]
    p = coalesce_ranges([0, 500], [10, 0], max_gap_bytes=10, max_coalesced_bytes=100)
    assert p.groups.tolist() == [[0, 10], [500, 500]]
    p = coalesce_ranges([0, 10], [5, 0], max_gap_bytes=10, max_coalesced_bytes=100)
    # zero-length in the gap past the stop: its own empty group, the read is not widened
    assert p.groups.tolist() == [[0, 5], [10, 10]]


def test_empty_output_shapes():
    p = coalesce_ranges([], [], max_gap_bytes=0, max_coalesced_bytes=1)
    assert p.groups.shape == (0, 2) and p.groups.dtype == np.uint64
    assert p.request_group.shape == (0,) and p.request_group.dtype == np.intp
    assert p.request_offset.shape == (0,) and p.request_offset.dtype == np.uint64


@pytest.mark.parametrize(
    "dtype", ["i1", "u1", "i2", ">i4", "u4", "<i8", ">i8", "u8", "intp"]
)
def test_input_dtypes(dtype):
    offsets = np.array([30, 0, 10], dtype=dtype)
    lengths = np.array([5, 5, 5], dtype=dtype)
    p = coalesce_ranges(offsets, lengths, max_gap_bytes=5, max_coalesced_bytes=100)
    assert p.groups.tolist() == [[0, 15], [30, 35]]
    # non-contiguous input
    offsets2 = np.repeat(offsets, 2)[::2]
    p2 = coalesce_ranges(offsets2, lengths, max_gap_bytes=5, max_coalesced_bytes=100)
    assert p2.groups.tolist() == p.groups.tolist()


def test_python_ints_beyond_int64():
    p = coalesce_ranges([2**64 - 10, 2**63], [9, 1], max_gap_bytes=0, max_coalesced_bytes=10)
    assert p.groups.tolist() == [[2**63, 2**63 + 1], [2**64 - 10, 2**64 - 1]]
    with pytest.raises(ValueError, match="overflow"):
        # the stop 2**64 is not representable
        coalesce_ranges([2**64 - 10], [10], max_gap_bytes=0, max_coalesced_bytes=10)


@pytest.mark.parametrize(
    "offsets, lengths, kwargs",
    [
        ([0, 1], [1], {}),
        ([-1], [1], {}),
        ([1], [-1], {}),
        (np.array([-5], np.int64), np.array([1], np.int64), {}),
        (np.array([2**64 - 1], np.uint64), np.array([1], np.uint64), {}),
        ([2**63, 2**63 + 1], [2**63, 2**63], {}),
        ([2**64], [0], {}),
        ([-1, 2**64 - 1], [0, 0], {}),
        ([[0, 1]], [[1, 1]], {}),
        ([0], [1], {"max_gap_bytes": -1}),
        ([0], [1], {"max_coalesced_bytes": 0}),
    ],
)
def test_bad_input_value_error(offsets, lengths, kwargs):
    kw = {"max_gap_bytes": 0, "max_coalesced_bytes": 10, **kwargs}
    with pytest.raises(ValueError):
        coalesce_ranges(offsets, lengths, **kw)


@pytest.mark.parametrize(
    "offsets", [[0.5], np.array([1.0]), ["a"], np.array([True]), [True], [0.5, -1, 2**64]]
)
def test_bad_input_type_error(offsets):
    with pytest.raises(TypeError):
        coalesce_ranges(offsets, [1], max_gap_bytes=0, max_coalesced_bytes=10)
    with pytest.raises(TypeError):
        coalesce_ranges([0], [1], max_gap_bytes=0.5, max_coalesced_bytes=10)


def test_keyword_only():
    with pytest.raises(TypeError):
        coalesce_ranges([0], [1], 0, 10)  # type: ignore[misc]


def test_large_sorted_and_shuffled_agree():
    rng = np.random.default_rng(1)
    n = 20_000
    lengths = rng.integers(0, 200, n).astype(np.uint64)
    offsets = np.cumsum(lengths + rng.integers(0, 50, n).astype(np.uint64)) - lengths
    perm = rng.permutation(n)
    a = coalesce_ranges(offsets, lengths, max_gap_bytes=20, max_coalesced_bytes=4096)
    b = coalesce_ranges(offsets[perm], lengths[perm], max_gap_bytes=20, max_coalesced_bytes=4096)
    assert np.array_equal(a.groups, b.groups)
    assert np.array_equal(a.request_group[perm], b.request_group)
    assert np.array_equal(a.request_offset[perm], b.request_offset)
    check_plan(a, offsets.tolist(), lengths.tolist(), 20, 4096)


@pytest.mark.parametrize("span", [300, 2**20, 2**40, 2**64 - 2**20])
def test_many_ranges_radix_path_vs_twin(span):
    # >= 512 requests take the radix sort: duplicates, zero lengths, ties kept stable
    rng = np.random.default_rng(span % 1000)
    n = 1500
    base = 0 if span < 2**63 else 2**63
    offsets = [base + int(x) for x in rng.integers(0, min(span, 2**63 - 1), n, dtype=np.uint64)]
    offsets[::7] = offsets[1::7][: len(offsets[::7])]  # duplicated offsets
    lengths = [int(x) for x in rng.integers(0, 200, n)]
    lengths[::5] = [0] * len(lengths[::5])
    offsets = [min(o, 2**64 - 1 - ln) for o, ln in zip(offsets, lengths)]
    run_both(offsets, lengths, 50, 5000)
    run_both(np.array(offsets, np.uint64), np.array(lengths, np.uint64), 0, 1)


ranges = st.lists(
    st.tuples(st.integers(0, 300), st.integers(0, 60) | st.just(0)), min_size=0, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(ranges, st.integers(0, 40), st.integers(1, 150))
def test_hypothesis_vs_twin(rs, max_gap, max_size):
    offsets = [o for o, _ in rs]
    lengths = [n for _, n in rs]
    run_both(offsets, lengths, max_gap, max_size)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=0, max_size=30),
    st.lists(st.integers(0, 40), min_size=30, max_size=30),
    st.integers(0, 30),
    st.integers(1, 200),
)
def test_hypothesis_disjoint_layout(gaps, sizes, max_gap, max_size):
    # a shard-like layout: disjoint ranges, requested in shuffled order
    offsets, lengths, pos = [], [], 0
    for gap, size in zip(gaps, sizes):
        pos += gap
        offsets.append(pos)
        lengths.append(size)
        pos += size
    perm = np.random.default_rng(len(offsets)).permutation(len(offsets)).tolist()
    run_both([offsets[i] for i in perm], [lengths[i] for i in perm], max_gap, max_size)
