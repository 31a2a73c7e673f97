"""edgekd's device-side runner: run one model on this machine, time it, fingerprint the machine.

``edgekd validate/bench --remote`` copies this one file to the device and runs it with the device's
Python (>= 3.8, as on JetPack 5). It imports nothing from edgekd and needs only numpy plus
onnxruntime (``--runtime onnxruntime``) or tensorrt >= 8.5 with the CUDA runtime library
(``--runtime tensorrt``: an ``.onnx`` model is built into an engine here, on the device, as
engines are tied to the GPU and the TensorRT version)::

    python3 device_runner.py fingerprint
    python3 device_runner.py run MODEL --input X.npy --result R.json [--logits L.npy]
        [--latency --warmup N --min-queries N --min-duration S --batch N]
        [--runtime onnxruntime|tensorrt] [--providers P,P] [--threads N] [--build-config B.json]

Latency follows the MLPerf single-stream convention: untimed warm-up, then one query at a time
until both the minimum number of queries and the minimum duration are reached. Exit status:
0 ok, 1 failure, 2 the model or input cannot be used, 3 a required module is missing.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MODULES = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}  # runtime -> module it needs
PREDICT_BATCH = 256  # rows per batch when predicting; the largest batch an engine is built for
PROBE_TIMEOUT_S = 5  # for the small tools asked for the fingerprint (nvidia-smi, nvpmodel)


class Unusable(Exception):
    """The model or the input cannot be used (exit 2)."""


class Missing(Exception):
    """A module this run needs is not installed (exit 3)."""


# --- latency -----------------------------------------------------------------------------------


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
    """``query`` as a timed query measured on the host's monotonic clock."""

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


# --- environment fingerprint ---------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\x00", b"").decode(errors="replace").strip() or None
    except OSError:
        return None


def _tool(*args: str) -> str | None:
    """The output of a small tool, or None when it is absent or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith(("model name", "Model", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# x86 extensions with int8 dot products into int32 lanes, the best first.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def x86_int8_dot(cpuinfo: str | None = None) -> str | None:
    """On x86-64, the CPU's int8 dot-product extension (``"avx512_vnni"``...), or ``"none"``:
    ONNX Runtime's u8s8 kernels then use vpmaddubsw, whose int16 pair sums saturate. None on
    other machines, or where the CPU's flags cannot be read."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return None
        cpuinfo = _read("/proc/cpuinfo")
    line = next((ln for ln in (cpuinfo or "").splitlines() if ln.startswith("flags")), None)
    if line is None:
        return None
    flags = set(line.split(":", 1)[1].split())
    return next((f for f in INT8_DOT_FLAGS if f in flags), "none")


def clocks() -> dict[str, Any]:
    """CPU and devfreq (GPU, DLA on Jetson) clocks in Hz where the OS shows them."""
    out: dict[str, Any] = {}
    cpu = "/sys/devices/system/cpu/cpu0/cpufreq/"
    for key, name in (("cpu0_hz", "scaling_cur_freq"), ("cpu0_max_hz", "scaling_max_freq")):
        value = _read(cpu + name)
        if value and value.isdigit():
            out[key] = int(value) * 1000  # cpufreq reports kHz
    governor = _read(cpu + "scaling_governor")
    if governor:
        out["cpu_governor"] = governor
    for device in sorted(glob.glob("/sys/class/devfreq/*")):
        value = _read(os.path.join(device, "cur_freq"))
        if value and value.isdigit():
            out[os.path.basename(device) + "_hz"] = int(value)
    return out


def jetson() -> dict[str, Any]:
    """L4T release, board, JetPack version and nvpmodel power mode, where readable."""
    info: dict[str, Any] = {}
    release = _read("/etc/nv_tegra_release")
    if release:
        info["l4t"] = release.splitlines()[0].lstrip("# ")
    model = _read("/proc/device-tree/model")
    if model and ("jetson" in model.lower() or release):
        info["board"] = model
    if not info:
        return info
    jetpack = _tool("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack")
    if jetpack:
        info["jetpack"] = jetpack
    mode = _tool("nvpmodel", "-q")
    if mode:
        info["power_mode"] = " ".join(mode.split())
    return info


def gpu_model() -> str | None:
    """The GPU's name from nvidia-smi; a Jetson's integrated GPU is named by its board."""
    names = _tool("nvidia-smi", "--query-gpu=name", "--format=csv,noheader")
    return ", ".join(n.strip() for n in names.splitlines()) if names else None


def module_version(name: str) -> str | None:
    """The version of an installed module (imported to ask it), or None."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return str(importlib.import_module(name).__version__)
    except Exception:  # noqa: BLE001 - a module that fails to import counts as absent
        return None


def fingerprint() -> dict[str, Any]:
    """The machine and runtimes a measurement comes from."""
    env: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for module in MODULES.values():
        version = module_version(module)
        if version:
            env[module] = version
    optional = {
        "int8_dot": x86_int8_dot(),
        "gpu": gpu_model(),
        "jetson": jetson(),
        "clocks": clocks(),
    }
    env.update({k: v for k, v in optional.items() if v})
    return env


# --- ONNX Runtime ------------------------------------------------------------------------------


class OrtModel:
    """An ONNX model in an ONNX Runtime session (first available of ``providers``)."""

    def __init__(self, path: str, providers: list[str], threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(path, opts, providers=chosen)
        except Exception as e:  # noqa: BLE001 - ORT raises several types for an unreadable model
            raise Unusable(f"{path}: ONNX Runtime cannot load it: {_first_line(e)}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        batch = first.shape[0] if first.shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.max_batch: int | None = None
        self.provider = self.session.get_providers()[0]
        cores = f"default threads ({os.cpu_count()} cores)"
        self.describe = {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "provider": self.provider,
            "threads": threads,
            "where": f"measured: onnxruntime {ort.__version__} {self.provider}, "
            f"{f'{threads} thread(s)' if threads else cores}, {cpu_model()}",
        }

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def timed(self, x: np.ndarray) -> Callable[[], float]:
        return wall_clock(lambda: self.infer(x))

    def close(self) -> None:
        self.session = None


# --- TensorRT ----------------------------------------------------------------------------------


def _cudart_candidates() -> list[str]:
    """Where libcudart may be: the loader's path (plain or versioned, as pip's CUDA wheels ship
    it), the pip wheel's own folder, and the CUDA toolkits under /usr/local."""
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ImportError:  # no "nvidia" namespace package
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        names += sorted(glob.glob(os.path.join(folder, "lib", "libcudart.so*")))
    return names + sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"))


class Cuda:
    """The few CUDA runtime calls a TensorRT run needs, through ctypes (no pycuda/cuda-python)."""

    H2D, D2H = 1, 2  # cudaMemcpyKind

    def __init__(self) -> None:
        for name in _cudart_candidates():
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise Missing("the CUDA runtime library (libcudart.so) is not found")
        p, size = ctypes.c_void_p, ctypes.c_size_t
        signatures: dict[str, list[Any]] = {
            "cudaMalloc": [ctypes.POINTER(p), size],
            "cudaFree": [p],
            "cudaMemcpyAsync": [p, p, size, ctypes.c_int, p],
            "cudaStreamCreate": [ctypes.POINTER(p)],
            "cudaStreamSynchronize": [p],
            "cudaStreamDestroy": [p],
            "cudaEventCreate": [ctypes.POINTER(p)],
            "cudaEventRecord": [p, p],
            "cudaEventSynchronize": [p],
            "cudaEventElapsedTime": [ctypes.POINTER(ctypes.c_float), p, p],
            "cudaEventDestroy": [p],
        }
        for name, argtypes in signatures.items():
            getattr(self.lib, name).argtypes = argtypes
            getattr(self.lib, name).restype = ctypes.c_int

    def call(self, name: str, *args: Any) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} failed with CUDA error {status}")

    def new(self, kind: str) -> ctypes.c_void_p:
        """A new stream or event handle (``kind`` "Stream" or "Event")."""
        handle = ctypes.c_void_p()
        self.call(f"cuda{kind}Create", ctypes.byref(handle))
        return handle

    def malloc(self, nbytes: int) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        self.call("cudaMalloc", ctypes.byref(ptr), max(nbytes, 1))
        return ptr


