"""Benchmarks of local file replacement (``zkernels._localio.replace_file``, the ``swap_writes``
option) against zarr's ``LocalStore.set_sync`` (a temporary renamed over the old file).

Every sample rewrites the same files, as repeated writes of an array do: on ext4 a rename over
an existing file starts writing it to disk at once and the next replacement of that key waits
for it; a swapped-in file does not. On other file systems the two should be close.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_localio.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

from zkernels._localio import replace_file

MiB = 1 << 20
N_FILES = 16
PROTO = default_buffer_prototype()


class ReplaceFiles:
    """Rewrite ``N_FILES`` files of ``size`` bytes, all existing: one sample = all of them (2 KiB:
    the cost per file of a small unsharded chunk, mostly the file system's create, swap and
    unlink)."""

    params = [["swap", "rename"], [2 * 1024, 64 * 1024, 8 * MiB]]  # noqa: RUF012 - asv's convention
    param_names = ["how", "size"]  # noqa: RUF012
    number = 1
    repeat = (5, 20, 10.0)

    def setup(self, how: str, size: int) -> None:
        self.root = tempfile.mkdtemp(prefix="zkernels-asv-localio-")
        self.store = zarr.storage.LocalStore(self.root)
        self.data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
        self.buf = PROTO.buffer.from_array_like(self.data)
        self.keys = [f"c/{i}" for i in range(N_FILES)]
        for _ in range(2):  # existing files, replaced once already (the steady state)
            self.time_replace(how, size)

    def teardown(self, how: str, size: int) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def time_replace(self, how: str, size: int) -> None:
        if how == "swap":
            for key in self.keys:
                replace_file(f"{self.root}/{key}", self.data)
        else:
            for key in self.keys:
                self.store.set_sync(key, self.buf)


if __name__ == "__main__":
    bench = ReplaceFiles()
    for size in ReplaceFiles.params[1]:
        for how in ReplaceFiles.params[0]:
            bench.setup(how, size)
            try:
                times = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    bench.time_replace(how, size)
                    times.append(time.perf_counter() - t0)
            finally:
                bench.teardown(how, size)
            med = sorted(times)[len(times) // 2]
            print(f"{how:7s} {N_FILES} files x {size / MiB:7.3f} MiB: median {med * 1e3:8.2f} ms")
