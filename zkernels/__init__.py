"""zkernels: Cython nogil kernels and a codec pipeline for fast zarr-python reads and writes.

Turn it on with :func:`zkernels.enable` (or ``zarr.config.set({"codec_pipeline.path":
"zkernels.KernelCodecPipeline"})``); reads and writes of every ``zarr.Array`` opened afterwards
then go through :class:`zkernels.KernelCodecPipeline`, which hands what it does not run to zarr's
own pipeline (:func:`zkernels.explain` says which, for an array).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The compiled kernel modules, by name; `python -m zkernels info` lists them.
KERNEL_MODULES = (
    "_crc32c", "_shard_index", "_dense", "_decode", "_encode", "_coalesce", "_pread", "_scatter"
)

# Public kernel functions and the compiled module that defines each. Imported lazily so that
# `import zkernels` stays cheap and a missing build is reported by name.
_KERNELS = {
    "crc32c": "_crc32c",
    "hardware_crc32c_available": "_crc32c",
    "parse_shard_index": "_shard_index",
    "encode_shard_index": "_shard_index",
    "shard_index_nbytes": "_shard_index",
    "check_dense": "_shard_index",
    "reconstruct_dense": "_dense",
    "decode_chunks": "_decode",
    "encode_chunks": "_encode",
    "concat_ranges": "_encode",
    "coalesce_ranges": "_coalesce",
    "CoalescedRanges": "_coalesce",
    "plan_chunk_reads": "_coalesce",
    "ChunkReadPlan": "_coalesce",
    "pread_ranges": "_pread",
    "copy_region": "_scatter",
    "scatter": "_scatter",
    "gather": "_scatter",
    "fill": "_scatter",
    "is_fill": "_scatter",
}


def _import_kernel_module(name: str):
    try:
        return importlib.import_module(f"zkernels.{name}")
    except ImportError as exc:  # pragma: no cover - only without a build
        raise ImportError(
            f"zkernels' compiled module {name!r} is not built. If you are running from the source "
            "tree, install it first with `python -m pip install -e .` (a C compiler is needed)."
        ) from exc


def __getattr__(name: str):
    module = _KERNELS.get(name)
    if module is None:
        raise AttributeError(f"module 'zkernels' has no attribute {name!r}")
    value = getattr(_import_kernel_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_KERNELS))


from zkernels import errors
from zkernels._api import disable, enable, enabled, explain
from zkernels.pipeline import KernelCodecPipeline  # registers it with zarr
from zkernels.reader import (
    ChunkReader,
    ReaderClosedError,
    read_chunk,
    write_chunk,
)

__all__ = [  # noqa: PLE0604 - the kernels' names are strings, loaded lazily (__getattr__)
    "KernelCodecPipeline",
    "ChunkReader",
    "ReaderClosedError",
    "read_chunk",
    "write_chunk",
    "enable",
    "disable",
    "enabled",
    "explain",
    "errors",
    *_KERNELS,
]
