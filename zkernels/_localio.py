"""Reads of local files for the synchronous store path (LocalStore), shared by the pipeline
and ChunkReader."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

__all__ = ["LocalFile", "read_file"]


class LocalFile:
    """One open file, read by byte requests as ``LocalStore.get_sync`` reads it: a shard's
    index and then its chunks cost one ``open`` and one ``close`` between them, and come from
    the same file even if it is replaced in between."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: str) -> LocalFile | None:
        """The file at ``path``; None where there is none (a missing key)."""
        try:
            return cls(os.open(path, os.O_RDONLY))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, byte_range: Any = None) -> np.ndarray | None:
        """What ``LocalStore.get_sync`` returns for ``byte_range``, as a uint8 array, with a
        ``pread`` (and an ``fstat`` where the range needs the size): the store's own path
        (pathlib, buffered IO) costs several times the read of a small chunk."""
        fd = self.fd
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
        except IsADirectoryError:
            return None
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
        return np.frombuffer(data, dtype=np.uint8)


def read_file(path: str, byte_range: Any) -> np.ndarray | None:
    """``LocalFile`` opened, read once and closed: one request's bytes (None: no file)."""
    f = LocalFile.open(path)
    if f is None:
        return None
    try:
        return f.read(byte_range)
    finally:
        f.close()
