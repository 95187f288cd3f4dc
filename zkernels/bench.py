"""``python -m zkernels bench``: zkernels against zarr's default pipeline (and zarrs, tensorstore).

The tool writes a set of sharded Zarr v3 datasets (uint16, ``N x N``) into a temporary folder (or
``--dir``), then times each workload with each engine, interleaved round-robin over ``--repeats``
runs after one warm-up run, so that drift of the machine (turbo, page cache, noisy neighbours) hits
every engine alike. Every result is checked against the source data: a read must equal the data
written; a write is read back with zarr's default pipeline and compared. A mismatch or an error is
shown in the table and makes the exit code 1.

Engines:

``default``      zarr's ``BatchedCodecPipeline``
``zkernels``     ``zkernels.KernelCodecPipeline``
``zarrs``        ``zarrs.ZarrsCodecPipeline`` (``pip install zarrs``), when importable
``tensorstore``  tensorstore's own ``zarr3`` driver (``pip install tensorstore``), when importable

The zarr engines open a fresh ``zarr.open_array`` inside ``zarr.config.set({"codec_pipeline.path":
...})``, since zarr picks the pipeline when an array is opened. If zarr ends up with another
pipeline than the one asked for (zarrs with a ``MemoryStore``, say), that engine shows "n/a".

Throughput is MB (10**6 bytes) of decoded array data returned by a read, or handed to a write, per
second of the median run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WORKLOADS", "BenchConfig", "add_parser", "build_parser", "main", "run", "run_bench"]

DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
ZKERNELS_PIPELINE = "zkernels.KernelCodecPipeline"
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"

DTYPE = np.dtype("uint16")
MB = 1e6
N_SINGLE_CHUNKS = 200
N_POINTS = 10_000
N_OVERWRITES = 50
SLAB_ROWS = 64
ZSTD_LEVEL = 3
# Bumped whenever the generated data or the dataset layouts change, so that a reused --dir is
# rebuilt rather than silently compared against other data.
DATA_VERSION = 2


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``shard``/``chunk``/``unsharded_chunk`` of 0 mean "derive from ``size``"."""

    size: int = 8192
    shard: int = 0
    chunk: int = 0
    unsharded_chunk: int = 0
    repeats: int = 5
    workloads: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()
    seed: int = 0
    directory: str | None = None
    json_path: str | None = None
    plot_path: str | None = None
    quiet: bool = False

    def layout(self) -> Layout:
        return Layout.for_size(self.size, self.shard, self.chunk, self.unsharded_chunk)


