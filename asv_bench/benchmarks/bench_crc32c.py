"""Benchmarks of zkernels' CRC-32C: hardware vs software vs the `crc32c` package, and threads.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_crc32c.py``.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from zkernels._crc32c import (
    crc32c,
    crc32c_hardware,
    crc32c_software,
    hardware_crc32c_available,
)

try:
    import crc32c as _crc32c_pkg
except ImportError:  # pragma: no cover - optional comparison
    _crc32c_pkg = None

KiB, MiB = 1 << 10, 1 << 20

# name -> function, or None where it cannot run here (setup then skips the benchmark).
IMPLS = {
    "hardware": crc32c_hardware if hardware_crc32c_available() else None,
    "software": crc32c_software,
    "crc32c-package": _crc32c_pkg.crc32c if _crc32c_pkg is not None else None,
}


def _data(nbytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _gbps(func, data, min_seconds: float = 0.05) -> float:
    """Best-of-5 throughput in GB/s (10**9 bytes per second)."""
    reps = 1
    while True:  # enough calls per round to measure above timer noise
        t0 = time.perf_counter()
        for _ in range(reps):
            func(data)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds / 5:
            break
        reps *= 4
    best = elapsed
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(reps):
            func(data)
        best = min(best, time.perf_counter() - t0)
    return len(data) * reps / best / 1e9


class Crc32c:
    """One call on a buffer of `nbytes`, per implementation."""

    params = (list(IMPLS), [64, 4 * KiB, 1 * MiB, 64 * MiB])
    param_names = ["impl", "nbytes"]
    timeout = 120

    def setup(self, impl, nbytes):
        self.func = IMPLS[impl]
        if self.func is None:
            raise NotImplementedError(f"{impl} is not available here")
        self.data = _data(nbytes)

    def time_crc32c(self, impl, nbytes):
        self.func(self.data)

    def track_throughput(self, impl, nbytes):
        return _gbps(self.func, self.data)

    track_throughput.unit = "GB/s"


class Crc32cMisaligned:
    """The dispatching `crc32c` on a buffer starting 3 bytes past an 8-byte boundary."""

    params = [4 * KiB + 5, 1 * MiB + 5]
    param_names = ["nbytes"]

    def setup(self, nbytes):
        self.data = memoryview(_data(nbytes + 3))[3:]

    def time_crc32c(self, nbytes):
        crc32c(self.data)


class Crc32cThreads:
    """Two buffers checksummed one after the other vs by two threads at once (pandas' gil.py
    pattern): with the GIL released, the threaded time approaches half the serial one (on two
    free cores, and when the buffers do not saturate memory bandwidth)."""

    params = (["crc32c", "software"], [1 * MiB, 16 * MiB])
    param_names = ["impl", "nbytes"]
    repeats = 8  # calls per buffer, so thread start-up stays small next to the work

    def setup(self, impl, nbytes):
        self.func = crc32c if impl == "crc32c" else crc32c_software
        self.buffers = [_data(nbytes, seed) for seed in (1, 2)]

    def _hash(self, data):
        func = self.func
        for _ in range(self.repeats):
            func(data)

    def time_serial(self, impl, nbytes):
        for data in self.buffers:
            self._hash(data)

    def time_threads(self, impl, nbytes):
        threads = [threading.Thread(target=self._hash, args=(data,)) for data in self.buffers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _main() -> None:
    """Quick self-timing without asv."""
    from zkernels._crc32c import crc32c_implementation

    print(f"crc32c implementation: {crc32c_implementation()}")
    print(f"{'impl':<16} {'nbytes':>10} {'GB/s':>8}")
    for impl, nbytes in ((i, n) for n in Crc32c.params[1] for i in Crc32c.params[0]):
        if IMPLS[impl] is None:
            print(f"{impl:<16} {nbytes:>10} {'n/a':>8}")
            continue
        bench = Crc32c()
        bench.setup(impl, nbytes)
        print(f"{impl:<16} {nbytes:>10} {bench.track_throughput(impl, nbytes):8.2f}")
    for impl, nbytes in ((i, n) for n in Crc32cThreads.params[1] for i in Crc32cThreads.params[0]):
        bench = Crc32cThreads()
        bench.setup(impl, nbytes)
        timings = {}
        for name in ("serial", "threads"):
            method = getattr(bench, f"time_{name}")
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                method(impl, nbytes)
                best = min(best, time.perf_counter() - t0)
            timings[name] = best
        print(
            f"threads {impl:<9} {nbytes:>10}  serial {timings['serial'] * 1e3:7.2f} ms  "
            f"2 threads {timings['threads'] * 1e3:7.2f} ms  "
            f"speed-up {timings['serial'] / timings['threads']:.2f}x"
        )


if __name__ == "__main__":
    _main()