def build_engine(onnx_path: str, engine_path: str, cfg: dict[str, Any], trt: Any) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path`` with ``cfg`` (edgekd's EngineBuildConfig as a
    dict) with the TensorRT Python API; writes ``<engine>.log`` and ``<engine>.layers.json``."""
    lines: list[str] = []

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.INFO):
                lines.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    def failed(message: str) -> Unusable:
        Path(engine_path + ".log").write_text("\n".join(lines) + "\n")
        errors = [x for x in lines if x.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        return Unusable(message + (f": {errors[-1]}" if errors else ""))

    start = time.perf_counter()
    logger = Logger()
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    strongly_typed = cfg["strongly_typed"] and hasattr(creation, "STRONGLY_TYPED")
    flags = 1 << int(creation.STRONGLY_TYPED) if strongly_typed else 0
    if not strongly_typed and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # required before 10, the default from 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        lines.extend(f"[ERROR] {parser.get_error(i)}" for i in range(parser.num_errors))
        raise failed(f"TensorRT's ONNX parser rejected {os.path.basename(onnx_path)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg["workspace_mb"] << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not strongly_typed:  # weakly typed: the flags allow INT8 (explicit Q/DQ) and FP16
        for flag in ("fp16", "int8"):
            if cfg[flag] or cfg["strongly_typed"]:
                config.set_flag(getattr(trt.BuilderFlag, flag.upper()))
    if cfg.get("dla_core") is not None:
        if builder.num_DLA_cores <= cfg["dla_core"]:
            raise Unusable(f"this device has {builder.num_DLA_cores} DLA core(s), not core "
                           f"{cfg['dla_core']}")  # fmt: skip
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg["dla_core"]
        if cfg.get("gpu_fallback"):
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if cfg.get("hardware_compatible"):
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if cfg.get("version_compatible"):
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    batch = cfg.get("batch", 1)
    dynamic = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in dynamic if -1 in tuple(t.shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            rest = tuple(tensor.shape)[1:]
            if -1 in rest:
                raise Unusable(f"input {tensor.name!r} has a dynamic axis other than the batch")
            top = max(batch, cfg.get("max_batch", PREDICT_BATCH))
            profile.set_shape(tensor.name, (1, *rest), (batch, *rest), (top, *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise failed(f"TensorRT could not build an engine from {os.path.basename(onnx_path)}")
    Path(engine_path).write_bytes(bytes(serialized))
    Path(engine_path + ".log").write_text("\n".join(lines) + "\n")
    return {
        "tensorrt": trt.__version__,
        "strongly_typed": strongly_typed,
        "build_seconds": round(time.perf_counter() - start, 3),
        "engine": os.path.basename(engine_path),
        "log": os.path.basename(engine_path) + ".log",
        "layers": os.path.basename(engine_path) + ".layers.json",
    }


class TrtModel:
    """A TensorRT engine (built here from an ``.onnx`` file, or a prebuilt ``.engine``); one
    input, one output; queries timed with CUDA events around copy-in, execution and copy-out."""

    def __init__(self, path: str, build_config: dict[str, Any] | None) -> None:
        import tensorrt as trt

        self.trt = trt
        self.build: dict[str, Any] | None = None
        if path.endswith(".onnx"):
            engine_path = path[: -len(".onnx")] + ".engine"
            if not os.path.isfile(engine_path):  # built once per session on the device
                if build_config is None:
                    raise Unusable("an .onnx model for TensorRT needs --build-config")
                self.build = build_engine(path, engine_path, build_config, trt)
            path = engine_path
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        if build_config and build_config.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True
        with open(path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise Unusable(f"{path}: TensorRT cannot load this engine (built for another GPU or "
                           "TensorRT version?)")  # fmt: skip
        if not hasattr(self.engine, "num_io_tensors"):
            raise Missing(f"TensorRT {trt.__version__} is too old: this runner needs >= 8.5")
        if self.build is not None:
            inspector = self.engine.create_engine_inspector()
            info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            Path(path + ".layers.json").write_text(info)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise Unusable(f"{path}: expected one input and one output, got {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.context = self.engine.create_execution_context()
        self.cuda = Cuda()
        self.stream = self.cuda.new("Stream")
        self.events = (self.cuda.new("Event"), self.cuda.new("Event"))
        self.buffers: dict[str, tuple[ctypes.c_void_p, int]] = {}
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.fixed_batch = shape[0] if shape and shape[0] > 0 else None
        profile = self.engine.get_tensor_profile_shape(self.input_name, 0) if -1 in shape else ()
        self.max_batch = tuple(profile[2])[0] if profile else None
        gpu = gpu_model() or platform.node()
        self.describe = {
            "runtime": "tensorrt",
            "version": trt.__version__,
            "provider": "TensorRT engine",
            "threads": 0,
            "where": f"measured: tensorrt {trt.__version__} engine, CUDA events, {gpu}",
            "engine": self.build,
        }

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
        """Logits for ``x`` and the ms between the events around copy-in and copy-out."""
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

    def timed(self, x: np.ndarray) -> Callable[[], float]:
        return lambda: self._query(x)[1]

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.call("cudaFree", ptr)
        for event in self.events:
            self.cuda.call("cudaEventDestroy", event)
        self.cuda.call("cudaStreamDestroy", self.stream)
        self.buffers = {}


# --- the commands ------------------------------------------------------------------------------


def predict(model: OrtModel | TrtModel, x: np.ndarray, batch: int) -> np.ndarray:
    """Logits for every row of ``x`` in batches; a static batch gets padded batches of its size."""
    batch = model.fixed_batch or min(batch, model.max_batch or batch)
    pad = (-len(x)) % batch
    padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    logits = [model.infer(padded[i : i + batch]) for i in range(0, len(padded), batch)]
    return np.concatenate(logits)[: len(x)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model, then predict and/or time as asked; the result as a dict."""
    module = MODULES[args.runtime]
    if importlib.util.find_spec(module) is None:
        raise Missing(f"python module {module} is not installed ({sys.executable})")
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise Unusable(f"{args.input}: not a readable .npy array ({e})") from None
    build = json.loads(Path(args.build_config).read_text()) if args.build_config else None
    if args.runtime == "tensorrt":
        model: OrtModel | TrtModel = TrtModel(args.model, build)
    else:
        model = OrtModel(args.model, args.providers.split(","), args.threads)
    try:
        result: dict[str, Any] = dict(model.describe)
        if args.logits:
            np.save(args.logits, predict(model, x, args.predict_batch))
            result["logits"] = os.path.basename(args.logits)
        if args.latency:
            times = measure(
                model.timed(x[: args.batch]), args.warmup, args.min_queries, args.min_duration
            )
            result["latency"] = summarize(times)
            result["times_ms"] = times
    finally:
        model.close()
    result["environment"] = fingerprint()
    return result


