"""TensorRT: the one engine builder (host and device build the same engine from the same
settings) and an engine runner timed with CUDA events.

The settings are edgekd's ``EngineBuildConfig`` as a dict. A dynamic batch axis is built for the
validated batch only (min = opt = max): that is the engine deployed. Strong typing where TensorRT
has it (the explicit Q/DQ decide what runs INT8), else the FP16/INT8 builder flags.
"""

from __future__ import annotations

import ctypes
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import PREDICT_BATCH, predict
from .cuda import Cuda
from .errors import BuildFailed, Missing, Unusable
from .fingerprint import gpu_model


def version(text: str | None) -> tuple[int, ...]:
    """ "10.3.0.30" -> (10, 3, 0, 30); unknown -> () (treated as older than any)."""
    parts = []
    for piece in (text or "").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def engine_files(stem: str) -> dict[str, str]:
    """The files one build leaves, for a model at ``stem`` (its path or name without .onnx)."""
    return {
        "engine": f"{stem}.engine",
        "build_log": f"{stem}.build.log",
        "layers": f"{stem}.layers.json",
    }


def import_tensorrt() -> Any:
    """The tensorrt module; Missing when it is not installed."""
    try:
        import tensorrt
    except ImportError:
        raise Missing("the python module tensorrt is not installed") from None
    return tensorrt


@dataclass(frozen=True)
class Built:
    """An engine build: the plan and what came with it."""

    plan: bytes  # the serialized engine
    log: str  # what the builder logged
    layers: dict[str, Any]  # the engine inspector's information (detailed verbosity)
    config: dict[str, Any]  # the settings as built (weakly typed where strong typing is absent)
    tensorrt: str  # the TensorRT version that built it
    timing_cache: bytes | None  # the updated timing cache, when one was given
    seconds: float  # wall time of the build


def _settings(cfg: dict[str, Any], trt: Any) -> dict[str, Any]:
    """``cfg`` as this TensorRT can build it: weakly typed with the FP16 and INT8 flags (the
    explicit Q/DQ still decide what runs INT8) where it has no strong typing."""
    if cfg["strongly_typed"] and not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return {**cfg, "strongly_typed": False, "fp16": True, "int8": True}
    return dict(cfg)


