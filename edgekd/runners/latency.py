"""Single-stream latency measurement (MLPerf convention) and the environment it ran in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekd.device import latency as device_latency
from edgekd.device.fingerprint import cpu_model, fingerprint
from edgekd.progress import progress

__all__ = ["PERCENTILES", "LatencyStats", "cpu_model", "environment", "measure", "stats"]

# Percentiles kept of every measurement, so that reports can draw its distribution (CDF).
PERCENTILES = (*range(100), 99.5, 99.9, 100)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of single queries in milliseconds, and where and how it was measured."""

    p50: float
    p90: float
    p99: float
    mean: float
    n: int
    where: str
    on_target: bool | None = None  # measured on the target device itself; None: not decided yet
    # latency at each of PERCENTILES (ms), or () when not recorded; not part of to_dict()
    quantiles: tuple[float, ...] = field(default=(), compare=False, repr=False)
    times: tuple[float, ...] = field(default=(), compare=False, repr=False)  # each query's, ms

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["quantiles"], d["times"]
        return d


def measure(
    query: Callable[[], object],
    *,
    warmup: int,
    min_queries: int,
    min_duration_s: float,
    where: str,
    label: str = "latency",
) -> LatencyStats:
    """Time ``query`` one call at a time after ``warmup`` untimed calls.

    Runs at least ``min_queries`` timed calls and for at least ``min_duration_s`` seconds.
    """
    with progress(total=min_queries, desc=label, unit="q") as bar:
        times = device_latency.measure(
            device_latency.wall_clock(query),
            warmup,
            min_queries,
            min_duration_s,
            tick=lambda: bar.update(1),
        )
    return stats(times, where)


def stats(times_ms: Sequence[float], where: str) -> LatencyStats:
    """p50/p90/p99/mean of single-query latencies (ms), with the quantiles at PERCENTILES."""
    quantiles = tuple(float(q) for q in np.percentile(np.asarray(times_ms), PERCENTILES))
    summary = device_latency.summarize(list(times_ms))
    return LatencyStats(**summary, where=where, quantiles=quantiles, times=tuple(times_ms))


def environment() -> dict[str, Any]:
    """A fingerprint of this machine and its runtimes (the device's, plus torch)."""
    import torch

    return {**fingerprint(), "torch": torch.__version__, "where": "local"}
