"""Splitting a basic selection over a chunk grid, without zarr's per-chunk Python indexers.

A *basic* selection is a tuple of ints and slices with positive steps, normalised as zarr passes
them to a codec pipeline. :func:`project` splits it over a regular grid of inner chunks, one list
per dimension; the chunks it touches are the cartesian product of those lists. Each entry says
which inner chunk, the selection inside it, where the values land in the selection's own output
(``None`` for an int, whose axis is dropped), and whether it covers the whole chunk.
"""

from __future__ import annotations

from itertools import product
from typing import Any, NamedTuple

import numpy as np

_INT_TYPES = (int, np.integer)


class DimProjection(NamedTuple):
    chunk_index: int
    chunk_sel: int | slice
    out_sel: slice | None
    complete: bool


def is_basic(selection: Any) -> bool:
    """True for a tuple whose every element is an int or a slice with a positive (or no) step
    (not for a bare slice, zarr's output selection of coordinate reads)."""
    if not isinstance(selection, tuple):
        return False
    for s in selection:
        if isinstance(s, slice):
            if s.step is not None and s.step <= 0:
                return False
        elif not isinstance(s, _INT_TYPES) or isinstance(s, bool | np.bool_):
            return False
    return True


def is_slices(selection: Any) -> bool:
    """A tuple of slices. zarr's coordinate indexer gives a bare slice (into the flat list of
    points) as the output selection: not one."""
    return isinstance(selection, tuple) and all(isinstance(s, slice) for s in selection)


def _project_dim(sel: int | slice, dim_len: int, chunk_len: int) -> list[DimProjection]:
    if not isinstance(sel, slice):
        i = int(sel)
        if i < 0:
            i += dim_len
        if not 0 <= i < dim_len:
            raise IndexError(f"index {int(sel)} out of range for a dimension of length {dim_len}")
        return [DimProjection(i // chunk_len, i % chunk_len, None, chunk_len == 1)]
    start, stop, step = sel.indices(dim_len)
    n = len(range(start, stop, step))
    if n == 0:
        return []
    last = start + (n - 1) * step
    out = []
    for k in range(start // chunk_len, last // chunk_len + 1):
        lo = k * chunk_len
        hi = min(lo + chunk_len, dim_len)
        j_lo = -(-(max(start, lo) - start) // step)  # first selected index >= lo
        j_hi = -(-(min(last + 1, hi) - start) // step)  # first selected index >= hi
        if j_lo >= j_hi:
            continue
        first = start + j_lo * step - lo
        final = start + (j_hi - 1) * step - lo
        complete = step == 1 and first == 0 and final == hi - lo - 1
        out.append(DimProjection(k, slice(first, final + 1, step), slice(j_lo, j_hi), complete))
    return out


def project(
    selection: tuple[Any, ...], shape: tuple[int, ...], chunk_shape: tuple[int, ...]
) -> list[list[DimProjection]]:
    """Per-dimension projections of a basic ``selection`` over ``shape`` cut in ``chunk_shape``."""
    if len(selection) != len(shape):
        raise IndexError(f"selection {selection} does not match shape {shape}")
    return [
        _project_dim(s, n, c) for s, n, c in zip(selection, shape, chunk_shape, strict=True)
    ]


class ChunkProjection(NamedTuple):
    coords: tuple[int, ...]
    chunk_sel: tuple[int | slice, ...]
    out_sel: tuple[slice, ...]
    complete: bool


def iter_chunks(dims: list[list[DimProjection]]):
    """Yield a :class:`ChunkProjection` for every inner chunk the projections touch (C order)."""
    for combo in product(*dims):
        yield ChunkProjection(
            tuple(p.chunk_index for p in combo),
            tuple(p.chunk_sel for p in combo),
            tuple(p.out_sel for p in combo if p.out_sel is not None),
            all(p.complete for p in combo),
        )

