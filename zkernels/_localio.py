"""Reads of local files for the synchronous store path (LocalStore), shared by the pipeline
and ChunkReader."""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import uuid
from typing import Any

import numpy as np
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import LocalStore

from zkernels._pread import pread_ranges

__all__ = ["LocalFile", "read_file", "replace_file", "set_sync"]


# reads longer than this, or starting past _FAR_OFFSET (pread takes a signed 64-bit offset),
# are first bounded by the file's size
_CHECK_SIZE_ABOVE = 1 << 20
_FAR_OFFSET = 1 << 62


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
        fd, size = self.fd, None
        try:
            if byte_range is None:
                start, n = 0, os.fstat(fd).st_size
                size = n
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
        except IsADirectoryError:
            return None
        return self.read_range(start, start + n, size)

    def read_range(self, start: int, stop: int, size: int | None = None) -> np.ndarray | None:
        """Bytes ``[start, stop)`` as a uint8 array, shorter only at the end of the file
        (None: the path is a directory, as ``LocalStore`` reads it). ``size``: the file's, where
        the caller knows it."""
        fd, n = self.fd, max(0, stop - start)
        try:
            if size is None and (n > _CHECK_SIZE_ABOVE or start > _FAR_OFFSET):
                size = os.fstat(fd).st_size
            if size is not None:
                # a shard index may claim any range: never allocate (or pass pread an offset)
                # past the end of the file; the caller sees the short result
                start = min(start, size)
                n = max(0, min(stop, size) - start)
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
        return np.frombuffer(data, dtype=np.uint8)

    def read_ranges(self, ranges: np.ndarray) -> list[np.ndarray] | None:
        """The bytes of each row ``[start, stop)`` of ``ranges`` (uint64, shape (G, 2), the
        coalesced reads of a shard), as views of one buffer they were read into in one
        ``pread_ranges`` call (the GIL released once, not once per range). None where a range
        reaches past the end of the file: the caller reads range by range and reports it."""
        if ranges.shape[0] == 0:
            return []
        rows = ranges.tolist()
        lengths = [stop - start for start, stop in rows]
        if min(lengths) < 0:
            raise ValueError(f"inverted byte range in {rows}")
        top = max(stop for _, stop in rows)
        try:
            if top > _CHECK_SIZE_ABOVE and top > os.fstat(self.fd).st_size:
                return None  # checked before allocating: an index may claim any range
            ends = list(itertools.accumulate(lengths))
            buf = np.empty(ends[-1], dtype=np.uint8)
            if pread_ranges(self.fd, ranges, buf) >= 0:
                return None  # a range came back short: the file ends inside it
        except IsADirectoryError:  # a directory where the file was: read_range's answer
            return None
        return [buf[end - n : end] for n, end in zip(lengths, ends, strict=True)]

    def read_into(self, start: int, buf: np.ndarray) -> np.ndarray:
        """Bytes ``[start, start + buf.size)`` read into ``buf`` (uint8, reused by the caller:
        no fresh pages to fault in per read); the part read, shorter only at the end of the
        file."""
        fd, got, n = self.fd, 0, buf.size
        if start > _FAR_OFFSET and start >= os.fstat(fd).st_size:
            return buf[:0]  # an index may claim any offset; preadv takes a signed one
        view = memoryview(buf)
        while got < n:
            k = os.preadv(fd, [view[got:]], start + got)
            if k <= 0:
                break
            got += k
        return buf[:got]


def read_file(path: str, byte_range: Any) -> np.ndarray | None:
    """``LocalFile`` opened, read once and closed: one request's bytes (None: no file)."""
    if byte_range is None:  # a whole unsharded chunk: the same steps, without the object
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            size = os.fstat(fd).st_size
            return LocalFile(fd).read_range(0, size, size)
        finally:
            os.close(fd)
    f = LocalFile.open(path)
    if f is None:
        return None
    try:
        return f.read(byte_range)
    finally:
        f.close()


