"""Benchmarks of zkernels' dense-shard reconstruction against numpy.

A shard of uint16 with 64x64 inner chunks, laid out the way zarr writes it (morton order, index
at the end), reconstructed by `reconstruct_dense`:
- against `numpy.copyto` of the same number of bytes (a plain contiguous copy: the ceiling),
- against the numpy twin (np.frombuffer + reshape + assignment per inner chunk, which is what
  zarr's pipeline amounts to for an uncompressed shard),
- with a byte swap (big-endian chunks into a native array),
- for a sub-box (an unaligned 1000x1000 window),
- into a fresh array (allocation and first-touch page faults included) or a reused one,
- and two threads each reconstructing its own shard vs the same two calls in series (pandas'
  gil.py pattern: with the GIL released the threaded time approaches half the serial one).

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_dense.py``.
"""

from __future__ import annotations

import threading

import numpy as np

from zkernels._dense import reconstruct_dense

MiB = 1 << 20
CHUNK = (64, 64)
SHAPES = {"8MiB": (2048, 2048), "64MiB": (4096, 8192)}
MAX = np.uint64(2**64 - 1)


def _morton_positions(cps):
    from zarr.core.indexing import _morton_order

    order = np.asarray(_morton_order(cps))
    lin = np.ravel_multi_index(tuple(order.T), cps)
    pos = np.empty(len(lin), np.intp)
    pos[lin] = np.arange(len(lin))
    return pos


