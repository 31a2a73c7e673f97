"""The Runner interface: a context manager that loads a model, runs batches and times queries."""

from __future__ import annotations

import abc

import numpy as np

from edgekd.runners.latency import LatencyStats, measure


class Runner(abc.ABC):
    """Load on ``__enter__``, free on ``__exit__``; ``infer`` maps an input batch to logits."""

    name: str = "runner"

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate(self) -> None: ...

    @abc.abstractmethod
    def deactivate(self) -> None: ...

    @abc.abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray: ...

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """Where and how this runner measures: runtime, provider, threads, machine."""

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for every row of ``x``, in batches."""
        return np.concatenate(
            [self.infer(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )

    def time(
        self,
        sample: np.ndarray,
        *,
        warmup: int,
        min_queries: int,
        min_duration_s: float,
        label: str,
    ) -> LatencyStats:
        """Single-stream latency of ``sample`` (one query, batch as given)."""
        return measure(
            lambda: self.infer(sample),
            warmup=warmup,
            min_queries=min_queries,
            min_duration_s=min_duration_s,
            where=self.where,
            label=label,
        )
