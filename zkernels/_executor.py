"""The process-wide worker pool that runs decode, encode and sync store IO.

One pool for every pipeline (nested pools oversubscribe two cores quickly). It is created on first
use, resized when the ``threads`` option changes, and dropped in a forked child (a forked pool's
threads do not exist there). Worker threads are daemons in effect: ThreadPoolExecutor joins them
at interpreter exit only if work is pending.
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


def _after_fork_in_child() -> None:
    global _pool, _pool_threads, _lock
    _pool = None
    _pool_threads = 0
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