def make_shard(shape, chunk=CHUNK, dtype="<u2", seed=0):
    """(shard bytes, parsed index, the logical array) for a dense uncompressed shard."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    data = rng.integers(0, 2**16, shape).astype(dtype)
    cps = tuple(s // c for s, c in zip(shape, chunk))
    cn = int(np.prod(chunk)) * dtype.itemsize
    pos = _morton_positions(cps)
    # stored chunks in morton order: (cps0, c0, cps1, c1) -> (cps0, cps1, c0, c1) -> slots
    blocks = data.reshape(cps[0], chunk[0], cps[1], chunk[1]).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(-1, *chunk)
    stored = np.empty_like(blocks)
    stored[pos] = blocks
    index = np.empty((len(pos), 2), np.uint64)
    index[:, 0] = pos.astype(np.uint64) * np.uint64(cn)
    index[:, 1] = cn
    return stored.tobytes(), index.reshape(cps + (2,)), data


def numpy_twin(shard, index, out, chunk, dtype, swap):
    """Per inner chunk: np.frombuffer, reshape, (byteswap), assign."""
    cn = int(np.prod(chunk)) * np.dtype(dtype).itemsize
    for c in np.ndindex(*index.shape[:-1]):
        off = int(index[c][0])
        block = np.frombuffer(shard, dtype, count=cn // np.dtype(dtype).itemsize, offset=off)
        if swap:
            block = block.byteswap()
        out[c[0] * chunk[0] : (c[0] + 1) * chunk[0], c[1] * chunk[1] : (c[1] + 1) * chunk[1]] = (
            block.reshape(chunk))


class ReconstructDense:
    """Whole shard (plain, byte-swapped) and a sub-box, into a reused or a fresh output."""

    params = (list(SHAPES), ["whole", "whole-swap", "sub-box"], ["reused", "fresh"])
    param_names = ["shard", "case", "out"]
    timeout = 120

    def setup(self, shard, case, out):
        shape = SHAPES[shard]
        self.shard, self.index, _ = make_shard(shape)
        self.swap = 2 if case == "whole-swap" else 0
        if case == "sub-box":
            self.start, self.box = (37, 101), (1000, 1000)
        else:
            self.start, self.box = (0, 0), shape
        self.out = np.empty(self.box, "u2")
        self.out[...] = 1  # touched: no page faults in the "reused" timings
        nbytes = int(np.prod(self.box)) * 2
        self.src = np.frombuffer(self.shard, "u2", count=nbytes // 2).reshape(self.box)
        self.fresh = out == "fresh"

    def _out(self):
        return np.empty(self.box, "u2") if self.fresh else self.out

    def time_reconstruct_dense(self, shard, case, out):
        reconstruct_dense(self.shard, self.index, self._out(), chunk_shape=CHUNK,
                          region_start=self.start, swap_unit=self.swap)

    def time_numpy_copyto(self, shard, case, out):
        """The same number of bytes, one contiguous copy: the ceiling."""
        np.copyto(self._out(), self.src)

    def time_numpy_twin(self, shard, case, out):
        if case == "sub-box":
            raise NotImplementedError  # the twin here only does whole shards
        numpy_twin(self.shard, self.index, self._out(), CHUNK, "u2", self.swap)

    def track_gbps_reconstruct_dense(self, shard, case, out):
        return _gbps(self.time_reconstruct_dense, (shard, case, out), self.out.nbytes)

    def track_gbps_numpy_copyto(self, shard, case, out):
        return _gbps(self.time_numpy_copyto, (shard, case, out), self.out.nbytes)

    track_gbps_reconstruct_dense.unit = "GB/s"
    track_gbps_numpy_copyto.unit = "GB/s"


class ReconstructDenseStreaming:
    """Streaming (non-temporal) stores forced on or off: the default switches at 16 MiB."""

    params = (list(SHAPES), [False, True])
    param_names = ["shard", "streaming"]
    timeout = 120

    def setup(self, shard, streaming):
        self.shard, self.index, _ = make_shard(SHAPES[shard])
        self.out = np.ones(SHAPES[shard], "u2")

    def time_reconstruct_dense(self, shard, streaming):
        reconstruct_dense(self.shard, self.index, self.out, chunk_shape=CHUNK,
                          region_start=(0, 0), streaming=streaming)


class ReconstructDenseThreads:
    """Two shards: two threads at once vs one after the other. 1 MiB shards stay in each core's
    cache, so the pair shows the GIL release itself; 8 MiB shards also share the memory
    bandwidth and the last-level cache."""

    params = [["1MiB", "8MiB"]]
    param_names = ["shard"]
    shapes = {"1MiB": (512, 1024), "8MiB": SHAPES["8MiB"]}
    calls = {"1MiB": 32, "8MiB": 4}  # per shard, so thread start-up stays small next to the work

    def setup(self, shard):
        shape = self.shapes[shard]
        self.repeats = self.calls[shard]
        self.shards = [make_shard(shape, seed=s)[:2] for s in (1, 2)]
        self.outs = [np.ones(shape, "u2") for _ in range(2)]

    def _work(self, i):
        shard, index = self.shards[i]
        for _ in range(self.repeats):
            reconstruct_dense(shard, index, self.outs[i], chunk_shape=CHUNK, region_start=(0, 0))

    def time_serial(self, shard):
        self._work(0)
        self._work(1)

    def time_threads(self, shard):
        threads = [threading.Thread(target=self._work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()




def _gbps(func, args, nbytes):
    return nbytes / _best(func, *args) / 1e9


def _best(*args, **kwargs):
    from _timing import best  # standalone mode only: this script's folder is on sys.path

    return best(*args, **kwargs)


def _main() -> None:
    """Quick self-timing without asv."""
    print(f"{'shard':<6} {'case':<11} {'out':<7} {'reconstruct_dense':>18} {'numpy.copyto':>14} "
          f"{'numpy twin':>12}")
    for shard in SHAPES:
        for case in ReconstructDense.params[1]:
            for out in ReconstructDense.params[2]:
                b = ReconstructDense()
                b.setup(shard, case, out)
                nb = b.out.nbytes
                row = []
                for meth in ("time_reconstruct_dense", "time_numpy_copyto", "time_numpy_twin"):
                    if meth == "time_numpy_twin" and (case == "sub-box" or shard == "64MiB"):
                        row.append("")
                        continue
                    t = _best(getattr(b, meth), shard, case, out, repeat=5)
                    row.append(f"{nb / t / 1e9:6.1f} GB/s")
                print(f"{shard:<6} {case:<11} {out:<7} {row[0]:>18} {row[1]:>14} {row[2]:>12}")
    for shard in SHAPES:
        for streaming in (False, True):
            b = ReconstructDenseStreaming()
            b.setup(shard, streaming)
            t = _best(b.time_reconstruct_dense, shard, streaming)
            print(f"{shard:<6} streaming={streaming!s:<5} {b.out.nbytes / t / 1e9:6.1f} GB/s")
    for shard in ReconstructDenseThreads.params[0]:
        b = ReconstructDenseThreads()
        b.setup(shard)
        ts = _best(b.time_serial, shard, repeat=5)
        tt = _best(b.time_threads, shard, repeat=5)
        print(f"threads {shard}: serial {ts * 1e3:.2f} ms, 2 threads {tt * 1e3:.2f} ms, "
              f"speed-up {ts / tt:.2f}x")


if __name__ == "__main__":
    _main()
