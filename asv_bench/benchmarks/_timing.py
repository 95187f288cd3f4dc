"""Best-of timing for the benchmark modules' standalone mode (``python bench_<name>.py``).

asv does its own timing; this is only for a quick look without it. Imported inside each module's
``_main`` (the script's folder is on ``sys.path`` then), so asv never needs it.
"""

from __future__ import annotations

import time


def best(func, *args, repeat=7, min_seconds=0.02):
    """Seconds per call of ``func(*args)``: the best of ``repeat`` runs of enough calls each."""
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            func(*args)
        if time.perf_counter() - t0 >= min_seconds:
            break
        reps *= 4
    fastest = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(reps):
            func(*args)
        fastest = min(fastest, (time.perf_counter() - t0) / reps)
    return fastest
