"""Benchmarks of zkernels' pread_ranges (a shard's coalesced byte ranges read with the GIL
released once) against one ``os.pread`` per range, as the pipeline read them before.

The ranges are those of a 64-row slab of the bench's zstd layout (one row of 32 inner chunks of
a 32x32 shard stored in Morton order, ~4.7 KB each): coalesced with the default 64 KiB gap (8
reads, ~430 KB) or not at all (32 reads). "threads=2" reads two such shards at once from two
threads, as two pool threads do: that is where one ``os.pread`` per range lost most, handing the
GIL back and forth. The file is in the page cache (written just before).

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_pread.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import numpy as np

from zkernels._coalesce import plan_chunk_reads
from zkernels._pread import pread_ranges

CPS = 32  # inner chunks per shard side
CHUNK = 4700  # bytes per stored inner chunk


def _morton_index() -> np.ndarray:
    """A 32x32 shard index with chunks of ~CHUNK bytes stored in Morton (Z) order."""
    rng = np.random.default_rng(0)
    order = sorted(
        ((i, j) for i in range(CPS) for j in range(CPS)),
        key=lambda ij: int("".join(f"{b}{a}" for a, b in zip(f"{ij[0]:05b}", f"{ij[1]:05b}")), 2),
    )
    index = np.zeros((CPS, CPS, 2), dtype=np.uint64)
    pos = 0
    for i, j in order:
        n = int(rng.integers(CHUNK - 500, CHUNK + 500))
        index[i, j] = (pos, n)
        pos += n
    return index


def _python_reads(fd: int, ranges: list) -> list:
    return [os.pread(fd, b - a, a) for a, b in ranges]


class PreadRanges:
    params = (["coalesced", "per-chunk"], [1, 2], ["zkernels", "os.pread"])
    param_names = ["ranges", "threads", "impl"]  # noqa: RUF012

    def setup(self, ranges: str, threads: int, impl: str) -> None:
        index = _morton_index()
        size = int(index[..., 0].max() + index[..., 1].max())
        self.dir = tempfile.mkdtemp(prefix="zkernels-asv-pread-")
        path = os.path.join(self.dir, "shard")
        with open(path, "wb") as f:
            f.write(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
        self.fds = [os.open(path, os.O_RDONLY) for _ in range(threads)]
        gap = 1 << 16 if ranges == "coalesced" else 0
        plan = plan_chunk_reads(index, box=((7, 0), (8, CPS)), max_gap_bytes=gap,
                                max_coalesced_bytes=1 << 24)
        self.table = plan.ranges
        self.list = plan.ranges.tolist()
        self.total = int((plan.ranges[:, 1] - plan.ranges[:, 0]).sum())

    def teardown(self, ranges: str, threads: int, impl: str) -> None:
        for fd in self.fds:
            os.close(fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _one(self, fd: int, impl: str) -> None:
        for _ in range(20):  # one sample: 20 shards' reads per thread
            if impl == "zkernels":
                pread_ranges(fd, self.table, np.empty(self.total, np.uint8))
            else:
                _python_reads(fd, self.list)

    def time_read(self, ranges: str, threads: int, impl: str) -> None:
        if threads == 1:
            self._one(self.fds[0], impl)
            return
        workers = [threading.Thread(target=self._one, args=(fd, impl)) for fd in self.fds]
        for w in workers:
            w.start()
        for w in workers:
            w.join()


def _main() -> None:
    """Quick self-timing without asv."""
    from _timing import best  # this script's folder is on sys.path

    print(f"{'20 shards per thread':<32} {'zkernels':>12} {'os.pread':>12}")
    for ranges in PreadRanges.params[0]:
        for threads in PreadRanges.params[1]:
            times = {}
            for impl in PreadRanges.params[2]:
                b = PreadRanges()
                b.setup(ranges, threads, impl)
                try:
                    times[impl] = best(b.time_read, ranges, threads, impl)
                finally:
                    b.teardown(ranges, threads, impl)
            print(f"{f'{ranges}, threads={threads}':<32} {times['zkernels'] * 1e6:9.0f} us "
                  f"{times['os.pread'] * 1e6:9.0f} us")


if __name__ == "__main__":
    _main()