def build_engine(onnx_path: str, cfg: dict[str, Any], timing_cache: bytes | None = None) -> Built:
    """Build an engine from ``onnx_path`` with ``cfg`` (an EngineBuildConfig as a dict).

    ``timing_cache``: a previous cache (b"" for a new one) to read and update; None for none.
    BuildFailed when TensorRT rejects the model, Unusable when a setting cannot be met here.
    """
    trt = import_tensorrt()
    cfg = _settings(cfg, trt)
    lines: list[str] = []

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.INFO):
                lines.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    def failed(message: str) -> BuildFailed:
        errors = [x for x in lines if x.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        return BuildFailed(message + (f": {errors[-1]}" if errors else ""), "\n".join(lines) + "\n")

    name = onnx_path.replace("\\", "/").rsplit("/", 1)[-1]
    start = time.perf_counter()
    logger = Logger()
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if cfg["strongly_typed"]:
        flags |= 1 << int(creation.STRONGLY_TYPED)
    elif version(trt.__version__) < (10,) and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # the default (and deprecated) from 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        lines.extend(f"[ERROR] {parser.get_error(i)}" for i in range(parser.num_errors))
        raise failed(f"TensorRT's ONNX parser rejected {name}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg["workspace_mb"] << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not cfg["strongly_typed"]:
        for flag in ("fp16", "int8"):
            if cfg[flag]:
                config.set_flag(getattr(trt.BuilderFlag, flag.upper()))
    if cfg.get("dla_core") is not None:
        if builder.num_DLA_cores <= cfg["dla_core"]:
            raise Unusable(
                f"this device has {builder.num_DLA_cores} DLA core(s); DLA core "
                f"{cfg['dla_core']} is not one of them"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg["dla_core"]
        if cfg.get("gpu_fallback"):
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if cfg.get("hardware_compatible"):
        if not hasattr(trt, "HardwareCompatibilityLevel"):
            raise Unusable(f"TensorRT {trt.__version__} cannot build hardware compatible engines")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if cfg.get("version_compatible"):
        if not hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
            raise Unusable(f"TensorRT {trt.__version__} cannot build version compatible engines")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if -1 in tuple(t.shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            rest = tuple(tensor.shape)[1:]
            if -1 in rest:
                raise Unusable(f"input {tensor.name!r} has a dynamic axis other than the batch")
            shape = (cfg.get("batch", 1), *rest)
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            # a cache from another device or TensorRT version: start a fresh one
            lines.append("[WARNING] edgekd: the timing cache does not match; replaced")
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise failed(f"TensorRT could not build an engine from {name}")
    plan = bytes(serialized)
    runtime = trt.Runtime(logger)
    if cfg.get("version_compatible"):
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise failed("TensorRT built an engine it cannot load")
    inspector = engine.create_engine_inspector()
    layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    cache_out = bytes(config.get_timing_cache().serialize()) if timing_cache is not None else None
    return Built(
        plan=plan,
        log="\n".join(lines) + "\n",
        layers=layers,
        config=cfg,
        tensorrt=trt.__version__,
        timing_cache=cache_out,
        seconds=round(time.perf_counter() - start, 3),
    )


class TrtModel:
    """A TensorRT engine with one input and one output; each query is timed with CUDA events
    around copy-in, execution and copy-out."""

    def __init__(self, plan: bytes, version_compatible: bool = False, name: str = "engine") -> None:
        trt = import_tensorrt()
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if version_compatible:
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise Unusable(f"{name}: TensorRT cannot load this engine (built for another GPU or "
                           "TensorRT version?)")  # fmt: skip
        if not hasattr(self.engine, "num_io_tensors"):
            raise Missing(f"TensorRT {trt.__version__} is too old: edgekd needs >= 8.5")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise Unusable(f"{name}: expected one input and one output, got {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.context = self.engine.create_execution_context()
        self.cuda = Cuda()
        self.stream = self.cuda.new("Stream")
        self.events = (self.cuda.new("Event"), self.cuda.new("Event"))
        self.buffers: dict[str, tuple[ctypes.c_void_p, int]] = {}
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        low, _, high = (
            (tuple(s)[0] for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
            if -1 in shape
            else (None, None, None)
        )
        self.max_batch: int | None = high
        self.fixed_batch = shape[0] if shape and shape[0] > 0 else (high if low == high else None)
        self.where = f"measured: tensorrt {trt.__version__} engine, CUDA events, {gpu_model() or platform.node()}"

    def _buffer(self, name: str, nbytes: int) -> ctypes.c_void_p:
        """A device buffer for ``name`` of at least ``nbytes``, bound to the context."""
        ptr, size = self.buffers.get(name, (None, 0))
        if ptr is None or size < nbytes:
            if ptr is not None:
                self.cuda.call("cudaFree", ptr)
            ptr = self.cuda.malloc(nbytes)
            self.buffers[name] = (ptr, nbytes)
            self.context.set_tensor_address(name, ptr.value)
        return ptr

    def _query(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """The output for ``x`` and the ms between the events around copy-in and copy-out."""
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        x = np.ascontiguousarray(x, dtype)
        if not self.context.set_input_shape(self.input_name, x.shape):
            raise Unusable(f"the engine does not take input shape {x.shape}")
        shape = tuple(self.context.get_tensor_shape(self.output_name))
        out_type = self.trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        out = np.empty(shape, np.dtype(out_type))
        src = self._buffer(self.input_name, x.nbytes)
        dst = self._buffer(self.output_name, out.nbytes)
        start, end = self.events
        cuda, stream = self.cuda, self.stream
        cuda.call("cudaEventRecord", start, stream)
        cuda.call("cudaMemcpyAsync", src, x.ctypes.data, x.nbytes, Cuda.H2D, stream)
        if not self.context.execute_async_v3(stream.value):
            raise RuntimeError("TensorRT failed to execute the engine")
        cuda.call("cudaMemcpyAsync", out.ctypes.data, dst, out.nbytes, Cuda.D2H, stream)
        cuda.call("cudaEventRecord", end, stream)
        cuda.call("cudaEventSynchronize", end)
        ms = ctypes.c_float()
        cuda.call("cudaEventElapsedTime", ctypes.byref(ms), start, end)
        return out.astype(np.float32), float(ms.value)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._query(x)[0]

    def predict(self, x: np.ndarray, batch: int = PREDICT_BATCH) -> np.ndarray:
        """The output for every row of ``x`` (see :func:`~.batching.predict`)."""
        return predict(self.infer, x, batch, self.fixed_batch, self.max_batch)

    def timed(self, x: np.ndarray) -> Callable[[], float]:
        """One query of ``x``, returning its ms between the CUDA events."""
        return lambda: self._query(x)[1]

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "tensorrt",
            "version": self.trt.__version__,
            "provider": "TensorRT engine",
            "threads": 0,
            "where": self.where,
        }

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.call("cudaFree", ptr)
        for event in self.events:
            self.cuda.call("cudaEventDestroy", event)
        self.cuda.call("cudaStreamDestroy", self.stream)
        self.buffers = {}
