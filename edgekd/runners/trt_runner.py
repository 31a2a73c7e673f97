"""TensorRT runner: a TensorRT target's model as a native engine on this machine (a Jetson, a GPU
host), built by the one builder with the settings ``--remote`` builds with, and timed with CUDA
events as on the device."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.device import latency as device_latency
from edgekd.device import trt as device_trt
from edgekd.device.errors import Missing, Unusable
from edgekd.errors import BadInput
from edgekd.export.tensorrt import build_python, config_for_model, int8_coverage
from edgekd.runners.base import Runner
from edgekd.runners.latency import LatencyStats, stats
from edgekd.targets import Target


class TrtRunner(Runner):
    """Builds ``path`` into an engine for ``target`` on entering (its files kept in ``keep_dir``,
    else in a temporary folder) and runs it; ``engine`` then tells how it was built."""

    name = "tensorrt"

    def __init__(self, path: str | Path, target: Target, keep_dir: Path | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BadInput(f"{self.path}: no such model file")
        self.target = target
        self.keep_dir = keep_dir
        self.engine: dict[str, Any] | None = None
        self.model: device_trt.TrtModel | None = None
        self._tmp: Path | None = None

    def activate(self) -> None:
        cfg = config_for_model(self.path, self.target)
        out = self.keep_dir or Path(tempfile.mkdtemp(prefix="edgekd-trt-"))
        self._tmp = None if self.keep_dir else out
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / v for k, v in device_trt.engine_files(self.path.stem).items()}
        start = time.perf_counter()
        try:
            cfg, layers = build_python(self.path, cfg, out, paths)
            seconds = round(time.perf_counter() - start, 3)
            plan = paths["engine"].read_bytes()
            self.model = device_trt.TrtModel(plan, cfg.version_compatible, paths["engine"].name)
        except (Unusable, Missing) as e:
            self.deactivate()
            raise BadInput(f"{self.path.name} on TensorRT: {e}") from None
        except BaseException:
            self.deactivate()
            raise
        self.engine = {
            "tensorrt": cfg.tensorrt,
            "strongly_typed": cfg.strongly_typed,
            "build_seconds": seconds,
            "engine": paths["engine"].name,
            "log": paths["build_log"].name,
            "layers": paths["layers"].name,
            "config": asdict(cfg),
            "int8_coverage": int8_coverage(layers),
        }

    def deactivate(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def infer(self, x: np.ndarray) -> np.ndarray:
        assert self.model is not None, "use the runner as a context manager"
        return self.model.infer(x)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for every row of ``x`` in batches the engine takes (its built batch, padded)."""
        assert self.model is not None, "use the runner as a context manager"
        return self.model.predict(x, batch_size)

    def time(
        self,
        sample: np.ndarray,
        *,
        warmup: int,
        min_queries: int,
        min_duration_s: float,
        label: str,
    ) -> LatencyStats:
        """Single-stream latency of ``sample``, each query timed with CUDA events."""
        assert self.model is not None, "use the runner as a context manager"
        times = device_latency.measure(
            self.model.timed(sample), warmup, min_queries, min_duration_s
        )
        return stats(times, self.where)

    @property
    def where(self) -> str:
        return self.model.where if self.model else "measured: tensorrt engine (not built yet)"
