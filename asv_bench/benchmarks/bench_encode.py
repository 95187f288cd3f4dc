"""Benchmarks of zkernels' chunk encode kernel against numcodecs.

A 2048x2048 uint16 shard (8 MiB, ``zkernels.bench.make_data``: compresses like a camera image) of
64x64 inner chunks (1024 chunks of 8 KiB), encoded as zarr encodes them for a sharded array with
a zstd level 3 inner codec, or blosc (lz4 with byte shuffle, zstd with bit shuffle; typesize 2,
as zarr sets it for uint16):
- `encode_chunks` over the whole shard, one call (gather, fill test with ``skip_fill``, zstd
  through a reused context or blosc, chunks laid out back to back, without the GIL), with and
  without the fill test, and with crc32c appended,
- against a numcodecs loop: per chunk, the slice copied out (``np.ascontiguousarray``), zarr's
  ``NDBuffer.all_equal`` fill test (what ``write_empty_chunks=False`` runs), the numcodecs Zstd
  encode (a fresh context per call, as zarr's codec does) or Blosc encode (without blosc's own
  threads, as zarr runs it off the main thread) and, with crc32c, google_crc32c,
- `concat_ranges` of the 1024 encoded chunks into one shard buffer, in morton order (what the
  pipeline's assembly does), against a Python loop of slice assignments and ``b"".join``.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_encode.py``.
"""

from __future__ import annotations

import numpy as np

from zkernels._encode import concat_ranges, encode_chunks

