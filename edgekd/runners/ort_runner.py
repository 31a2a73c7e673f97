"""ONNX Runtime runner: an :class:`~edgekd.device.ort.OrtSession` (what the device runs too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.device.errors import Missing, Unusable
from edgekd.device.ort import CPU, OrtSession, choose_providers
from edgekd.errors import BadInput
from edgekd.runners.base import Runner


class OrtRunner(Runner):
    """Runs an ONNX model in ONNX Runtime with the available ones of ``providers``, in order.

    ``threads`` sets intra-op threads (0 = ONNX Runtime's default); inter-op is 1, as a
    single-stream edge deployment runs one query at a time. None of ``providers`` available here:
    BadInput, not a silent fall back to the CPU.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = (CPU,),
        threads: int = 1,
        optimize: bool = True,
    ):
        self.path = Path(path)
        try:
            self.providers = choose_providers(providers)
        except Missing as e:
            raise BadInput(f"{self.path}: {e}") from None
        self.threads = threads
        self.optimize = optimize
        self.session: OrtSession | None = None

    def activate(self) -> None:
        try:
            self.session = OrtSession(str(self.path), self.providers, self.threads, self.optimize)
        except Unusable as e:
            raise BadInput(str(e)) from None

    def deactivate(self) -> None:
        self.session = None

    @property
    def fixed_batch(self) -> int | None:
        return self.session.fixed_batch if self.session else None

    def infer(self, x: np.ndarray) -> np.ndarray:
        assert self.session is not None, "use the runner as a context manager"
        return self.session.infer(x)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for every row of ``x``; a model with a static batch gets batches of that size
        (the last one padded)."""
        assert self.session is not None, "use the runner as a context manager"
        return self.session.predict(x, batch_size)

    @property
    def where(self) -> str:
        if self.session is not None:
            return self.session.where
        return f"measured: onnxruntime, {self.providers[0]} (not loaded yet)"
