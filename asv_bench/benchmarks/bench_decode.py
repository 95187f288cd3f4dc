"""Benchmarks of zkernels' chunk decode kernel against numcodecs.

A 2048x2048 uint16 shard (8 MiB) of 64x64 inner chunks (1024 chunks of 8 KiB), encoded the way
zarr encodes them (numcodecs Zstd / Blosc with typesize 2, crc32c appended little-endian) and
laid out in morton order, decoded into a reused output:
- `decode_chunks` over the whole shard, one call (crc32c checks, decompression and the copy
  into the box, without the GIL),
- against a numcodecs loop: per chunk, the crc32c check (google_crc32c, as zarr's codec does),
  the numcodecs decode and a numpy assignment into the output (what zarr's pipeline does per
  inner chunk, less its other Python overhead),
- for the chains zstd, blosc lz4 + shuffle, crc32c + zstd,
- and two threads each decoding half of the shard's chunks (first/last) vs the same two calls in
  series: with the GIL released the threaded time approaches half the serial one.

Run under asv, or directly for a quick table (from the repository root, with the modules built
in place): ``PYTHONPATH=. python asv_bench/benchmarks/bench_decode.py``.
"""

from __future__ import annotations

import threading

import numpy as np
from zkernels._decode import decode_chunks

SHAPE = (2048, 2048)
CHUNK = (64, 64)
CHAINS = ["zstd", "blosc-lz4-shuffle", "crc32c+zstd"]


def _codecs(chain):
    """The chain in decode order: "crc32c" or a numcodecs codec."""
    import numcodecs

    if chain == "zstd":
        return ("zstd",), (numcodecs.Zstd(level=1),)
    if chain == "blosc-lz4-shuffle":
        return ("blosc",), (numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE,
                                            typesize=2),)
    if chain == "crc32c+zstd":
        return ("crc32c", "zstd"), ("crc32c", numcodecs.Zstd(level=1))
    raise ValueError(chain)


def _crc(data) -> bytes:
    import google_crc32c

    return int(google_crc32c.value(bytes(data))).to_bytes(4, "little")


def _morton_positions(cps):
    from zarr.core.indexing import _morton_order

    order = np.asarray(_morton_order(cps))
    lin = np.ravel_multi_index(tuple(order.T), cps)
    pos = np.empty(len(lin), np.intp)
    pos[lin] = np.arange(len(lin))
    return pos


