"""Single-stream latency measurement (MLPerf convention) and the environment it ran in."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edgekd.progress import progress


@dataclass(frozen=True)
class LatencyStats:
    """Latency of single queries in milliseconds, and where and how it was measured."""

    p50: float
    p90: float
    p99: float
    mean: float
    n: int
    where: str

    def to_dict(self) -> dict:
        return asdict(self)


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
    for _ in range(warmup):
        query()
    times: list[float] = []
    start = time.perf_counter()
    with progress(total=min_queries, desc=label, unit="q") as bar:
        while len(times) < min_queries or time.perf_counter() - start < min_duration_s:
            t0 = time.perf_counter_ns()
            query()
            times.append((time.perf_counter_ns() - t0) / 1e6)
            bar.update(1)
    ms = np.asarray(times)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        mean=float(ms.mean()),
        n=len(ms),
        where=where,
    )


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str | int]:
    """A fingerprint of the machine and runtimes that produced a measurement."""
    import onnxruntime
    import torch

    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }
