"""What differs between the zarr versions zkernels supports (3.1.x and 3.2.x), decided once.

- ``READ_RESULTS``: zarr >= 3.2's ``CodecPipeline.read`` returns one ``GetResult`` per batch item
  (``{"status": "present"}`` or ``{"status": "missing"}``; the array raises ``ChunkNotFoundError``
  for missing ones when ``array.read_missing_chunks`` is off). zarr 3.1's returns None.
- :func:`regular_grid`: the chunk grid ``get_indexer`` takes for one shard's inner chunks
  (``RegularChunkGrid`` in 3.1; 3.2 replaced it with ``ChunkGrid.from_sizes``).
- :func:`chunk_spec`: an array's ``ArraySpec`` for a chunk of a given shape (3.2 dropped
  ``ArrayV3Metadata.get_chunk_spec``).
"""

from __future__ import annotations

from typing import Any

import zarr.abc.codec
from zarr.core.array_spec import ArraySpec

__all__ = [
    "READ_RESULTS",
    "ZARR_VERSION",
    "chunk_spec",
    "read_results",
    "regular_grid",
]


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):  # pragma: no cover - unusual version strings
        return (0, 0)


ZARR_VERSION: tuple[int, int] = _version(zarr.__version__)

#: whether ``CodecPipeline.read`` must return one ``GetResult`` per batch item (zarr >= 3.2)
READ_RESULTS: bool = hasattr(zarr.abc.codec, "GetResult")


def read_results(missing: Any, n: int) -> tuple[dict[str, str], ...] | None:
    """What ``read`` returns for ``n`` batch items, ``missing[i]`` true for the absent ones:
    a tuple of zarr's ``GetResult`` dicts (zarr >= 3.2, new dicts each call as zarr makes them),
    or None (zarr 3.1)."""
    if not READ_RESULTS:
        return None
    if not missing:  # falsy: nothing was missing
        return tuple({"status": "present"} for _ in range(n))
    return tuple({"status": "missing" if m else "present"} for m in missing)


try:  # zarr 3.1
    from zarr.core.chunk_grids import RegularChunkGrid as _RegularChunkGrid

    def regular_grid(shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> Any:
        """The regular grid of ``chunk_shape`` chunks over an array of ``shape``."""
        return _RegularChunkGrid(chunk_shape=chunk_shape)

except ImportError:  # zarr >= 3.2
    from zarr.core.chunk_grids import ChunkGrid as _ChunkGrid

    def regular_grid(shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> Any:
        """The regular grid of ``chunk_shape`` chunks over an array of ``shape``."""
        return _ChunkGrid.from_sizes(shape, chunk_shape)


def chunk_spec(metadata: Any, shape: tuple[int, ...], config: Any, prototype: Any) -> ArraySpec:
    """The spec zarr gives a chunk (or shard) of ``shape`` of the array ``metadata`` describes."""
    return ArraySpec(
        shape=shape,
        dtype=metadata.dtype,
        fill_value=metadata.fill_value,
        config=config,
        prototype=prototype,
    )
