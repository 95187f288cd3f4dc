"""Benchmarks of the per-chunk codec steps that run in Python (``zkernels._codecs``), for codecs
the decode kernel does not take: gzip.

256 chunks of 64x64 uint16 (8 KiB each), gzip level 1 as zarr's ``GzipCodec`` writes them
(numcodecs), decoded one by one:
- ``step``: zkernels' gzip step (zlib inflates a chunk that is one gzip member in one call),
- ``numcodecs``: numcodecs' ``GZip.decode`` (a ``GzipFile`` over a ``BytesIO``), which zarr
  calls per chunk.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_codecs.py``.
"""

from __future__ import annotations

import time

import numcodecs
import numpy as np
from zarr.codecs import GzipCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import UInt8

from zkernels import _codecs

N_CHUNKS = 256
CHUNK = (64, 64)


def _chunks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1000, CHUNK[0])
    out = []
    for _ in range(N_CHUNKS):
        data = (y[:, None] + y[None, :] + rng.normal(0, 20, CHUNK)).astype(np.uint16)
        out.append(np.frombuffer(numcodecs.GZip(level=1).encode(data), dtype=np.uint8))
    return out


class GzipDecode:
    """Decode ``N_CHUNKS`` gzip chunks: one sample = all of them."""

    params = [["step", "numcodecs"]]  # noqa: RUF012 - asv's convention
    param_names = ["impl"]  # noqa: RUF012
    number = 1
    repeat = (10, 50, 10.0)

    def setup(self, impl: str) -> None:
        self.stored = _chunks()
        spec = ArraySpec(shape=(1,), dtype=UInt8(), fill_value=0, config=ArrayConfig("C", False),
                         prototype=default_buffer_prototype())
        self.step = _codecs._bytes_step(GzipCodec(level=1), spec)
        self.codec = numcodecs.GZip(level=1)

    def time_decode(self, impl: str) -> None:
        if impl == "step":
            for buf in self.stored:
                self.step.decode(buf, True)
        else:
            for buf in self.stored:
                self.codec.decode(buf)


if __name__ == "__main__":
    bench = GzipDecode()
    for (impl,) in zip(GzipDecode.params[0]):
        bench.setup(impl)
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            bench.time_decode(impl)
            times.append(time.perf_counter() - t0)
        med = sorted(times)[len(times) // 2]
        print(f"gzip decode, {impl:9s} {N_CHUNKS} chunks of 8 KiB: median {med * 1e3:7.2f} ms "
              f"({med / N_CHUNKS * 1e6:5.1f} us per chunk)")
