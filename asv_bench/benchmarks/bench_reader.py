"""Direct chunk IO (``zkernels.reader``) against ``zarr.Array`` indexing and tensorstore.

One dataset, written once per asv run in ``setup_cache``: N x N uint16 camera-like data
(``zkernels.bench.make_data``, N = 4096 by default, ``ZKERNELS_ASV_SIZE`` changes it) in a
``LocalStore``, sharded zstd (level 3): shards of min(1024, N/2), inner chunks of 64.

- :class:`ChunkLatency`: one read-grid chunk per call, cycling over 256 seeded random chunks:
  ``ChunkReader.read_chunk`` (shard indexes cached after the first pass), the functional
  ``read_chunk`` (metadata document and shard index read on every call), ``array[region]``
  through zarr's default pipeline and through zkernels' pipeline, and tensorstore (no cache
  pool, as it is opened by default) when it is importable.
- :class:`WholeArray`: every chunk once: ``iter_chunks`` (consuming each chunk as it arrives),
  ``read_region(...)``, and whole-array reads through both pipelines and tensorstore; with the
  peak memory of each (a stream holds about its readahead budget, not the whole array).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

import zkernels
from zkernels.bench import make_data
from zkernels.reader import ChunkReader, read_chunk

SIZE = int(os.environ.get("ZKERNELS_ASV_SIZE", "4096"))
SHARD = min(1024, SIZE // 2)
CHUNK = 64
DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
_NAME = "reader-sharded-zstd.zarr"

try:
    import tensorstore as _ts
except ImportError:  # pragma: no cover - optional
    _ts = None


def _write(root: Path) -> str:
    path = root / _NAME
    if not (path / "zarr.json").exists():
        with zarr.config.set({"codec_pipeline.path": DEFAULT}):
            arr = zarr.create_array(
                zarr.storage.LocalStore(path),
                shape=(SIZE, SIZE),
                chunks=(CHUNK, CHUNK),
                shards=(SHARD, SHARD),
                dtype="uint16",
                compressors=[ZstdCodec(level=3)],
            )
            arr[...] = make_data(SIZE)
    return str(path)


def _open(path: str, engine: str) -> zarr.Array:
    if engine == "zkernels":
        with zkernels.enabled():
            return zarr.open_array(zarr.storage.LocalStore(path), mode="r")
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        return zarr.open_array(zarr.storage.LocalStore(path), mode="r")


def _tensorstore(path: str):
    if _ts is None:
        raise NotImplementedError("tensorstore is not installed")
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}
    return _ts.open(spec, read=True).result()


def _region(c: tuple[int, int]) -> tuple[slice, slice]:
    return tuple(slice(i * CHUNK, (i + 1) * CHUNK) for i in c)  # type: ignore[return-value]


class ChunkLatency:
    """Time to read one 64x64 uint16 chunk (8 KiB decoded) of a sharded zstd array."""

    params = [["ChunkReader", "read_chunk", "default", "zkernels", "tensorstore"]]  # noqa: RUF012
    param_names = ["engine"]  # noqa: RUF012
    timeout = 300

    def setup_cache(self) -> str:
        root = Path.cwd() / "zkernels-reader-datasets"
        root.mkdir(exist_ok=True)
        return _write(root)

    def setup(self, path: str, engine: str) -> None:
        rng = np.random.default_rng(0)
        n = SIZE // CHUNK
        self.coords = [tuple(int(x) for x in rng.integers(0, n, 2)) for _ in range(256)]
        self.i = 0
        self.reader = None
        if engine == "ChunkReader":
            self.reader = ChunkReader(_open(path, "default"))
            self.fn = self.reader.read_chunk
        elif engine == "read_chunk":
            store = zarr.storage.LocalStore(path, read_only=True)
            self.fn = lambda c: read_chunk(store, "", c)
        elif engine == "tensorstore":
            t = _tensorstore(path)
            self.fn = lambda c: t[_region(c)].read().result()
        else:
            arr = _open(path, engine)
            self.fn = lambda c: arr[_region(c)]
        for c in self.coords:  # warm: imports, caches, the OS page cache
            self.fn(c)

    def teardown(self, path: str, engine: str) -> None:
        if self.reader is not None:
            self.reader.close()

    def time_chunk(self, path: str, engine: str) -> None:
        self.fn(self.coords[self.i])
        self.i = (self.i + 1) % len(self.coords)


class WholeArray:
    """Read every chunk of the array once."""

    params = [  # noqa: RUF012
        ["iter_chunks", "read_region", "default", "zkernels", "tensorstore"]
    ]
    param_names = ["engine"]  # noqa: RUF012
    number = 1
    repeat = (3, 10, 10.0)
    timeout = 300

    def setup_cache(self) -> str:
        root = Path.cwd() / "zkernels-reader-datasets"
        root.mkdir(exist_ok=True)
        return _write(root)

    def setup(self, path: str, engine: str) -> None:
        self.reader = None
        if engine in ("iter_chunks", "read_region"):
            self.reader = ChunkReader(_open(path, "default"))
            if engine == "iter_chunks":

                def run():
                    total = 0
                    for _c, chunk in self.reader.iter_chunks():
                        total += chunk.size  # the caller touches each chunk
                    return total

                self.fn = run
            else:
                self.fn = lambda: self.reader.read_region(...)
        elif engine == "tensorstore":
            t = _tensorstore(path)
            self.fn = lambda: t[...].read().result()
        else:
            arr = _open(path, engine)
            self.fn = lambda: arr[...]
        self.fn()  # warm

    def teardown(self, path: str, engine: str) -> None:
        if self.reader is not None:
            self.reader.close()

    def time_whole(self, path: str, engine: str) -> None:
        self.fn()

    def peakmem_whole(self, path: str, engine: str) -> None:
        self.fn()
