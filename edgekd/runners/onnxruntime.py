"""ONNX Runtime runner."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekd.errors import BadInput, first_line
from edgekd.runners.base import Runner
from edgekd.runners.latency import cpu_model


def session_options(threads: int, optimize: bool = True) -> ort.SessionOptions:
    """The options edgekd deploys with: ``threads`` intra-op threads (0 = ONNX Runtime's
    default), one inter-op thread, every graph optimization unless ``optimize`` is False."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


class OrtRunner(Runner):
    """Runs an ONNX model in ONNX Runtime with the first available of ``providers``.

    ``threads`` sets intra-op threads (0 = ONNX Runtime's default); inter-op is 1, as a
    single-stream edge deployment runs one query at a time.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 1,
        optimize: bool = True,
    ):
        self.path = Path(path)
        available = set(ort.get_available_providers())
        self.providers = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        self.threads = threads
        self.optimize = optimize
        self.session: ort.InferenceSession | None = None
        self.fixed_batch: int | None = None

    def activate(self) -> None:
        opts = session_options(self.threads, self.optimize)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        except Exception as e:  # noqa: BLE001 - ORT raises several types for an unreadable model
            raise BadInput(f"{self.path}: ONNX Runtime cannot load it: {first_line(e)}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        batch = first.shape[0] if first.shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def deactivate(self) -> None:
        self.session = None

    def infer(self, x: np.ndarray) -> np.ndarray:
        assert self.session is not None, "use the runner as a context manager"
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for every row of ``x``; a model with a static batch gets batches of that size
        (the last one padded)."""
        fixed = self.fixed_batch
        if fixed is None:
            return super().predict(x, batch_size)
        pad = (-len(x)) % fixed
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        return super().predict(x, fixed)[: len(x) - pad]

    @property
    def where(self) -> str:
        provider = self.session.get_providers()[0] if self.session else self.providers[0]
        threads = (
            f"{self.threads} thread(s)"
            if self.threads
            else f"default threads ({os.cpu_count()} cores)"
        )
        return f"measured: onnxruntime {ort.__version__} {provider}, {threads}, {cpu_model()}"
