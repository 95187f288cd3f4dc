"""Benchmarks of zkernels' scatter / fill / is_fill / copy_region against numpy (and zarr).

* scatter of all 1024 64x64 uint16 chunks of a 2048x2048 output (C, F and strided outputs) vs
  ``out[sel] = chunk[sel]``; the per-call overhead on one tiny chunk;
* fill of an 8 MiB output vs ``out[...] = fill_value``;
* is_fill on 8 MiB of fill (the worst case: every byte is read) vs zarr's
  ``NDBuffer.all_equal``;
* large copies (contiguous, transposing, reversed) vs ``np.copyto``;
* the threads-versus-serial pair of pandas' ``gil.py``: two threads each doing a 32 MiB
  transposing copy, against the same two copies one after the other.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_scatter.py``.
"""

from __future__ import annotations

import threading

import numpy as np

from zkernels._scatter import copy_region, fill, is_fill, scatter

SHAPE = (2048, 2048)
CHUNK = (64, 64)
ALL = (slice(0, 64), slice(0, 64))


def _chunks(seed=0):
    rng = np.random.default_rng(seed)
    full = rng.integers(0, 2**16, SHAPE, dtype=np.uint16)
    out = []
    for i in range(0, SHAPE[0], CHUNK[0]):
        for j in range(0, SHAPE[1], CHUNK[1]):
            out.append((np.ascontiguousarray(full[i:i + 64, j:j + 64]),
                        (slice(i, i + 64), slice(j, j + 64))))
    return full, out


def _output(layout):
    if layout == "C":
        return np.zeros(SHAPE, np.uint16)
    if layout == "F":
        return np.zeros(SHAPE, np.uint16, order="F")
    # every other column of a twice-as-wide array
    return np.zeros((SHAPE[0], 2 * SHAPE[1]), np.uint16)[:, ::2]


class ScatterChunks:
    """Read side of a 2048x2048 uint16 array in 64x64 chunks: 8 MiB moved per call."""

    params = (["C", "F", "strided"], ["zkernels", "numpy"])
    param_names = ["out_layout", "impl"]

    def setup(self, layout, impl):
        self.full, self.chunks = _chunks()
        self.out = _output(layout)

    def time_scatter_all_chunks(self, layout, impl):
        out = self.out
        if impl == "zkernels":
            for chunk, sel in self.chunks:
                scatter(chunk, ALL, out, sel)
        else:
            for chunk, sel in self.chunks:
                out[sel] = chunk[ALL]


class ScatterOverhead:
    """Per-call cost on one chunk: the Python-level overhead dominates for small chunks."""

    params = (["4x4", "64x64"], ["zkernels", "numpy"])
    param_names = ["chunk", "impl"]

    def setup(self, chunk, impl):
        n = int(chunk.split("x")[0])
        rng = np.random.default_rng(1)
        self.chunk = rng.integers(0, 2**16, (n, n), dtype=np.uint16)
        self.out = np.zeros((4 * n, 4 * n), np.uint16)
        self.csel = (slice(0, n), slice(0, n))
        self.osel = (slice(n, 2 * n), slice(2 * n, 3 * n))

    def time_one_call(self, chunk, impl):
        if impl == "zkernels":
            scatter(self.chunk, self.csel, self.out, self.osel)
        else:
            self.out[self.osel] = self.chunk[self.csel]


class Fill:
    """8 MiB of uint16: whole array and every other column."""

    params = (["all", "strided"], [0, 7], ["zkernels", "numpy"])
    param_names = ["selection", "value", "impl"]

    def setup(self, selection, value, impl):
        self.out = np.ones(SHAPE, np.uint16)
        self.sel = () if selection == "all" else (slice(None), slice(None, None, 2))
        self.value = np.uint16(value)

    def time_fill(self, selection, value, impl):
        if impl == "zkernels":
            fill(self.out, self.sel, self.value)
        else:
            self.out[self.sel] = self.value


