"""The process-wide worker pools: one runs decode, encode and sync store reads; a small second
one runs sync store writes.

One compute pool for every pipeline (nested pools oversubscribe two cores quickly). It is created
on first use, resized when the ``threads`` option changes, and dropped in a forked child (a forked
pool's threads do not exist there). Worker threads are daemons in effect: ThreadPoolExecutor joins
them at interpreter exit only if work is pending.

With ``swap_writes`` off, writes of whole objects to a local file system go to the IO pool:
replacing an existing file by renaming over it makes ext4 (``auto_da_alloc``) write it out at
once and the next replacement waits for that; on the compute pool that wait would stall the
encoding of the next shards. With swapped writes (the default) nothing waits on the disk and the
task that encoded a shard writes its file (a hop to the IO pool cost more than it hid).
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
            # The old pool is not shut down: a read or write running on another event loop
            # (or thread) may still submit to the pool it started with. Dropped here, it ends
            # when its last user lets go (ThreadPoolExecutor's threads exit once their executor
            # is garbage).
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zkernels")
            _pool_threads = threads
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


class Batch:
    """Calls handed to the compute pool one by one as the caller prepares them, then awaited
    together: the event loop is woken once, when the last call returns, not once per call (on
    two cores each wake-up takes CPU from the workers), and the first call starts while the
    caller is still preparing the next.

    ``results()`` waits for every call, then returns their results in order or re-raises the
    first exception, so that no call is left writing into an output the caller discards.
    """

    __slots__ = ("_done", "_lock", "_loop", "_outcomes", "_pending", "_pool")

    def __init__(self, threads: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = get_pool(threads)
        self._lock = threading.Lock()
        self._pending = 1  # the caller's own hold, released by results()
        self._outcomes: list[Any] = []
        self._done = self._loop.create_future()

    def submit(self, fn: Callable[[T], Any], item: T) -> None:
        slot = len(self._outcomes)
        self._outcomes.append(None)
        with self._lock:
            self._pending += 1
        try:
            self._pool.submit(self._run, slot, fn, item)
        except BaseException:
            self._release()
            raise

    def _run(self, slot: int, fn: Callable[[Any], Any], item: Any) -> None:
        try:
            self._outcomes[slot] = (True, fn(item))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            self._outcomes[slot] = (False, exc)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1
            last = self._pending == 0
        if last:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    async def results(self) -> list[Any]:
        self._release()
        await self._done
        values = []
        for ok, value in self._outcomes:
            if not ok:
                raise value
            values.append(value)
        return values


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
    batch = Batch(threads)
    for item in items:
        batch.submit(fn, item)
    return await batch.results()


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