def _exit_on_eof() -> None:
    """Stop the process once stdin reaches end of file: the SSH client that ran it is gone."""
    while os.read(0, 4096):  # the raw descriptor: a buffered reader's lock would stall shutdown
        pass
    os._exit(1)  # no message: stderr went with the host


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fingerprint", help="print this machine's fingerprint as JSON")
    r = sub.add_parser("run", help="predict and/or time one model; write the result as JSON")
    r.add_argument("model")
    r.add_argument("--input", required=True, help=".npy batch (float32, NCHW)")
    r.add_argument("--result", required=True, help="where to write the result JSON")
    r.add_argument("--logits", help="write the logits of every input row here (.npy)")
    r.add_argument("--latency", action="store_true", help="time single queries of the input")
    r.add_argument("--warmup", type=int, default=0)
    r.add_argument("--min-queries", type=int, default=64)
    r.add_argument("--min-duration", type=float, default=0.0)
    r.add_argument("--batch", type=int, default=1, help="rows of the input per timed query")
    r.add_argument("--runtime", choices=sorted(MODULES), default="onnxruntime")
    r.add_argument("--providers", default="CPUExecutionProvider")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--predict-batch", type=int, default=PREDICT_BATCH)
    r.add_argument("--build-config", help="JSON engine build settings (TensorRT, .onnx models)")
    r.add_argument(
        "--exit-on-eof", action="store_true", help="stop when stdin closes (the host went away)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fingerprint":
            print(json.dumps(fingerprint()))
            return 0
        if getattr(args, "exit_on_eof", False):
            threading.Thread(target=_exit_on_eof, daemon=True).start()
        if args.latency and args.min_queries < 64:
            raise Unusable("--min-queries must be at least 64 (MLPerf single stream)")
        result = run(args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    except Unusable as e:
        code, message = 2, str(e)
    except Missing as e:
        code, message = 3, str(e)
    except Exception as e:  # noqa: BLE001 - one line back to the host, whatever failed
        code, message = 1, f"{type(e).__name__}: {_first_line(e)}"
    print(f"edgekd-device: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    # run as a script, its folder comes first on sys.path: in a source checkout, edgekd's own
    # runners/onnxruntime.py would then shadow the real onnxruntime
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.exit(main())
