"""Typed signatures of the compiled module zkernels._scatter."""

from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeAlias

import numpy as np

_Selection: TypeAlias = tuple[SupportsIndex | slice, ...] | SupportsIndex | slice

def copy_region(src: np.ndarray, dst: np.ndarray) -> None: ...
def scatter(
    chunk: np.ndarray,
    chunk_selection: _Selection,
    out: np.ndarray,
    out_selection: _Selection,
    drop_axes: Sequence[int] = (),
) -> None: ...
def gather(
    src: np.ndarray,
    src_selection: _Selection,
    chunk: np.ndarray,
    chunk_selection: _Selection,
    drop_axes: Sequence[int] = (),
) -> None: ...
def fill(out: np.ndarray, selection: _Selection, fill_value: Any) -> None: ...
def is_fill(buf: np.ndarray, fill_value: Any) -> bool: ...
