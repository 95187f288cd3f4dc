"""Type stubs for the compiled module ``zkernels._pread`` (many byte ranges of one file, read
with the GIL released once)."""

import numpy as np
import numpy.typing as npt

__all__ = ["pread_ranges"]

def pread_ranges(fd: int, ranges: npt.NDArray[np.uint64], out: npt.NDArray[np.uint8]) -> int:
    """Read the ``[start, stop)`` rows of ``ranges`` from ``fd`` back to back into ``out``;
    -1 when all came back whole, else the index of the first that came back short."""
