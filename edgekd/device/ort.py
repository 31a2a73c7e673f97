"""ONNX Runtime sessions with the options edgekd deploys with, on the host and on the device."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from .batching import PREDICT_BATCH, predict
from .errors import Missing, Unusable, first_line
from .fingerprint import cpu_model
from .latency import wall_clock

CPU = "CPUExecutionProvider"


def session_options(threads: int = 0, optimize: bool = True) -> ort.SessionOptions:
    """``threads`` intra-op threads (0 = ONNX Runtime's default), one inter-op thread (a
    single-stream deployment runs one query at a time), every graph optimization unless
    ``optimize`` is False."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def choose_providers(requested: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The ``requested`` execution providers this ONNX Runtime has, in their order; Missing when
    it has none of them (never a silent fall back to the CPU)."""
    have = set(ort.get_available_providers() if available is None else available)
    chosen = [p for p in requested if p in have]
    if not chosen:
        raise Missing(
            f"ONNX Runtime {ort.__version__} has none of the execution providers "
            f"{', '.join(requested) or '(none given)'}; it has {', '.join(sorted(have))}"
        )
    return chosen


def fixed_batch(shape: Sequence[Any]) -> int | None:
    """The batch size of an input of ``shape`` when it is fixed; None when it is dynamic."""
    batch = shape[0] if shape else None
    return batch if isinstance(batch, int) and batch > 0 else None


class OrtSession:
    """One ONNX model (a path, or its serialized bytes) in an ONNX Runtime session.

    ``name`` names the model in errors (the path by default).
    """

    def __init__(
        self,
        model: str | bytes,
        providers: Sequence[str] = (CPU,),
        threads: int = 0,
        optimize: bool = True,
        name: str | None = None,
    ) -> None:
        self.threads = threads
        opts = session_options(threads, optimize)
        chosen = choose_providers(providers)
        label = name or (model if isinstance(model, str) else "the model")
        try:
            self.session = ort.InferenceSession(model, opts, providers=chosen)
        except Exception as e:  # noqa: BLE001 - ORT raises several types for an unreadable model
            raise Unusable(f"{label}: ONNX Runtime cannot load it: {first_line(e)}") from None
        first = self.session.get_inputs()[0]
        self.input_name: str = first.name
        self.fixed_batch = fixed_batch(first.shape)
        self.provider: str = self.session.get_providers()[0]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """The first output for one batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def predict(self, x: np.ndarray, batch: int = PREDICT_BATCH) -> np.ndarray:
        """The first output for every row of ``x`` (see :func:`~.batching.predict`)."""
        return predict(self.infer, x, batch, self.fixed_batch)

    def timed(self, x: np.ndarray) -> Callable[[], float]:
        """One query of ``x`` timed on the wall clock, as a callable returning ms."""
        return wall_clock(lambda: self.infer(x))

    @property
    def where(self) -> str:
        """Where and how this session measures: runtime, provider, threads, CPU."""
        threads = (
            f"{self.threads} thread(s)"
            if self.threads
            else f"default threads ({os.cpu_count()} cores)"
        )
        return f"measured: onnxruntime {ort.__version__} {self.provider}, {threads}, {cpu_model()}"

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "provider": self.provider,
            "threads": self.threads,
            "where": self.where,
        }

    def close(self) -> None:
        self.session = None
