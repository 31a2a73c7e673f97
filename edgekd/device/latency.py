"""Single-stream latency (MLPerf convention): untimed warm-up, then one query at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

MIN_QUERIES = 64  # MLPerf single stream's floor


def measure(
    timed_query: Callable[[], float],
    warmup: int,
    min_queries: int,
    min_duration_s: float,
    tick: Callable[[], None] | None = None,
) -> list[float]:
    """Latencies in ms of single queries, after ``warmup`` untimed ones.

    ``timed_query`` runs one query and returns its latency in ms. Queries continue until at least
    ``min_queries`` ran and ``min_duration_s`` passed; ``tick`` is called after each one.
    """
    for _ in range(warmup):
        timed_query()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_queries or time.perf_counter() - start < min_duration_s:
        times.append(timed_query())
        if tick is not None:
            tick()
    return times


def wall_clock(query: Callable[[], object]) -> Callable[[], float]:
    """``query`` as a timed query measured on this machine's monotonic clock."""

    def timed() -> float:
        t0 = time.perf_counter_ns()
        query()
        return (time.perf_counter_ns() - t0) / 1e6

    return timed


def summarize(times_ms: list[float]) -> dict[str, Any]:
    """p50/p90/p99/mean in ms and the number of queries."""
    ms = np.asarray(times_ms)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()),
            "n": len(ms)}  # fmt: skip
