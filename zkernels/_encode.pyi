"""Chunk encode kernel: whole inner chunks cut from a box, fill-tested, compressed, back to back."""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

def encode_chunks(
    value: np.ndarray,
    chunks: npt.ArrayLike,
    *,
    steps: Sequence[Literal["zstd", "blosc", "crc32c"]],
    chunk_shape: Sequence[int],
    region_start: Sequence[int],
    chunks_per_shard: Sequence[int],
    swap_unit: Literal[0, 1, 2, 4, 8] = 0,
    stored_dtype: npt.DTypeLike | None = None,
    fill_value: Any = None,
    skip_fill: bool = False,
    zstd_level: int = 0,
    zstd_checksum: bool = False,
    blosc_cname: str = "lz4",
    blosc_clevel: int = 5,
    blosc_shuffle: Literal[-1, 0, 1, 2] = 1,
    blosc_typesize: int = 1,
    blosc_blocksize: int = 0,
    head: int = 0,
    tail: int = 0,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]: ...
def concat_ranges(
    sources: Sequence[Buffer],
    groups: npt.ArrayLike,
    offsets: npt.ArrayLike,
    nbytes: npt.ArrayLike,
    out: npt.NDArray[np.uint8],
    start: int = 0,
) -> int: ...
def can_encode(
    steps: Sequence[str],
    chunk_nbytes: int = 0,
    *,
    zstd_level: int = 0,
    zstd_checksum: bool = False,
    blosc_cname: str = "lz4",
    blosc_clevel: int = 5,
    blosc_shuffle: int = 1,
    blosc_typesize: int = 1,
    blosc_blocksize: int = 0,
) -> bool: ...
def can_test_fill(dtype: npt.DTypeLike, fill_value: Any) -> bool: ...
def zstd_bound(nbytes: int) -> int: ...
def blosc_bound(nbytes: int) -> int: ...