class IsFill:
    """8 MiB that is all fill (the worst case: every element is read)."""

    params = (["u2/0", "f4/0.0", "f4/nan", "c8/0j", "f8/1.5"], ["zkernels", "zarr"])
    param_names = ["dtype/fill", "impl"]

    def setup(self, case, impl):
        dtype, fv = case.split("/")
        dt = np.dtype(dtype)
        self.fill_value = dt.type(complex(fv) if dt.kind == "c" else float(fv))
        self.buf = np.full((8 << 20) // dt.itemsize, self.fill_value, dt)
        if impl == "zarr":
            from zarr.core.buffer import default_buffer_prototype

            self.nd = default_buffer_prototype().nd_buffer.from_ndarray_like(self.buf)

    def time_is_fill(self, case, impl):
        if impl == "zkernels":
            assert is_fill(self.buf, self.fill_value)
        else:
            assert self.nd.all_equal(self.fill_value)


class CopyRegion:
    """64 MiB copies: contiguous, C -> F (transposing: tiled), reversed rows."""

    params = (["C->C", "C->F", "reversed"], ["zkernels", "numpy"])
    param_names = ["layout", "impl"]

    def setup(self, layout, impl):
        rng = np.random.default_rng(2)
        self.src = rng.integers(0, 2**63, (4096, 2048), dtype=np.uint64)
        if layout == "C->F":
            self.dst = np.empty_like(self.src, order="F")
        else:
            self.dst = np.empty_like(self.src)
        if layout == "reversed":
            self.src = self.src[:, ::-1]

    def time_copy(self, layout, impl):
        if impl == "zkernels":
            copy_region(self.src, self.dst)
        else:
            np.copyto(self.dst, self.src)


class ThreadsVsSerial:
    """pandas-gil style: the same two 32 MiB copies, one after the other or in two threads.

    With the GIL released the threaded variant takes less than the serial time when two cores
    are free (on a loaded machine or a bandwidth-bound copy the gain shrinks); with the GIL
    held it would take as long or longer. tests/kernels/test_scatter.py proves the release by
    counting instead.
    """

    params = (["serial", "threads"],)
    param_names = ["mode"]

    def setup(self, mode):
        rng = np.random.default_rng(3)
        # C -> F (transposing, tiled) copies: bound by the caches more than by DRAM bandwidth,
        # so the parallelism shows; a plain contiguous copy saturates bandwidth from one core
        self.pairs = [
            (rng.integers(0, 2**63, (2048, 2048), dtype=np.uint64),
             np.empty((2048, 2048), np.uint64, order="F"))
            for _ in range(2)
        ]

    def time_two_copies(self, mode):
        if mode == "serial":
            for src, dst in self.pairs:
                copy_region(src, dst)
        else:
            threads = [threading.Thread(target=copy_region, args=pair) for pair in self.pairs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()




def _run(cls, *params):
    b = cls()
    b.setup(*params)
    method = next(getattr(b, m) for m in dir(b) if m.startswith("time_"))
    return _best(method, *params)


def _best(*args, **kwargs):
    from _timing import best  # standalone mode only: this script's folder is on sys.path

    return best(*args, **kwargs)


def _main() -> None:
    """Quick self-timing without asv."""
    mib8 = 8 * 2**20 / 1e9
    print(f"{'benchmark':<34} {'zkernels':>22} {'baseline':>22}")

    def row(name, tz, tb, gb=None, unit="ms", scale=1e3):
        def fmt(t):
            s = f"{t * scale:9.3f} {unit}"
            return s + (f" {gb / t:5.1f} GB/s" if gb else "")
        print(f"{name:<34} {fmt(tz):>22} {fmt(tb):>22}")

    for layout in ScatterChunks.params[0]:
        row(f"scatter 1024 chunks, {layout} out", _run(ScatterChunks, layout, "zkernels"),
            _run(ScatterChunks, layout, "numpy"), mib8)
    for chunk in ScatterOverhead.params[0]:
        row(f"scatter one {chunk} chunk", _run(ScatterOverhead, chunk, "zkernels"),
            _run(ScatterOverhead, chunk, "numpy"), unit="us", scale=1e6)
    for sel in Fill.params[0]:
        for v in Fill.params[1]:
            gb = mib8 if sel == "all" else mib8 / 2
            row(f"fill 8 MiB {sel} value={v}", _run(Fill, sel, v, "zkernels"),
                _run(Fill, sel, v, "numpy"), gb)
    for case in IsFill.params[0]:
        row(f"is_fill 8 MiB {case} (vs zarr)", _run(IsFill, case, "zkernels"),
            _run(IsFill, case, "zarr"), mib8)
    for layout in CopyRegion.params[0]:
        row(f"copy 64 MiB {layout}", _run(CopyRegion, layout, "zkernels"),
            _run(CopyRegion, layout, "numpy"), 64 * 2**20 / 1e9)
    row("two 32 MiB copies: threads vs serial", _run(ThreadsVsSerial, "threads"),
        _run(ThreadsVsSerial, "serial"))


if __name__ == "__main__":
    _main()
