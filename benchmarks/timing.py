"""Timing helper shared by the benchmark scripts (run them as `python benchmarks/<script>.py`)."""
from __future__ import annotations

import statistics
import time


def timeit(fn, repeat: int, number: int, sync=lambda: None) -> float:
    """Median seconds per call over `repeat` runs of `number` calls (after one warm-up call)."""
    fn()
    sync()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        runs.append((time.perf_counter() - t) / number)
    return statistics.median(runs)
