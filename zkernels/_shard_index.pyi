"""Shard index kernels (sharding_indexed): parse, encode, dense check."""

from collections.abc import Sequence
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

_ByteOrder: TypeAlias = Literal["little", "big", "<", ">"]

def shard_index_nbytes(n_chunks: int | Sequence[int], checksum: bool = True) -> int: ...
def parse_shard_index(
    raw: Buffer,
    chunks_per_shard: Sequence[int] | int,
    *,
    byteorder: _ByteOrder = "little",
    checksum: bool = True,
    shard_nbytes: int | None = None,
    index_location: Literal["start", "end"] = "end",
) -> npt.NDArray[np.uint64]: ...
def encode_shard_index(
    index: npt.NDArray[np.uint64],
    *,
    byteorder: _ByteOrder = "little",
    checksum: bool = True,
) -> bytes: ...
def check_dense(
    index: npt.NDArray[np.uint64], chunk_nbytes: int
) -> tuple[bool, npt.NDArray[np.intp]]: ...