SHAPE = (2048, 2048)
CHUNK = (64, 64)
CPS = (SHAPE[0] // CHUNK[0], SHAPE[1] // CHUNK[1])
LEVEL = 3
BLOSC = {
    "blosc-lz4": dict(blosc_cname="lz4", blosc_clevel=5, blosc_shuffle=1, blosc_typesize=2),
    "blosc-zstd": dict(blosc_cname="zstd", blosc_clevel=5, blosc_shuffle=2, blosc_typesize=2),
}
CHAINS = ["zstd", "zstd+skip_fill", "zstd+crc32c", *BLOSC]


def make_value(shape=SHAPE):
    from zkernels.bench import make_data

    return make_data(shape[0]).astype("<u2", copy=False)[: shape[0], : shape[1]]


def _steps(chain):
    if chain in BLOSC:
        return ("blosc",)
    return ("zstd", "crc32c") if chain == "zstd+crc32c" else ("zstd",)


def _params(chain):
    """encode_chunks' compressor keywords."""
    return BLOSC[chain] if chain in BLOSC else dict(zstd_level=LEVEL)


def numcodecs_loop(value, steps, skip_fill, fill=0, chain="zstd"):
    """Per inner chunk (C order): copy out, zarr's all_equal, numcodecs encode, crc32c."""
    import google_crc32c
    import numcodecs
    import numcodecs.blosc
    from zarr.codecs import ZstdCodec
    from zarr.core.buffer.cpu import NDBuffer

    if chain in BLOSC:
        p = BLOSC[chain]
        codec = numcodecs.Blosc(cname=p["blosc_cname"], clevel=p["blosc_clevel"],
                                shuffle=p["blosc_shuffle"], typesize=p["blosc_typesize"])
    else:
        codec = ZstdCodec(level=LEVEL, checksum=False)._zstd_codec  # numcodecs.Zstd
    threads, numcodecs.blosc.use_threads = numcodecs.blosc.use_threads, False
    try:
        return _loop(value, codec, steps, skip_fill, fill, google_crc32c, NDBuffer)
    finally:
        numcodecs.blosc.use_threads = threads


def _loop(value, codec, steps, skip_fill, fill, google_crc32c, NDBuffer):
    out = []
    for i in range(CPS[0]):
        for j in range(CPS[1]):
            block = np.ascontiguousarray(
                value[i * CHUNK[0] : (i + 1) * CHUNK[0], j * CHUNK[1] : (j + 1) * CHUNK[1]]
            )
            if skip_fill and NDBuffer.from_numpy_array(block).all_equal(fill):
                out.append(None)
                continue
            enc = bytes(codec.encode(block.reshape(-1).view(np.uint8)))  # zarr hands it bytes
            if "crc32c" in steps:
                enc += int(google_crc32c.value(enc)).to_bytes(4, "little")
            out.append(enc)
    return out


def _morton_linear(cps):
    from zarr.core.indexing import _morton_order

    order = np.asarray(_morton_order(cps))
    return np.ravel_multi_index(tuple(order.T), cps)


class EncodeChunks:
    """The whole shard: encode_chunks vs the numcodecs loop."""

    params = (CHAINS,)
    param_names = ("chain",)
    timeout = 120

    def setup(self, chain):
        self.value = make_value()
        self.steps = _steps(chain)
        self.skip_fill = chain == "zstd+skip_fill"
        self.chunks = np.arange(CPS[0] * CPS[1], dtype=np.int64)

    def time_encode_chunks(self, chain):
        encode_chunks(self.value, self.chunks, steps=self.steps, chunk_shape=CHUNK,
                      region_start=(0, 0), chunks_per_shard=CPS, fill_value=0,
                      skip_fill=self.skip_fill, **_params(chain))

    def time_numcodecs_loop(self, chain):
        numcodecs_loop(self.value, self.steps, self.skip_fill, chain=chain)

    def track_ratio(self, chain):
        """Stored bytes / raw bytes of the shard's chunks."""
        data, _ = encode_chunks(self.value, self.chunks, steps=self.steps, chunk_shape=CHUNK,
                                region_start=(0, 0), chunks_per_shard=CPS, **_params(chain))
        return data.nbytes / self.value.nbytes

    track_ratio.unit = "ratio"


class ConcatRanges:
    """1024 encoded chunks (one buffer) copied into a shard buffer in morton order."""

    timeout = 60

    def setup(self):
        value = make_value()
        chunks = np.arange(CPS[0] * CPS[1], dtype=np.int64)
        self.data, sizes = encode_chunks(value, chunks, steps=("zstd",), chunk_shape=CHUNK,
                                         region_start=(0, 0), chunks_per_shard=CPS,
                                         zstd_level=LEVEL)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        order = _morton_linear(CPS)
        self.groups = np.zeros(len(order), np.int32)
        self.offsets = offsets[order].astype(np.int64)
        self.nbytes = sizes[order].astype(np.int64)
        self.out = np.ones(int(sizes.sum()), np.uint8)  # touched: no page faults in the timings

    def time_concat_ranges(self):
        concat_ranges([self.data], self.groups, self.offsets, self.nbytes, self.out, 0)

    def time_python_loop(self):
        src, out, pos = self.data, self.out, 0
        for o, n in zip(self.offsets.tolist(), self.nbytes.tolist()):
            out[pos : pos + n] = src[o : o + n]
            pos += n

    def time_bytes_join(self):
        src = memoryview(self.data)
        b"".join([src[o : o + n] for o, n in zip(self.offsets.tolist(), self.nbytes.tolist())])


def _best(*args, **kwargs):
    # standalone mode only: this script's folder is on sys.path
    from _timing import best

    return best(*args, **kwargs)


def _main() -> None:
    """Quick self-timing without asv (and a check that both sides store the same bytes)."""
    nbytes = SHAPE[0] * SHAPE[1] * 2
    print(f"{'chain':<16} {'ratio':>6} {'encode_chunks':>22} {'numcodecs loop':>22} "
          f"{'speed-up':>9}")
    for chain in CHAINS:
        b = EncodeChunks()
        b.setup(chain)
        data, sizes = encode_chunks(b.value, b.chunks, steps=b.steps, chunk_shape=CHUNK,
                                    region_start=(0, 0), chunks_per_shard=CPS, fill_value=0,
                                    skip_fill=b.skip_fill, **_params(chain))
        ref = numcodecs_loop(b.value, b.steps, b.skip_fill, chain=chain)
        assert [s < 0 for s in sizes.tolist()] == [r is None for r in ref]
        assert bytes(data) == b"".join(r for r in ref if r is not None)
        tk = _best(b.time_encode_chunks, chain, repeat=5)
        tn = _best(b.time_numcodecs_loop, chain, repeat=3)
        print(f"{chain:<16} {b.track_ratio(chain):6.2f} "
              f"{tk * 1e3:7.2f} ms {nbytes / tk / 1e9:6.2f} GB/s "
              f"{tn * 1e3:7.2f} ms {nbytes / tn / 1e9:6.2f} GB/s {tn / tk:8.1f}x")
    c = ConcatRanges()
    c.setup()
    c.time_concat_ranges()
    want = b"".join(bytes(c.data[o : o + n]) for o, n in zip(c.offsets, c.nbytes))
    assert bytes(c.out) == want
    tc = _best(c.time_concat_ranges)
    tl = _best(c.time_python_loop)
    tj = _best(c.time_bytes_join)
    print(f"concat_ranges of {len(c.nbytes)} ranges ({c.out.nbytes / 2**20:.1f} MiB): "
          f"{tc * 1e6:.0f} us, python slice loop {tl * 1e6:.0f} us ({tl / tc:.1f}x), "
          f"bytes join {tj * 1e6:.0f} us ({tj / tc:.1f}x)")


if __name__ == "__main__":
    _main()
