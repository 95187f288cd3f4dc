"""Benchmarks of zkernels' shard index kernels against their numpy twins.

parse = checksum + byte order + validation of every entry; the numpy twin does what zarr's index
codecs do (crc32c of the bytes, np.frombuffer, reshape) and validates nothing. encode is the
inverse. check_dense on zarr's morton layout.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_shard_index.py``.
"""

from __future__ import annotations


import numpy as np

from zkernels._shard_index import (
    check_dense,
    encode_shard_index,
    parse_shard_index,
    shard_index_nbytes,
)

try:  # what zarr's Crc32cCodec uses
    from google_crc32c import value as _crc
except ImportError:  # pragma: no cover
    from crc32c import crc32c as _crc

MAX = np.uint64(2**64 - 1)
CPS = {"32x32": (32, 32), "128x128": (128, 128)}


def _morton_positions(cps):
    """Storage slot of each chunk (C-order linear index -> slot) in zarr's morton order."""
    from zarr.core.indexing import _morton_order

    order = np.asarray(_morton_order(cps))
    lin = np.ravel_multi_index(tuple(order.T), cps)
    pos = np.empty(len(lin), np.intp)
    pos[lin] = np.arange(len(lin))
    return pos


def _index(cps, chunk_nbytes=8192, empty_frac=0.1, seed=0):
    """A zarr-like index: chunks back to back in morton order, some empty, index at the end."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(cps))
    pos = _morton_positions(cps)
    empty = rng.random(n) < empty_frac
    slots = np.cumsum(~empty[np.argsort(pos)]) - 1  # packed slot per storage position
    index = np.full((n, 2), MAX)
    full = ~empty
    index[full, 0] = slots[pos[full]].astype(np.uint64) * np.uint64(chunk_nbytes)
    index[full, 1] = chunk_nbytes
    shard_nbytes = int(full.sum()) * chunk_nbytes + shard_index_nbytes(n)
    return index.reshape(cps + (2,)), shard_nbytes


def numpy_parse(raw, cps, byteorder="little"):
    """The twin: what zarr's [BytesCodec, Crc32cCodec] decode does, validating nothing."""
    body = raw[:-4]
    if _crc(body) != int.from_bytes(raw[-4:], "little"):
        raise ValueError("checksum")
    dt = "<u8" if byteorder == "little" else ">u8"
    return np.frombuffer(body, dt).astype(np.uint64, copy=False).reshape(cps + (2,))


def numpy_encode(index, byteorder="little"):
    body = np.ascontiguousarray(index, "<u8" if byteorder == "little" else ">u8").tobytes()
    return body + _crc(body).to_bytes(4, "little")


class ParseShardIndex:
    params = (list(CPS), ["little", "big"], ["zkernels", "numpy"])
    param_names = ["chunks_per_shard", "byteorder", "impl"]

    def setup(self, cps, byteorder, impl):
        self.cps = CPS[cps]
        index, self.shard_nbytes = _index(self.cps)
        self.raw = numpy_encode(index, byteorder)

    def time_parse(self, cps, byteorder, impl):
        if impl == "zkernels":
            parse_shard_index(self.raw, self.cps, byteorder=byteorder,
                              shard_nbytes=self.shard_nbytes)
        else:
            numpy_parse(self.raw, self.cps, byteorder)


class EncodeShardIndex:
    params = (list(CPS), ["little", "big"], ["zkernels", "numpy"])
    param_names = ["chunks_per_shard", "byteorder", "impl"]

    def setup(self, cps, byteorder, impl):
        self.index, _ = _index(CPS[cps])

    def time_encode(self, cps, byteorder, impl):
        if impl == "zkernels":
            encode_shard_index(self.index, byteorder=byteorder)
        else:
            numpy_encode(self.index, byteorder)


class CheckDense:
    """check_dense on zarr's morton layout (the O(n) slot path) and with gaps (the sort path)."""

    params = (list(CPS), ["packed", "gaps"])
    param_names = ["chunks_per_shard", "layout"]

    def setup(self, cps, layout):
        self.index, _ = _index(CPS[cps])
        if layout == "gaps":
            full = self.index[..., 0] != MAX
            self.index[..., 0][full] += self.index[..., 0][full] // np.uint64(8192)

    def time_check_dense(self, cps, layout):
        check_dense(self.index, 8192)




def _best(*args, **kwargs):
    from _timing import best  # standalone mode only: this script's folder is on sys.path

    return best(*args, **kwargs)


def _main() -> None:
    """Quick self-timing without asv."""
    print(f"{'benchmark':<44} {'zkernels':>12} {'numpy twin':>12}")
    for name in CPS:
        for bo in ("little", "big"):
            times = {}
            for impl in ("zkernels", "numpy"):
                b = ParseShardIndex()
                b.setup(name, bo, impl)
                times[impl] = _best(b.time_parse, name, bo, impl)
            print(f"{'parse ' + name + ' ' + bo:<44} {times['zkernels'] * 1e6:9.1f} us "
                  f"{times['numpy'] * 1e6:9.1f} us")
            times = {}
            for impl in ("zkernels", "numpy"):
                b = EncodeShardIndex()
                b.setup(name, bo, impl)
                times[impl] = _best(b.time_encode, name, bo, impl)
            print(f"{'encode ' + name + ' ' + bo:<44} {times['zkernels'] * 1e6:9.1f} us "
                  f"{times['numpy'] * 1e6:9.1f} us")
        for layout in ("packed", "gaps"):
            b = CheckDense()
            b.setup(name, layout)
            t = _best(b.time_check_dense, name, layout)
            print(f"{'check_dense ' + name + ' ' + layout:<44} {t * 1e6:9.1f} us")


if __name__ == "__main__":
    _main()