def make_shard(chain, shape=SHAPE, chunk=CHUNK, seed=0):
    """(shard bytes, index (cps + (2,)), the logical array) for `chain`'s encoded chunks."""
    rng = np.random.default_rng(seed)
    # image-like: a smooth ramp plus noise, compresses ~2-3x
    data = (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) // 4
            + rng.integers(0, 16, shape)).astype("<u2")
    _, objs = _codecs(chain)
    cps = tuple(s // c for s, c in zip(shape, chunk))
    pos = _morton_positions(cps)
    blocks = data.reshape(cps[0], chunk[0], cps[1], chunk[1]).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(-1, *chunk)
    stored = [b""] * len(blocks)
    for lin, block in enumerate(blocks):
        enc = block.tobytes()
        for step in reversed(objs):
            enc = enc + _crc(enc) if step == "crc32c" else bytes(step.encode(enc))
        stored[pos[lin]] = enc
    sizes = np.array([len(s) for s in stored], np.uint64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64)
    index = np.stack([offsets[pos], sizes[pos]], axis=1)
    return b"".join(stored), index.reshape(cps + (2,)), data


def numcodecs_loop(shard, index, out, objs, chunk=CHUNK):
    """Per inner chunk: crc32c check, numcodecs decode, np.frombuffer, reshape, assign."""
    view = memoryview(shard)
    for c in np.ndindex(*index.shape[:-1]):
        off, nb = (int(v) for v in index[c])
        data = view[off : off + nb]
        for step in objs:
            if step == "crc32c":
                if _crc(data[:-4]) != bytes(data[-4:]):
                    raise ValueError("checksum")
                data = data[:-4]
            else:
                data = step.decode(data)
        block = np.frombuffer(data, "<u2").reshape(chunk)
        out[c[0] * chunk[0] : (c[0] + 1) * chunk[0], c[1] * chunk[1] : (c[1] + 1) * chunk[1]] = (
            block)


class DecodeChunks:
    """The whole shard: decode_chunks vs the numcodecs loop."""

    params = (CHAINS,)
    param_names = ("chain",)
    timeout = 120

    def setup(self, chain):
        self.steps, self.objs = _codecs(chain)
        self.shard, self.index, self.data = make_shard(chain)
        self.out = np.ones(SHAPE, "<u2")  # touched: no page faults in the timings

    def time_decode_chunks(self, chain):
        decode_chunks([self.shard], self.index, self.out, steps=self.steps, chunk_shape=CHUNK,
                      region_start=(0, 0))

    def time_numcodecs_loop(self, chain):
        numcodecs_loop(self.shard, self.index, self.out, self.objs)

    def track_ratio(self, chain):
        """Stored bytes / decoded bytes of the shard."""
        return len(self.shard) / self.data.nbytes

    track_ratio.unit = "ratio"


class DecodeChunksThreads:
    """One shard, its chunks split in two halves (first/last): two threads at once vs one after
    the other in one thread."""

    params = (CHAINS,)
    param_names = ("chain",)
    timeout = 120
    repeats = 4  # calls per half, so thread start-up stays small next to the work

    def setup(self, chain):
        self.steps, _ = _codecs(chain)
        self.shard, self.index, _ = make_shard(chain)
        self.out = np.ones(SHAPE, "<u2")
        n = int(np.prod(self.index.shape[:-1]))
        self.halves = [(0, n // 2), (n // 2, n)]

    def _work(self, i):
        first, last = self.halves[i]
        for _ in range(self.repeats):
            decode_chunks([self.shard], self.index, self.out, steps=self.steps,
                          chunk_shape=CHUNK, region_start=(0, 0), first=first, last=last)

    def time_serial(self, chain):
        self._work(0)
        self._work(1)

    def time_threads(self, chain):
        threads = [threading.Thread(target=self._work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class DecodeChunksPieces:
    """The whole shard in one box-mode call vs in pieces of ~1 MiB of stored bytes, one
    subset-mode call per piece, each piece copied out of the shard first (what a piecewise read
    of a local file does after each ``pread``): the subset bookkeeping's cost, and what decoding
    from a cache-sized piece gains."""

    params = (["raw", *CHAINS], [1 << 18, 1 << 20])
    param_names = ("chain", "piece_bytes")
    timeout = 120

    def setup(self, chain, piece_bytes):
        from zkernels._coalesce import plan_chunk_reads

        if chain == "raw":
            self.steps = ()
            data = np.arange(SHAPE[0] * SHAPE[1], dtype="<u2").reshape(SHAPE)
            cps = tuple(s // c for s, c in zip(SHAPE, CHUNK))
            blocks = data.reshape(cps[0], CHUNK[0], cps[1], CHUNK[1]).transpose(0, 2, 1, 3)
            self.shard = np.ascontiguousarray(blocks).tobytes()
            n = cps[0] * cps[1]
            nb = CHUNK[0] * CHUNK[1] * 2
            self.index = np.stack([np.arange(n, dtype=np.uint64) * nb,
                                   np.full(n, nb, np.uint64)], axis=1).reshape(cps + (2,))
        else:
            self.steps, _ = _codecs(chain)
            self.shard, self.index, _ = make_shard(chain)
        self.out = np.ones(SHAPE, "<u2")
        cps = self.index.shape[:-1]
        plan = plan_chunk_reads(self.index, box=((0, 0), cps), max_gap_bytes=1 << 16,
                                max_coalesced_bytes=piece_bytes)
        self.ranges, self.locs, self.groups = plan.ranges.tolist(), plan.locs, plan.groups
        g = self.groups.reshape(-1)
        self.order = np.argsort(g, kind="stable")
        self.bounds = np.searchsorted(g[self.order], np.arange(-1, len(self.ranges) + 1))
        self.view = memoryview(self.shard)

    def time_whole(self, chain, piece_bytes):
        decode_chunks([self.shard], self.index, self.out, steps=self.steps, chunk_shape=CHUNK,
                      region_start=(0, 0))

    def time_pieces(self, chain, piece_bytes):
        sources = [b""] * len(self.ranges)
        for r, (a, b) in enumerate(self.ranges):
            sources[r] = bytes(self.view[a:b])
            decode_chunks(sources, self.locs, self.out, steps=self.steps, chunk_shape=CHUNK,
                          region_start=(0, 0), groups=self.groups,
                          subset=self.order[self.bounds[r + 1] : self.bounds[r + 2]])
            sources[r] = b""


def _best(*args, **kwargs):
    # standalone mode only: this script's folder is on sys.path
    from _timing import best

    return best(*args, **kwargs)


def _main() -> None:
    """Quick self-timing without asv (and a check that both sides decode the same array)."""
    nbytes = SHAPE[0] * SHAPE[1] * 2
    print(f"{'chain':<18} {'ratio':>6} {'decode_chunks':>22} {'numcodecs loop':>22} "
          f"{'speed-up':>9}")
    for chain in CHAINS:
        b = DecodeChunks()
        b.setup(chain)
        b.time_decode_chunks(chain)
        assert np.array_equal(b.out, b.data)
        b.out[...] = 1
        b.time_numcodecs_loop(chain)
        assert np.array_equal(b.out, b.data)
        tk = _best(b.time_decode_chunks, chain, repeat=5)
        tn = _best(b.time_numcodecs_loop, chain, repeat=5)
        print(f"{chain:<18} {b.track_ratio(chain):6.2f} "
              f"{tk * 1e3:7.2f} ms {nbytes / tk / 1e9:6.2f} GB/s "
              f"{tn * 1e3:7.2f} ms {nbytes / tn / 1e9:6.2f} GB/s {tn / tk:8.1f}x")
    for chain in CHAINS:
        b = DecodeChunksThreads()
        b.setup(chain)
        ts = _best(b.time_serial, chain, repeat=5)
        tt = _best(b.time_threads, chain, repeat=5)
        print(f"threads {chain:<18}: serial {ts * 1e3:.2f} ms, 2 threads {tt * 1e3:.2f} ms, "
              f"speed-up {ts / tt:.2f}x")
    for chain in ["raw", *CHAINS]:
        b = DecodeChunksPieces()
        b.setup(chain, 1 << 20)
        b.time_whole(chain, 1 << 20)
        whole = b.out.copy()
        b.out[...] = 1
        b.time_pieces(chain, 1 << 20)
        assert np.array_equal(b.out, whole)
        tw = _best(b.time_whole, chain, 1 << 20, repeat=5)
        tp = _best(b.time_pieces, chain, 1 << 20, repeat=5)
        print(f"pieces {chain:<18}: whole {tw * 1e3:.2f} ms, 1 MiB pieces (copied out first) "
              f"{tp * 1e3:.2f} ms")


if __name__ == "__main__":
    _main()
