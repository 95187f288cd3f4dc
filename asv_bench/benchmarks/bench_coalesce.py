"""Benchmarks of zkernels' coalesce_ranges (read planning for sharded reads).

Ranges laid out like a shard's inner chunks (back to back with small random gaps), requested in
storage order ("sorted") or in a shuffled order ("random", which adds the sort). The baseline is
a vectorised numpy version of the same rules for sorted input without the size bound (numpy has
no loop-free way to apply the size cap), to show what the nogil loop costs next to numpy.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_coalesce.py``.
"""

from __future__ import annotations


import numpy as np

from zkernels._coalesce import coalesce_ranges, plan_chunk_reads

GAP = 64
MAX = 4 << 20


def _ranges(n, order, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1000, 20000, n).astype(np.uint64)
    gaps = rng.integers(0, 2 * GAP, n).astype(np.uint64)
    offsets = np.cumsum(lengths + gaps) - lengths
    if order == "random":
        perm = rng.permutation(n)
        offsets, lengths = offsets[perm], lengths[perm]
    return offsets, lengths


def numpy_gap_merge(offsets, lengths, max_gap):
    """Group sorted, disjoint ranges on gaps alone (no size cap): the numpy baseline."""
    order = np.argsort(offsets, kind="stable")
    o = offsets[order]
    stop = o + lengths[order]
    new = np.empty(len(o), bool)
    new[0] = True
    new[1:] = o[1:] > stop[:-1] + np.uint64(max_gap)
    gid = np.cumsum(new) - 1
    starts = o[new]
    stops = np.maximum.reduceat(stop, np.flatnonzero(new))
    req_group = np.empty(len(o), np.intp)
    req_group[order] = gid
    req_offset = np.empty(len(o), np.uint64)
    req_offset[order] = o - starts[gid]
    return np.stack([starts, stops], axis=1), req_group, req_offset


class CoalesceRanges:
    params = ([1_000, 100_000], ["sorted", "random"], ["zkernels", "numpy"])
    param_names = ["n", "order", "impl"]

    def setup(self, n, order, impl):
        self.offsets, self.lengths = _ranges(n, order)

    def time_coalesce(self, n, order, impl):
        if impl == "zkernels":
            coalesce_ranges(self.offsets, self.lengths, max_gap_bytes=GAP,
                            max_coalesced_bytes=MAX)
        else:
            numpy_gap_merge(self.offsets, self.lengths, GAP)


class CoalesceOverhead:
    """Per-call cost for a handful of ranges given as Python lists (a small partial read)."""

    params = ([4, 32],)
    param_names = ["n"]

    def setup(self, n):
        offsets, lengths = _ranges(n, "random")
        self.offsets, self.lengths = offsets.tolist(), lengths.tolist()

    def time_coalesce_lists(self, n):
        coalesce_ranges(self.offsets, self.lengths, max_gap_bytes=GAP, max_coalesced_bytes=MAX)


def _numpy_plan(index, lo, hi):
    """The same plan with numpy calls and coalesce_ranges (the pipeline's former code)."""
    flat = index.reshape(-1, 2)
    lin = np.ravel_multi_index(np.ix_(*[np.arange(a, b) for a, b in zip(lo, hi)]),
                               index.shape[:-1]).reshape(-1)
    offs, nbs = flat[lin, 0], flat[lin, 1]
    keep = (offs != np.uint64(2**64 - 1)) & (nbs != 0)
    want = lin[keep]
    locs = np.full_like(flat, 2**64 - 1)
    groups = np.full(flat.shape[0], -1, dtype=np.int32)
    plan = coalesce_ranges(offs[keep], nbs[keep], max_gap_bytes=GAP, max_coalesced_bytes=MAX)
    locs[want, 0] = plan.request_offset
    locs[want, 1] = nbs[keep]
    groups[want] = plan.request_group
    return plan.groups, locs, groups


class PlanChunkReads:
    """Planning a partial read of one shard of 32x32 inner chunks: one chunk (a small read),
    a row of chunks (a slab), the whole shard; the kernel against the numpy version."""

    params = (["one", "row", "all"], ["zkernels", "numpy"])
    param_names = ["box", "impl"]

    def setup(self, box, impl):
        offsets, lengths = _ranges(32 * 32, "sorted")
        self.index = np.stack([offsets, lengths], axis=-1).reshape(32, 32, 2)
        self.lo, self.hi = {"one": ((5, 7), (6, 8)), "row": ((5, 0), (6, 32)),
                            "all": ((0, 0), (32, 32))}[box]

    def time_plan(self, box, impl):
        if impl == "zkernels":
            plan_chunk_reads(self.index, box=(self.lo, self.hi), max_gap_bytes=GAP,
                             max_coalesced_bytes=MAX)
        else:
            _numpy_plan(self.index, self.lo, self.hi)


def _best(*args, **kwargs):
    from _timing import best  # standalone mode only: this script's folder is on sys.path

    return best(*args, **kwargs)


def _main() -> None:
    """Quick self-timing without asv."""
    print(f"{'benchmark':<36} {'zkernels':>12} {'numpy gap-only':>15}")
    for n in CoalesceRanges.params[0]:
        for order in CoalesceRanges.params[1]:
            times = {}
            for impl in CoalesceRanges.params[2]:
                b = CoalesceRanges()
                b.setup(n, order, impl)
                times[impl] = _best(b.time_coalesce, n, order, impl)
            print(f"{f'coalesce {n} {order}':<36} {times['zkernels'] * 1e6:9.1f} us "
                  f"{times['numpy'] * 1e6:12.1f} us")
    for n in CoalesceOverhead.params[0]:
        b = CoalesceOverhead()
        b.setup(n)
        print(f"{f'coalesce {n} ranges from lists':<36} "
              f"{_best(b.time_coalesce_lists, n) * 1e6:9.1f} us")
    for box in PlanChunkReads.params[0]:
        times = {}
        for impl in PlanChunkReads.params[1]:
            b = PlanChunkReads()
            b.setup(box, impl)
            times[impl] = _best(b.time_plan, box, impl)
        print(f"{f'plan chunk reads ({box}) vs numpy':<36} {times['zkernels'] * 1e6:9.1f} us "
              f"{times['numpy'] * 1e6:12.1f} us")


if __name__ == "__main__":
    _main()
