"""Reads of local files for the synchronous store path (LocalStore), shared by the pipeline
and ChunkReader."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

__all__ = ["read_file"]


def read_file(path: str, byte_range: Any) -> np.ndarray | None:
    """What ``LocalStore.get_sync`` returns for the file at ``path``, as a uint8 array, in a few
    system calls (``open``, ``fstat``, ``pread``, ``close``) instead of pathlib and buffered IO:
    the store's own path costs several times the read of a small chunk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    try:
        if byte_range is None:
            start, n = 0, os.fstat(fd).st_size
        elif type(byte_range) is RangeByteRequest:
            start, n = byte_range.start, max(0, byte_range.end - byte_range.start)
        elif type(byte_range) is SuffixByteRequest:
            size = os.fstat(fd).st_size
            n = min(byte_range.suffix, size)
            start = size - n
        elif type(byte_range) is OffsetByteRequest:
            size = os.fstat(fd).st_size
            start, n = byte_range.offset, max(0, size - byte_range.offset)
        else:
            raise TypeError(f"unexpected byte_range {byte_range!r}")
        data = os.pread(fd, n, start)
        if 0 < len(data) < n:  # a short read (rare): go on until the end of the file
            parts = [data]
            got = len(data)
            while got < n:
                more = os.pread(fd, n - got, start + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
    except IsADirectoryError:
        return None
    finally:
        os.close(fd)
    return np.frombuffer(data, dtype=np.uint8)
