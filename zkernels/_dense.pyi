"""Dense-shard bulk reconstruction: uncompressed inner chunks straight into an output box."""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

def reconstruct_dense(
    shard: Buffer,
    index: npt.NDArray[np.uint64],
    out: np.ndarray,
    *,
    chunk_shape: Sequence[int],
    region_start: Sequence[int],
    fill_value: Buffer | None = None,
    swap_unit: Literal[0, 1, 2, 4, 8] = 0,
    streaming: bool | None = None,
) -> None: ...