# -- writes ------------------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _find_renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.5
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _find_renameat2()

# temporary names: this process's id, a random token drawn once, a counter (unique on this
# host and, through the token, across hosts sharing a file system; a clash is still caught by
# O_EXCL). A uuid4 per file costs a getrandom call.
_TOKEN = uuid.uuid4().hex[:12]
_COUNTER = itertools.count()
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create_temp(path: str) -> tuple[str, int]:
    """A new file beside ``path``, its directories made where missing: (name, open fd).
    ``makedirs`` runs only when the open fails for want of them (two ``stat`` calls saved per
    file of a key whose directory exists), so it raises as ``LocalStore`` would where a file
    is in the way."""
    made_dirs = False
    for attempt in range(3):
        suffix = uuid.uuid4().hex if attempt else f"{os.getpid():x}{_TOKEN}{next(_COUNTER):x}"
        tmp = f"{path}.{suffix}.partial"
        try:
            return tmp, os.open(tmp, _NEW_FILE, 0o666)
        except (FileNotFoundError, NotADirectoryError):
            dirname = os.path.dirname(path)
            if made_dirs or not dirname:
                raise
            os.makedirs(dirname, exist_ok=True)
            made_dirs = True
        except FileExistsError:  # a name in use (a clash, or a leftover): draw another
            pass
    tmp = f"{path}.{uuid.uuid4().hex}.partial"  # a last try: its error is the caller's
    return tmp, os.open(tmp, _NEW_FILE, 0o666)


def _exchange(a: str, b: str) -> bool:
    """Swap the files at ``a`` and ``b`` in one step; False where that cannot be done here
    (``b`` missing, no ``renameat2``, or a file system without ``RENAME_EXCHANGE``)."""
    global _renameat2
    fn = _renameat2
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOSYS:  # a kernel without the system call: stop asking
        _renameat2 = None
    if err in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), b)


def replace_file(path: str, data: Any) -> None:
    """Write ``data`` as the file at ``path`` the way ``LocalStore.set_sync`` does (a new file
    written beside it, then put in its place in one step: a reader sees the old file or the
    new one, never a part), but an existing file is swapped out (``renameat2`` with
    ``RENAME_EXCHANGE``) and then removed, not renamed over.

    Why: ext4 (``auto_da_alloc``, on by default) starts writing a file to disk at once when
    it is renamed over another, and the next replacement of that key waits for that write;
    rewriting 16 shards of 8 MiB took 225 ms that way and 17 ms swapped (docs/performance.md).
    Swapped, the new file reaches the disk on the kernel's usual schedule, as a new key's
    file does with zarr. Where the swap is not available (another OS, a file system without
    it, a new key) this is a plain ``os.replace``.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    view = memoryview(data).cast("B")
    tmp, fd = _create_temp(path)
    try:
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        finally:
            os.close(fd)
        if not _exchange(tmp, path):
            os.replace(tmp, path)
            return
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # ``tmp`` is now the old file (the new one is in place)
    try:
        os.unlink(tmp)
    except IsADirectoryError:
        # ``path`` was a directory: put it back, and fail as ``os.replace`` would
        _exchange(tmp, path)
        os.unlink(tmp)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path) from None


def set_sync(store: Any, key: str, data: Any, proto: Any, swap: bool) -> None:
    """``store.set_sync(key, data)`` (``delete_sync`` where ``data`` is None) for a store with
    synchronous methods; an open, writable LocalStore's file is written with
    :func:`replace_file` when ``swap`` (the ``swap_writes`` option) is on."""
    if data is None:
        store.delete_sync(key)
    elif (
        swap
        and type(store) is LocalStore
        and getattr(store, "_is_open", False)  # else set_sync opens it (and checks it)
        and not store.read_only  # else set_sync raises zarr's own error
    ):
        replace_file(os.path.join(store.root, key), data)
    else:
        store.set_sync(key, proto.buffer.from_array_like(data))
