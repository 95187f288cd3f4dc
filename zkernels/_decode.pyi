"""Chunk decode kernel: inner chunks (crc32c, zstd, blosc) decoded straight into an output box."""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

def decode_chunks(
    sources: Sequence[Buffer],
    locs: npt.NDArray[np.uint64],
    out: np.ndarray,
    *,
    steps: Sequence[Literal["crc32c", "zstd", "blosc"]],
    chunk_shape: Sequence[int],
    region_start: Sequence[int],
    groups: npt.NDArray[np.int32] | None = None,
    first: int = 0,
    last: int | None = None,
    fill_value: Buffer | None = None,
    swap_unit: Literal[0, 1, 2, 4, 8] = 0,
    validate: bool = True,
    chunks: npt.ArrayLike | None = None,
    subset: npt.ArrayLike | None = None,
    streaming: bool = False,
    name_chunks: bool = True,
) -> None: ...
def codec_libraries() -> dict[str, str]: ...
def can_decode(steps: Sequence[str]) -> bool: ...
def blosc_lz4_frame(frame: Buffer, nbytes: int) -> bytes | None: ...