@dataclass(frozen=True)
class Layout:
    size: int
    shard: int
    chunk: int
    unsharded_chunk: int

    @classmethod
    def for_size(cls, size: int, shard: int = 0, chunk: int = 0, unsharded: int = 0) -> Layout:
        """Default layout: inner chunks of 64, shards of min(2048, N/2) rounded down to a whole
        number of inner chunks, unsharded chunks of min(256, N/4) (never below the inner chunk)."""
        if size < 2:
            raise ValueError(f"--size must be at least 2, got {size}")
        chunk = chunk or max(1, min(64, size // 4))
        shard = shard or max(chunk, min(2048, size // 2) // chunk * chunk)
        unsharded = unsharded or max(chunk, min(256, size // 4))
        if shard % chunk:
            raise ValueError(
                f"the shard side ({shard}) must be a multiple of the chunk side ({chunk})"
            )
        return cls(size=size, shard=shard, chunk=chunk, unsharded_chunk=unsharded)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def nbytes(self) -> int:
        return self.size * self.size * DTYPE.itemsize

    def describe(self) -> str:
        return (
            f"{self.size}x{self.size} uint16 ({_fmt_bytes(self.nbytes)}), shards "
            f"{self.shard}x{self.shard}, inner chunks {self.chunk}x{self.chunk}, unsharded chunks "
            f"{self.unsharded_chunk}x{self.unsharded_chunk}"
        )


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


# ---------------------------------------------------------------------------------------------
# data and datasets


def make_data(size: int, seed: int = 0) -> np.ndarray:
    """Deterministic uint16 test image that compresses like real data.

    Like a 12-bit camera image: a gradient, two octaves of smooth (bilinearly interpolated) noise
    and 4 bits of fine noise, values in about 0..2600. zstd level 3 gets a ratio of about 1.7 out of
    64x64 chunks of it (blosc lz4 + shuffle about 1.8), as on real sensor data; not the ~1.0 of
    pure random numbers nor the ~100 of constants.
    """
    rng = np.random.default_rng(seed)
    octaves = []
    for step, amplitude in ((512, 500.0), (48, 120.0)):
        m = size // step + 2
        coarse = rng.standard_normal((m, m)).astype(np.float32)
        xs = np.arange(size, dtype=np.float64) / step
        grid = np.arange(m, dtype=np.float64)
        cols = np.stack([np.interp(xs, grid, coarse[i]) for i in range(m)]).astype(np.float32)
        octaves.append((step, amplitude, cols))
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    out = np.empty((size, size), dtype=DTYPE)
    block = 256
    for r0 in range(0, size, block):
        rows = np.arange(r0, min(size, r0 + block))
        value = 300.0 + 800.0 * (ramp[None, :] + ramp[rows][:, None])
        for step, amplitude, cols in octaves:
            f = rows / step
            i0 = f.astype(np.intp)
            t = (f - i0).astype(np.float32)[:, None]
            value = value + amplitude * ((1 - t) * cols[i0] + t * cols[i0 + 1])
        value = value + rng.integers(0, 16, size=value.shape, dtype=np.int32)
        out[r0 : r0 + len(rows)] = np.clip(value, 0, 65535).astype(DTYPE)
    return out


def _compressors(kind: str) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec

    if kind == "uncompressed":
        return None
    if kind == "zstd":
        return ZstdCodec(level=ZSTD_LEVEL)
    if kind == "blosc_lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=DTYPE.itemsize)
    raise ValueError(kind)


# name -> (compressor kind, sharded)
DATASETS: dict[str, tuple[str, bool]] = {
    "uncompressed": ("uncompressed", True),
    "zstd": ("zstd", True),
    "blosc_lz4": ("blosc_lz4", True),
    "unsharded_zstd": ("zstd", False),
}


def _default_config() -> Any:
    import zarr

    return zarr.config.set({"codec_pipeline.path": DEFAULT_PIPELINE})


def create_array(store: Any, layout: Layout, kind: str, sharded: bool = True) -> Any:
    """An empty array of the benchmark's shape with the given codec, via zarr's default pipeline."""
    import zarr

    if sharded:
        chunks, shards = (layout.chunk, layout.chunk), (layout.shard, layout.shard)
    else:
        chunks, shards = (layout.unsharded_chunk, layout.unsharded_chunk), None
    with _default_config():
        return zarr.create_array(
            store=store,
            shape=layout.shape,
            chunks=chunks,
            shards=shards,
            dtype=DTYPE,
            compressors=_compressors(kind),
            fill_value=0,
            overwrite=True,
        )


def _dir_nbytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# engines


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        mod = sys.modules.get(dist)
        return getattr(mod, "__version__", None)


class NotApplicable(Exception):
    """The engine cannot run this workload (shown as n/a, not counted as a failure)."""


@dataclass
class MemoryTarget:
    """The uncompressed layout held in a ``zarr.storage.MemoryStore`` (and, for tensorstore, in
    its own "memory" kvstore, filled on first use)."""

    store: Any
    metadata: dict
    ts_handle: Any = None


class Engine:
    """How one library opens, reads and writes an array. Subclass to add an engine."""

    name = "engine"

    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else why not (e.g. not installed)."""
        return None

    def version(self) -> str | None:
        return None

    def open(self, target: Path | MemoryTarget, *, write: bool = False) -> Any:
        raise NotImplementedError

    def read(self, handle: Any, selection: tuple) -> np.ndarray:
        raise NotImplementedError

    def read_points(self, handle: Any, coords: tuple[np.ndarray, ...]) -> np.ndarray:
        raise NotImplementedError

    def write(self, handle: Any, selection: tuple, value: np.ndarray) -> None:
        raise NotImplementedError

    def note(self, handle: Any) -> str | None:
        """Anything worth recording about how the engine handled this array."""
        return None


class ZarrEngine(Engine):
    """zarr-python with the codec pipeline at ``pipeline_path``."""

    def __init__(self, name: str, pipeline_path: str, module: str | None = None) -> None:
        self.name = name
        self.pipeline_path = pipeline_path
        self.module = module

    def unavailable_reason(self) -> str | None:
        if self.module is None:
            return None
        try:
            __import__(self.module)
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken build raising other
            return f"cannot import {self.module}: {type(exc).__name__}: {exc}"
        return None

    def version(self) -> str | None:
        return _dist_version((self.module or "zarr").split(".")[0])

    def open(self, target: Path | MemoryTarget, *, write: bool = False) -> Any:
        import zarr

        store = target.store if isinstance(target, MemoryTarget) else str(target)
        with zarr.config.set({"codec_pipeline.path": self.pipeline_path}):
            arr = zarr.open_array(store=store, mode="r+" if write else "r")
        pipeline = arr._async_array.codec_pipeline
        wanted = self.pipeline_path.rsplit(".", 1)[1]
        if type(pipeline).__name__ != wanted:
            raise NotApplicable(
                f"zarr opened this array with {type(pipeline).__name__}, not {wanted} "
                f"(store {type(store).__name__})"
            )
        return arr

    def read(self, handle: Any, selection: tuple) -> np.ndarray:
        return handle[selection]

    def read_points(self, handle: Any, coords: tuple[np.ndarray, ...]) -> np.ndarray:
        return handle.vindex[coords]

    def write(self, handle: Any, selection: tuple, value: np.ndarray) -> None:
        handle[selection] = value


class ZKernelsEngine(ZarrEngine):
    def __init__(self) -> None:
        super().__init__("zkernels", ZKERNELS_PIPELINE, "zkernels.pipeline")

    def version(self) -> str | None:
        import zkernels

        return zkernels.__version__

    def note(self, handle: Any) -> str | None:
        try:
            from zkernels import explain

            text = explain(handle)
        except Exception as exc:  # noqa: BLE001 - explain is informational only
            return f"explain() failed: {type(exc).__name__}: {exc}"
        return None if text == "accelerated by zkernels" else text


class TensorStoreEngine(Engine):
    """tensorstore's zarr3 driver (its own reader and writer, no zarr-python involved)."""

    name = "tensorstore"

    def unavailable_reason(self) -> str | None:
        try:
            import tensorstore  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return f"cannot import tensorstore: {type(exc).__name__}: {exc}"
        return None

    def version(self) -> str | None:
        return _dist_version("tensorstore")

    def open(self, target: Path | MemoryTarget, *, write: bool = False) -> Any:
        import tensorstore as ts

        if isinstance(target, MemoryTarget):
            if target.ts_handle is None:
                # tensorstore cannot see a zarr MemoryStore: copy the same array (same metadata,
                # same data) into tensorstore's own in-memory kvstore, outside the timed runs.
                spec = {
                    "driver": "zarr3",
                    "kvstore": {"driver": "memory"},
                    "metadata": target.metadata,
                    "create": True,
                }
                handle = ts.open(spec).result()
                with _default_config():
                    import zarr

                    data = zarr.open_array(store=target.store, mode="r")[...]
                handle.write(data).result()
                target.ts_handle = handle
            return target.ts_handle
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(target)}}
        return ts.open(spec, read=True, write=write).result()

    def read(self, handle: Any, selection: tuple) -> np.ndarray:
        return handle[selection].read().result()

    def read_points(self, handle: Any, coords: tuple[np.ndarray, ...]) -> np.ndarray:
        return handle.vindex[coords].read().result()

    def write(self, handle: Any, selection: tuple, value: np.ndarray) -> None:
        handle[selection].write(value).result()


# Factories, so that tests can swap an engine (monkeypatch.setitem(bench.ENGINES, ...)).
ENGINES: dict[str, Callable[[], Engine]] = {
    "default": lambda: ZarrEngine("default", DEFAULT_PIPELINE),
    "zkernels": ZKernelsEngine,
    "zarrs": lambda: ZarrEngine("zarrs", ZARRS_PIPELINE, "zarrs"),
    "tensorstore": TensorStoreEngine,
}
OPTIONAL_ENGINES = ("zarrs", "tensorstore")


# ---------------------------------------------------------------------------------------------
# workloads


class Context:
    """Datasets and source data shared by the workloads of one run."""

    def __init__(self, config: BenchConfig, root: Path, progress: Callable[[str], None]) -> None:
        self.config = config
        self.layout = config.layout()
        self.root = root
        self.progress = progress
        self._data: np.ndarray | None = None
        self.datasets: dict[str, dict] = {}
        self.memory: MemoryTarget | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self.progress(f"generating {self.layout.size}x{self.layout.size} source data")
            self._data = make_data(self.layout.size, self.config.seed)
            self._data.setflags(write=False)
        return self._data

    def _stamp(self, name: str) -> dict:
        import zarr

        kind, sharded = DATASETS[name]
        lay = self.layout
        return {
            "data_version": DATA_VERSION,
            "seed": self.config.seed,
            "size": lay.size,
            "chunks": lay.chunk if sharded else lay.unsharded_chunk,
            "shards": lay.shard if sharded else None,
            "codec": kind,
            "zarr": zarr.__version__,
        }

    def dataset(self, name: str) -> Path:
        """The path of a read dataset, written on first use (reused from --dir if its stamp
        matches)."""
        path = self.root / f"{name}.zarr"
        stamp_path = self.root / f"{name}.zarr.stamp.json"
        stamp = self._stamp(name)
        if name not in self.datasets:
            reuse = False
            if path.exists() and stamp_path.exists():
                try:
                    reuse = json.loads(stamp_path.read_text()) == stamp
                except ValueError:
                    reuse = False
            if not reuse:
                self.progress(f"writing dataset {name}")
                t0 = time.perf_counter()
                if path.exists():
                    shutil.rmtree(path)
                stamp_path.unlink(missing_ok=True)
                kind, sharded = DATASETS[name]
                arr = create_array(str(path), self.layout, kind, sharded)
                arr[...] = self.data
                stamp_path.write_text(json.dumps(stamp))
                self.progress(f"writing dataset {name}: {time.perf_counter() - t0:.1f} s")
            self.datasets[name] = {
                "path": str(path),
                "stored_bytes": _dir_nbytes(path),
                "reused": reuse,
                **stamp,
            }
        return path

    def memory_target(self) -> MemoryTarget:
        if self.memory is None:
            from zarr.storage import MemoryStore

            self.progress("writing dataset memory (MemoryStore)")
            store = MemoryStore()
            arr = create_array(store, self.layout, "uncompressed", True)
            arr[...] = self.data
            meta = json.loads(json.dumps(arr.metadata.to_dict()))
            self.memory = MemoryTarget(store=store, metadata=meta)
            self.datasets["memory"] = {
                "path": None,
                "store": "MemoryStore",
                "codec": "uncompressed",
            }
        return self.memory

    def scratch(self, name: str) -> Path:
        path = self.root / "scratch" / f"{name}.zarr"
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def read_back(self, target: Path, selection: tuple) -> np.ndarray:
        """Read with zarr's default pipeline (the reference for checking writes)."""
        import zarr

        with _default_config():
            arr = zarr.open_array(store=str(target), mode="r")
        return arr[selection]


def _mismatch(expected: np.ndarray, got: Any) -> str | None:
    """None when ``got`` equals ``expected`` exactly (shape, dtype-compatible values)."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        return f"shape {got.shape} != expected {expected.shape}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype} != expected {expected.dtype}"
    if np.array_equal(got, expected):
        return None
    bad = np.argwhere(got != expected)
    first = tuple(int(i) for i in bad[0])
    return (
        f"{len(bad)} of {expected.size} values differ; first at {first}: "
        f"got {got[first]}, expected {expected[first]}"
    )


@dataclass
class State:
    """What ``prepare`` hands to ``run`` and ``check`` for one engine."""

    handle: Any
    target: Path | MemoryTarget | None = None
    extra: dict = field(default_factory=dict)


class Workload:
    name = "workload"
    kind = "read"
    description = ""
    # writes verify after the warm-up and after the last repeat (reading back is not free)
    check_every_run = True

    def nbytes(self, ctx: Context) -> int:
        return ctx.layout.nbytes

    def prepare(self, ctx: Context, engine: Engine) -> State:
        raise NotImplementedError

    def run(self, engine: Engine, state: State) -> Any:
        raise NotImplementedError

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        raise NotImplementedError


class WholeRead(Workload):
    def __init__(self, name: str, dataset: str, description: str) -> None:
        self.name, self.dataset, self.description = name, dataset, description

    def target(self, ctx: Context) -> Path | MemoryTarget:
        return ctx.memory_target() if self.dataset == "memory" else ctx.dataset(self.dataset)

    def prepare(self, ctx: Context, engine: Engine) -> State:
        target = self.target(ctx)
        return State(engine.open(target), target)

    def run(self, engine: Engine, state: State) -> Any:
        return engine.read(state.handle, (slice(None), slice(None)))

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        return _mismatch(ctx.data, result)


class SingleChunks(Workload):
    name = "read_single_chunks"
    description = f"{N_SINGLE_CHUNKS} random single inner chunks, one read each (zstd)"

    def nbytes(self, ctx: Context) -> int:
        return N_SINGLE_CHUNKS * ctx.layout.chunk**2 * DTYPE.itemsize

    def selections(self, ctx: Context) -> list[tuple]:
        c = ctx.layout.chunk
        n = math.ceil(ctx.layout.size / c)
        rng = np.random.default_rng(ctx.config.seed + 1)
        ij = rng.integers(0, n, size=(N_SINGLE_CHUNKS, 2))
        end = ctx.layout.size  # the last chunk along an axis may be partial
        return [
            (slice(i * c, min((i + 1) * c, end)), slice(j * c, min((j + 1) * c, end)))
            for i, j in ij.tolist()
        ]

    def prepare(self, ctx: Context, engine: Engine) -> State:
        target = ctx.dataset("zstd")
        return State(engine.open(target), target, {"sels": self.selections(ctx)})

    def run(self, engine: Engine, state: State) -> Any:
        h = state.handle
        return [engine.read(h, sel) for sel in state.extra["sels"]]

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        for k, (sel, got) in enumerate(zip(state.extra["sels"], result, strict=True)):
            bad = _mismatch(ctx.data[sel], got)
            if bad:
                return f"chunk read #{k} {_fmt_sel(sel)}: {bad}"
        return None


class Slab(Workload):
    name = "read_slab"
    description = f"a {SLAB_ROWS}-row full-width slab from the middle (zstd)"

    def sel(self, ctx: Context) -> tuple:
        rows = min(SLAB_ROWS, ctx.layout.size)
        r0 = (ctx.layout.size // 2 // ctx.layout.chunk) * ctx.layout.chunk
        r0 = min(r0, ctx.layout.size - rows)
        return (slice(r0, r0 + rows), slice(None))

    def nbytes(self, ctx: Context) -> int:
        return min(SLAB_ROWS, ctx.layout.size) * ctx.layout.size * DTYPE.itemsize

    def prepare(self, ctx: Context, engine: Engine) -> State:
        target = ctx.dataset("zstd")
        return State(engine.open(target), target, {"sel": self.sel(ctx)})

    def run(self, engine: Engine, state: State) -> Any:
        return engine.read(state.handle, state.extra["sel"])

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        return _mismatch(ctx.data[state.extra["sel"]], result)


class Points(Workload):
    name = "read_points"
    description = f"{N_POINTS:,} random points, one vindex (coordinate) selection (zstd)"

    def nbytes(self, ctx: Context) -> int:
        return N_POINTS * DTYPE.itemsize

    def prepare(self, ctx: Context, engine: Engine) -> State:
        target = ctx.dataset("zstd")
        rng = np.random.default_rng(ctx.config.seed + 2)
        coords = tuple(rng.integers(0, ctx.layout.size, size=(2, N_POINTS)))
        return State(engine.open(target), target, {"coords": coords})

    def run(self, engine: Engine, state: State) -> Any:
        return engine.read_points(state.handle, state.extra["coords"])

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        return _mismatch(ctx.data[state.extra["coords"]], result)


class WholeWrite(Workload):
    kind = "write"
    check_every_run = False

    def __init__(self, name: str, codec: str, description: str) -> None:
        self.name, self.codec, self.description = name, codec, description

    def prepare(self, ctx: Context, engine: Engine) -> State:
        target = ctx.scratch(f"{self.name}.{engine.name}")
        create_array(str(target), ctx.layout, self.codec, True)
        return State(engine.open(target, write=True), target, {"data": ctx.data})

    def run(self, engine: Engine, state: State) -> Any:
        engine.write(state.handle, (slice(None), slice(None)), state.extra["data"])
        return None

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        got = ctx.read_back(state.target, (slice(None), slice(None)))
        bad = _mismatch(ctx.data, got)
        return f"read back with the default pipeline: {bad}" if bad else None


class Overwrite(Workload):
    name = "overwrite_chunk"
    kind = "write"
    check_every_run = False
    description = f"overwrite one inner chunk of an existing zstd shard {N_OVERWRITES} times"

    def nbytes(self, ctx: Context) -> int:
        return N_OVERWRITES * ctx.layout.chunk**2 * DTYPE.itemsize

    def prepare(self, ctx: Context, engine: Engine) -> State:
        lay = ctx.layout
        s = min(lay.shard, lay.size)
        target = ctx.scratch(f"{self.name}.{engine.name}")
        arr = create_array(str(target), lay, "zstd", True)
        shard_sel = (slice(0, s), slice(0, s))
        with _default_config():
            arr[shard_sel] = ctx.data[shard_sel]
        c = lay.chunk
        k = 1 if 2 * c <= s else 0  # inner chunk (1, 1) of shard (0, 0): not at the shard's edge
        sel = (slice(k * c, (k + 1) * c), slice(k * c, (k + 1) * c))
        base = ctx.data[sel].astype(DTYPE)
        blocks = [(base + np.uint16(i + 1)).astype(DTYPE) for i in range(N_OVERWRITES)]
        expected = ctx.data[shard_sel].copy()
        expected[sel] = blocks[-1]
        extra = {"sel": sel, "blocks": blocks, "shard_sel": shard_sel, "expected": expected}
        return State(engine.open(target, write=True), target, extra)

    def run(self, engine: Engine, state: State) -> Any:
        h, sel = state.handle, state.extra["sel"]
        for block in state.extra["blocks"]:
            engine.write(h, sel, block)
        return None

    def check(self, ctx: Context, engine: Engine, state: State, result: Any) -> str | None:
        got = ctx.read_back(state.target, state.extra["shard_sel"])
        bad = _mismatch(state.extra["expected"], got)
        return f"shard read back with the default pipeline: {bad}" if bad else None


def _fmt_sel(sel: tuple) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in sel) + "]"


def _make_workloads() -> dict[str, Workload]:
    items: list[Workload] = [
        WholeRead("read_uncompressed", "uncompressed", "whole array, sharded, no compression"),
        WholeRead("read_zstd", "zstd", f"whole array, sharded, zstd level {ZSTD_LEVEL}"),
        WholeRead("read_blosc_lz4", "blosc_lz4", "whole array, sharded, blosc lz4 + shuffle"),
        SingleChunks(),
        Slab(),
        Points(),
        WholeWrite("write_uncompressed", "uncompressed", "whole array, sharded, no compression"),
        WholeWrite("write_zstd", "zstd", f"whole array, sharded, zstd level {ZSTD_LEVEL}"),
        Overwrite(),
        WholeRead("read_unsharded_zstd", "unsharded_zstd", "whole array, unsharded, zstd"),
        WholeRead("read_memory", "memory", "whole array, sharded, no compression, MemoryStore"),
    ]
    return {w.name: w for w in items}


WORKLOADS: dict[str, Workload] = _make_workloads()


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Result:
    workload: str
    engine: str
    status: str = "ok"  # ok | mismatch | error | n/a
    reason: str | None = None
    note: str | None = None
    nbytes: int = 0
    warmup_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    speedup: float | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def mb_per_s(self) -> float | None:
        m = self.median_s
        return self.nbytes / MB / m if m else None

    def to_json(self) -> dict:
        return {
            "workload": self.workload,
            "engine": self.engine,
            "status": self.status,
            "reason": self.reason,
            "note": self.note,
            "nbytes": self.nbytes,
            "warmup_s": self.warmup_s,
            "times_s": self.times_s,
            "median_s": self.median_s,
            "min_s": min(self.times_s) if self.times_s else None,
            "mb_per_s": self.mb_per_s,
            "speedup_vs_default": self.speedup,
        }


@dataclass
class Report:
    config: BenchConfig
    layout: Layout
    engines: list[str]
    results: list[Result]
    meta: dict
    datasets: dict
    skipped_engines: dict[str, str]

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status in ("mismatch", "error")]

    def to_json(self) -> dict:
        cfg = {k: v for k, v in self.config.__dict__.items()}
        cfg["workloads"] = list(self.config.workloads)
        cfg["engines"] = list(self.config.engines)
        return {
            "tool": "python -m zkernels bench",
            "meta": self.meta,
            "config": cfg,
            "layout": self.layout.__dict__,
            "engines": self.engines,
            "skipped_engines": self.skipped_engines,
            "workloads": {
                name: {"kind": WORKLOADS[name].kind, "description": WORKLOADS[name].description}
                for name in self.config.workloads
            },
            "datasets": self.datasets,
            "results": [r.to_json() for r in self.results],
            "ok": not self.failures,
        }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info(engines: dict[str, Engine]) -> dict:
    import numcodecs
    import zarr

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
    }
    for name, eng in engines.items():
        if name != "default":
            try:
                versions[name] = eng.version()
            except Exception:  # noqa: BLE001
                versions[name] = None
    for dist in ("zstandard", "crc32c"):
        found = _dist_version(dist)
        if found:
            versions[dist] = found
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
        "memory_gib": _memory_gib(),
        "loadavg_after": _loadavg(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "versions": versions,
        "argv": sys.argv,
    }


def _loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was (before and after a run)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


class Progress:
    """One line on stderr per step; rewritten in place on a terminal."""

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._width = 0

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        line = f"[{time.perf_counter() - self.t0:6.1f}s] {msg}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and not self.quiet and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()
    return dt, out


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def resolve_engines(names: Sequence[str]) -> tuple[dict[str, Engine], dict[str, str], list[str]]:
    """(engines to run, engines left out with why, names that show as n/a in the table)."""
    explicit = bool(names)
    names = list(names) or list(ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    if "default" not in names:
        names.insert(0, "default")  # the reference for the speedups
    engines: dict[str, Engine] = {}
    skipped: dict[str, str] = {}
    shown_na: list[str] = []
    for name in names:
        eng = ENGINES[name]()
        reason = eng.unavailable_reason()
        if reason is None:
            engines[name] = eng
        else:
            skipped[name] = reason
            # an optional engine that is simply not installed is left out of the table unless
            # asked for by name; zkernels (the point of the exercise) always shows
            if explicit or name not in OPTIONAL_ENGINES:
                shown_na.append(name)
    return engines, skipped, shown_na


def run_bench(config: BenchConfig) -> Report:
    """Run the benchmark described by ``config`` and return the report (prints nothing)."""
    progress = Progress(config.quiet)
    load_before = _loadavg()
    workloads = list(config.workloads) or list(WORKLOADS)
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    config = _replace(config, workloads=tuple(workloads))
    engines, skipped, shown_na = resolve_engines(config.engines)
    order = [n for n in ENGINES if n in engines or n in shown_na]
    layout = config.layout()

    tmp = None
    if config.directory:
        root = Path(config.directory)
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="zkernels-bench-")
        root = Path(tmp)
    ctx = Context(config, root, progress)
    results: list[Result] = []
    try:
        for wi, wname in enumerate(workloads, 1):
            tag = f"[{wi}/{len(workloads)}] {wname}"
            res = {n: Result(wname, n, nbytes=WORKLOADS[wname].nbytes(ctx)) for n in order}
            for n in shown_na:
                res[n].status, res[n].reason = "n/a", skipped[n]
            _run_workload(WORKLOADS[wname], ctx, engines, res, tag)
            results.extend(res[n] for n in order)
        meta = machine_info(engines)
        meta["loadavg_before"] = load_before
        datasets = dict(ctx.datasets)
    finally:
        progress.done()
        ctx._data = None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(root / "scratch", ignore_errors=True)
    return Report(config, layout, order, results, meta, datasets, skipped)


def _run_workload(
    wl: Workload, ctx: Context, engines: dict[str, Engine], res: dict[str, Result], tag: str
) -> None:
    """Warm-up, then ``repeats`` rounds of every engine in turn; fills in ``res``."""
    progress, repeats = ctx.progress, ctx.config.repeats
    states: dict[str, State] = {}
    for n, eng in engines.items():
        progress(f"{tag}: preparing {n}")
        try:
            states[n] = wl.prepare(ctx, eng)
            res[n].note = eng.note(states[n].handle)
        except NotApplicable as exc:
            res[n].status, res[n].reason = "n/a", str(exc)
        except Exception as exc:  # noqa: BLE001 - any engine failure is reported, not raised
            res[n].status, res[n].reason = "error", "prepare: " + _error_text(exc)
    active = list(states)

    def one(n: str, label: str, check: bool) -> float | None:
        eng, st = engines[n], states[n]
        progress(f"{tag}: {n} {label}")
        try:
            dt, out = _timed(lambda: wl.run(eng, st))
        except Exception as exc:  # noqa: BLE001
            res[n].status, res[n].reason = "error", f"{label}: " + _error_text(exc)
            active.remove(n)
            return None
        if check and res[n].status == "ok":
            try:
                bad = wl.check(ctx, eng, st, out)
            except Exception as exc:  # noqa: BLE001
                bad = "checking raised " + _error_text(exc)
            if bad:
                res[n].status, res[n].reason = "mismatch", f"{label}: {bad}"
        del out
        return dt

    for n in list(active):
        res[n].warmup_s = one(n, "warm-up", True)
    for r in range(repeats):
        last = r == repeats - 1
        k = r % len(active) if active else 0
        for n in active[k:] + active[:k]:  # rotate who goes first
            dt = one(n, f"run {r + 1}/{repeats}", wl.check_every_run or last)
            if dt is not None:
                res[n].times_s.append(dt)
    ref = res.get("default")
    ref_median = ref.median_s if ref is not None and ref.status == "ok" else None
    for r in res.values():
        if ref_median and r.median_s and r.status in ("ok", "mismatch"):
            r.speedup = ref_median / r.median_s


def _replace(config: BenchConfig, **changes: Any) -> BenchConfig:
    from dataclasses import replace

    return replace(config, **changes)


# ---------------------------------------------------------------------------------------------
# output


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt_rate(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:,.0f}" if r >= 10 else f"{r:.2f}"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _check_cell(r: Result) -> str:
    if r.status == "ok":
        return "ok" + (" (note)" if r.note else "")
    if r.status == "n/a":
        return "n/a"
    return f"**{r.status.upper()}**"


def format_report(report: Report) -> str:
    lay = report.layout
    m = report.meta
    v = m["versions"]
    lines = [
        (
            f"zkernels bench: {lay.describe()}; {report.config.repeats} "
            f"repeat{'s' if report.config.repeats != 1 else ''} after a warm-up, median shown"
        ),
        f"machine: {m['cpu']}, {m['usable_cpus']} usable cpus, Python {v['python']}, "
        + ", ".join(f"{k} {val}" for k, val in v.items() if k != "python" and val),
        "",
        "| workload | MB | engine | median | MB/s | vs default | check |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for wname in report.config.workloads:
        rows = [r for r in report.results if r.workload == wname]
        for i, r in enumerate(rows):
            head = f"{wname} | {r.nbytes / MB:.2f}" if i == 0 else " | "
            lines.append(
                f"| {head} | {r.engine} | {_fmt_time(r.median_s)} | {_fmt_rate(r.mb_per_s)} | "
                f"{_fmt_x(r.speedup)} | {_check_cell(r)} |"
            )
    others = [e for e in report.engines if e != "default"]
    if others:
        lines += ["", "Speedup over zarr's default pipeline (median time of default / engine):", ""]
        lines.append("| workload | " + " | ".join(others) + " |")
        lines.append("| --- |" + " ---: |" * len(others))
        for wname in report.config.workloads:
            cells = []
            for e in others:
                r = next(r for r in report.results if r.workload == wname and r.engine == e)
                if r.status == "n/a":
                    cells.append("n/a")
                elif r.status == "error":
                    cells.append("**ERROR**")
                else:
                    x = _fmt_x(r.speedup)
                    cells.append(x if r.status == "ok" else f"{x} **MISMATCH**")
            lines.append(f"| {wname} | " + " | ".join(cells) + " |")
    notes = [r for r in report.results if r.status != "ok" or r.note]
    if notes:
        lines += ["", "Notes:"]
        for r in notes:
            text = r.reason if r.status != "ok" else r.note
            lines.append(f"- {r.workload} / {r.engine}: {r.status}: {text}")
    left_out = {k: v for k, v in report.skipped_engines.items() if k not in report.engines}
    if left_out:
        lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in left_out.items())]
    if report.failures:
        lines += [
            "",
            f"!!! {len(report.failures)} result(s) FAILED the check against the source data "
            "or raised: "
            + ", ".join(f"{r.workload}/{r.engine} ({r.status})" for r in report.failures),
        ]
    return "\n".join(lines)


def write_plot(report: Report, path: str) -> str | None:
    """Bar chart of speedups; returns an error message instead of raising when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib (or pip install 'zkernels[bench]')"
    others = [e for e in report.engines if e != "default"]
    wls = list(report.config.workloads)
    fig, ax = plt.subplots(figsize=(10, 4.4), dpi=90)
    width = 0.8 / max(1, len(others))
    for k, e in enumerate(others):
        xs = [i + (k - (len(others) - 1) / 2) * width for i in range(len(wls))]
        rows = [next(r for r in report.results if r.workload == w and r.engine == e) for w in wls]
        ys = [r.speedup if r.status == "ok" and r.speedup else math.nan for r in rows]
        ax.bar(xs, ys, width, label=e)
        for x, y, r in zip(xs, ys, rows, strict=True):
            # the value on top of each bar; in its place, why there is no bar
            text = f"{y:.1f}" if not math.isnan(y) else r.status.upper().replace("N/A", "n/a")
            ax.annotate(
                text,
                (x, 1.0 if math.isnan(y) else y),
                ha="center",
                va="bottom",
                fontsize=6,
                color="red" if math.isnan(y) else "black",
            )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_ylabel("speedup over zarr's default pipeline")
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels(wls, rotation=30, ha="right", fontsize=8)
    lay, m = report.layout, report.meta
    ax.set_title(
        f"{lay.size}x{lay.size} uint16, shards {lay.shard}, inner chunks {lay.chunk}; "
        f"{m['cpu']}, {m['usable_cpus']} cpus; median of {report.config.repeats}",
        fontsize=9,
        pad=22,
    )
    ax.legend(
        fontsize=8,
        ncol=max(1, len(others)),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------------------------
# command line


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--workloads",
        type=_csv,
        default=(),
        help="comma-separated workloads (default: all): " + ", ".join(WORKLOADS),
    )
    parser.add_argument(
        "--engines",
        type=_csv,
        default=(),
        help="comma-separated engines (default: all installed): " + ", ".join(ENGINES),
    )
    parser.add_argument("--size", type=int, default=None, help="array side N (default 8192)")
    parser.add_argument("--shard", type=int, default=0, help="shard side (default min(2048, N/2))")
    parser.add_argument(
        "--chunk", type=int, default=0, help="inner chunk side (default min(64, N/4))"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per engine (default 5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small and fast: N=1024 (unless --size), 2 repeats (CI, README)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data and selection seed")
    parser.add_argument(
        "--dir",
        default=None,
        help="keep datasets here and reuse them next time (default: a temporary folder)",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="write raw timings here")
    parser.add_argument("--plot", default=None, metavar="PATH", help="PNG bar chart of speedups")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``python -m zkernels`` subcommand parser."""
    p = subparsers.add_parser(
        "bench",
        help="compare zkernels with zarr's default pipeline (and zarrs, tensorstore)",
        description=__doc__.split("\n\n")[0],
    )
    return _configure(p)


def build_parser() -> argparse.ArgumentParser:
    return _configure(argparse.ArgumentParser(prog="python -m zkernels bench"))


def _check_output(path: str | None, what: str, suffix: str | None = None) -> None:
    """Refuse an output path that cannot be written before the run, not after it."""
    if path is None:
        return
    target = Path(path)
    if suffix is not None and target.suffix.lower() != suffix:
        raise ValueError(f"{what} {path!r}: the file name must end in {suffix}")
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ValueError(f"{what} {path!r} is a folder")
    if target.exists() and os.access(target, os.W_OK):
        return  # an existing file it may write (/dev/stdout too)
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"{what} {path!r}: folder {str(parent)!r} does not exist or is not "
                         "writable")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    size, repeats, shard, chunk = args.size, args.repeats, args.shard, args.chunk
    for flag, value, note in (("--shard", shard, " (0: the default)"),
                              ("--chunk", chunk, " (0: the default)"), ("--seed", args.seed, "")):
        if value < 0:
            raise ValueError(f"{flag} must be >= 0{note}, got {value}")
    if size is not None and size < 2:
        raise ValueError(f"--size must be at least 2, got {size}")
    if args.dir is not None and Path(args.dir).exists() and not Path(args.dir).is_dir():
        raise ValueError(f"--dir {args.dir!r} is a file, not a folder")
    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot", ".png")
    if args.quick:  # the default layout of N=1024 is shards 512, chunks 64
        size = size or 1024
        repeats = repeats or 2
    if repeats is not None and repeats < 1:
        raise ValueError("--repeats must be at least 1")
    return BenchConfig(
        size=size or 8192,
        shard=shard,
        chunk=chunk,
        repeats=repeats or 5,
        workloads=args.workloads,
        engines=args.engines,
        seed=args.seed,
        directory=args.dir,
        json_path=args.json,
        plot_path=args.plot,
        quiet=args.quiet,
    )


def _plot_missing() -> str | None:
    """Why ``--plot`` cannot work here (matplotlib missing), told before the run, not after."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib (or pip install 'zkernels[bench]')"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m zkernels bench``; returns the exit code."""
    try:
        config = config_from_args(args)
        config.layout()
    except ValueError as exc:
        print(f"zkernels bench: error: {exc}", file=sys.stderr)
        return 2
    if config.plot_path and (err := _plot_missing()):
        print(f"zkernels bench: no plot: {err}", file=sys.stderr)
        return 3
    try:
        report = run_bench(config)
    except ValueError as exc:
        print(f"zkernels bench: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    status = 1 if report.failures else 0
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(report.to_json(), indent=1) + "\n")
        print(f"\nraw timings: {config.json_path}")
    if config.plot_path:
        err = write_plot(report, config.plot_path)
        if err:
            print(f"\nno plot: {err}", file=sys.stderr)
            status = status or 3
        else:
            print(f"plot: {config.plot_path}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zkernels.bench [options]`` (same as ``python -m zkernels bench``)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
