"""Typed signatures of the compiled module zkernels._coalesce."""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

class ChunkReadPlan(NamedTuple):
    ranges: npt.NDArray[np.uint64]
    locs: npt.NDArray[np.uint64]
    groups: npt.NDArray[np.int32]

class CoalescedRanges(NamedTuple):
    groups: npt.NDArray[np.uint64]
    request_group: npt.NDArray[np.intp]
    request_offset: npt.NDArray[np.uint64]

def coalesce_ranges(
    offsets: Sequence[int] | npt.NDArray[np.integer],
    lengths: Sequence[int] | npt.NDArray[np.integer],
    *,
    max_gap_bytes: int,
    max_coalesced_bytes: int,
) -> CoalescedRanges: ...

def plan_chunk_reads(
    index: npt.NDArray[np.uint64],
    *,
    box: tuple[Sequence[int], Sequence[int]] | None = None,
    chunks: Sequence[int] | npt.NDArray[np.integer] | None = None,
    max_gap_bytes: int,
    max_coalesced_bytes: int,
) -> ChunkReadPlan: ...
