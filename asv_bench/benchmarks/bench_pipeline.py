"""Whole reads and writes through zarr: zkernels' pipeline against zarr's default pipeline.

The same workloads as ``python -m zkernels bench`` (the definitions are shared with it, from
``zkernels.bench``), on a smaller array so that a full asv run stays reasonable on a 2-core
machine: N x N uint16 with N = 4096 by default (``ZKERNELS_ASV_SIZE`` changes it), shards of
min(2048, N/2), inner chunks of 64, unsharded chunks of 256. The datasets are written once per asv
run, in ``setup_cache`` (into asv's per-run folder, which is the working directory of every
benchmark), from a seeded generator.

asv only times and measures memory here; ``python -m zkernels bench`` and ``tests/test_bench.py``
also check every result against the source data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zkernels import bench

SIZE = int(os.environ.get("ZKERNELS_ASV_SIZE", "4096"))
ENGINES = ["default", "zkernels"]
WORKLOADS = list(bench.WORKLOADS)
_DATA = "source.npy"


def _config(root: str) -> bench.BenchConfig:
    return bench.BenchConfig(size=SIZE, repeats=1, directory=root, quiet=True)


class _AsvContext(bench.Context):
    """The source data comes from the ``.npy`` written by ``setup_cache``, not regenerated."""

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.load(self.root / _DATA)
            self._data.setflags(write=False)
        return self._data


def _quiet(msg: str) -> None:
    pass


class Pipeline:
    """One benchmark per (workload, engine); see ``zkernels.bench.WORKLOADS`` for each workload."""

    params = [WORKLOADS, ENGINES]  # noqa: RUF012 - asv's convention
    param_names = ["workload", "engine"]  # noqa: RUF012
    # whole-array calls take 0.05-1 s here: one call per sample, a few samples per process
    number = 1
    repeat = (3, 10, 10.0)
    warmup_time = 0.1
    timeout = 300

    def setup_cache(self) -> str:
        root = Path.cwd() / "zkernels-datasets"
        root.mkdir(exist_ok=True)
        ctx = bench.Context(_config(str(root)), root, _quiet)
        np.save(root / _DATA, ctx.data)
        for name in bench.DATASETS:
            ctx.dataset(name)
        return str(root)

    def setup(self, root: str, workload: str, engine: str) -> None:
        factory = bench.ENGINES[engine]
        self.engine = factory()
        reason = self.engine.unavailable_reason()
        if reason is not None:
            raise NotImplementedError(reason)  # asv shows the benchmark as skipped (n/a)
        self.workload = bench.WORKLOADS[workload]
        self.ctx = _AsvContext(_config(root), Path(root), _quiet)
        try:
            self.state = self.workload.prepare(self.ctx, self.engine)
        except bench.NotApplicable as exc:
            raise NotImplementedError(str(exc)) from exc

    def teardown(self, root: str, workload: str, engine: str) -> None:
        self.state = None
        self.ctx = None

    def time_workload(self, root: str, workload: str, engine: str) -> None:
        self.workload.run(self.engine, self.state)

    def peakmem_workload(self, root: str, workload: str, engine: str) -> None:
        self.workload.run(self.engine, self.state)

    def track_mb_per_s(self, root: str, workload: str, engine: str) -> float:
        """MB (10**6 bytes) of decoded data per second, best of three calls."""
        import time

        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            self.workload.run(self.engine, self.state)
            best = min(best, time.perf_counter() - t0)
        return float(f"{self.workload.nbytes(self.ctx) / bench.MB / best:.4g}")

    track_mb_per_s.unit = "MB/s"


if __name__ == "__main__":  # pragma: no cover - a quick look without asv
    import sys

    sys.exit(bench.main(["--size", str(SIZE), "--engines", ",".join(ENGINES), *sys.argv[1:]]))
