"""The process-wide worker pools: one runs decode, encode and sync store reads; a small second
one runs sync store writes.

One compute pool for every pipeline (nested pools oversubscribe two cores quickly). It is created
on first use, resized when the ``threads`` option changes, and dropped in a forked child (a forked
pool's threads do not exist there). Worker threads are daemons in effect: ThreadPoolExecutor joins
them at interpreter exit only if work is pending.

Writes of whole objects to a local file system go to the IO pool: replacing an existing file makes
ext4 (``auto_da_alloc``) start writing the new file's data out at once, and the writing thread
waits on the disk, not the CPU, for as long as that takes (about as long as compressing the data,
measured here). On the compute pool that wait would stall the encoding of the next shards.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def get_pool(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_threads
    pool = _pool
    if pool is not None and _pool_threads == threads:
        return pool
    with _lock:
        if _pool is None or _pool_threads != threads:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zkernels")
            _pool_threads = threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


IO_THREADS = 4
_io_pool: ThreadPoolExecutor | None = None


def get_io_pool() -> ThreadPoolExecutor:
    """The pool for blocking store writes (threads that mostly wait on the disk)."""
    global _io_pool
    pool = _io_pool
    if pool is not None:
        return pool
    with _lock:
        if _io_pool is None:
            _io_pool = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="zkernels-io")
        return _io_pool


def _after_fork_in_child() -> None:
    global _pool, _pool_threads, _lock, _io_pool
    _pool = None
    _pool_threads = 0
    _io_pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def run_all(
    threads: int, fn: Callable[[T], Any], items: Iterable[T], *, inline: bool = False
) -> list[Any]:
    """Run ``fn`` over ``items`` on the pool (or inline), returning results in order.

    Exceptions propagate: the first one raised is re-raised after the others finished, so that no
    task is left writing into an output the caller is about to discard.
    """
    items = list(items)
    if inline or threads <= 1 or not items:
        return [fn(item) for item in items]
    loop = asyncio.get_running_loop()
    pool = get_pool(threads)
    futures = [loop.run_in_executor(pool, fn, item) for item in items]
    results = await asyncio.gather(*futures, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def split(seq: list[T], parts: int) -> list[list[T]]:
    """Split ``seq`` into at most ``parts`` contiguous, near-equal, non-empty batches."""
    n = len(seq)
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(seq[start:stop])
        start = stop
    return [b for b in out if len(b)]
