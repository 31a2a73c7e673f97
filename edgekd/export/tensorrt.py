"""Build a TensorRT engine from an exported ONNX model, on the device.

Three ways, in order: the TensorRT Python API (``pip install 'edgekd[tensorrt]'``, or JetPack's
``python3-libnvinfer``) through :func:`edgekd.device.trt.build_engine`, the builder the device
runs too, so an engine is the same for the same :class:`EngineBuildConfig` whichever side builds
it; ``trtexec`` on PATH; or neither: :class:`~edgekd.errors.BadInput` with one line. Both write
the same three files next to each other:

``<name>.engine``       the serialized engine (a plan for this GPU and this TensorRT)
``<name>.build.log``    what the builder logged
``<name>.layers.json``  the engine inspector's per-layer information (detailed verbosity),
                        from which :func:`int8_coverage` tells how much of the compute runs INT8

Decisions: on TensorRT >= 10 an INT8 model is built as a *strongly typed* network,
so the explicit Q/DQ nodes decide what runs in INT8 and the float parts keep the ONNX types; the
INT8/FP16 builder flags are deprecated there (and gone in 11) and are set only for older TensorRT
(Xavier's 8.5) or an FP16-only target (Nano's 8.2). DLA runs FP16/INT8 only, so a DLA build is
weakly typed with the FP16 flag for the layers kept float, and GPU fallback on (DLA falls back
silently: the per-layer information shows where each layer went).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekd.atomic import write_bytes, write_json, write_text
from edgekd.device import trt as device_trt
from edgekd.device.errors import BuildFailed, Unusable
from edgekd.device.trt import version as _version
from edgekd.errors import BadInput, EdgekdError
from edgekd.targets import Target

NOT_INSTALLED = (
    "TensorRT is not installed here: build engines on the device "
    "(pip install 'edgekd[tensorrt]' or JetPack's python3-libnvinfer) or put trtexec on PATH"
)
MIN_WORKSPACE_MB = 64


@dataclass(frozen=True)
class EngineBuildConfig:
    """How to build one engine; derived from a target by :func:`for_target`."""

    tensorrt: str  # TensorRT version the build is for ("10.3")
    workspace_mb: int  # builder workspace memory pool limit
    strongly_typed: bool  # types from the network (explicit Q/DQ); no precision flags
    fp16: bool  # FP16 builder flag (weakly typed only)
    int8: bool  # INT8 builder flag (weakly typed only: explicit Q/DQ on TensorRT < 10)
    dla_core: int | None = None  # DLA core to run on; None = GPU
    gpu_fallback: bool = False  # let layers DLA cannot run fall back to the GPU
    timing_cache: str | None = None  # file name of the timing cache, in the output folder
    hardware_compatible: bool = False  # engine runs on any Ampere+ GPU (slower)
    version_compatible: bool = False  # engine runs on later TensorRT versions (lean runtime)
    batch: int = 1  # batch size a dynamic batch axis is built for (min = opt = max)


def for_target(
    target: Target,
    *,
    dla: bool = False,
    dla_core: int = 0,
    workspace_mb: int | None = None,
    tensorrt: str | None = None,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
    kept_float: bool = False,
) -> EngineBuildConfig:
    """The build settings for ``target``; ``tensorrt`` (the installed version) overrides its own.

    ``kept_float``: the model leaves some layers in float for FP16 (ONNX metadata "kept_float").
    The workspace is a quarter of the target's memory budget (at least 64 MB); the rest goes to
    the CUDA/TensorRT context, weights and activations.
    """
    if target.runtime != "tensorrt":
        raise BadInput(
            f"target {target.name} runs {target.runtime}, not TensorRT: build-engine needs a "
            "TensorRT target (see edgekd targets list)"
        )
    version = tensorrt or target.hardware.tensorrt or ""
    ver = _version(version)
    int8 = target.precision == "int8"
    dla_cores = target.hardware.dla_cores
    if dla and dla_cores == 0:
        raise BadInput(f"target {target.name} has no DLA cores: drop --dla")
    if dla and not 0 <= dla_core < dla_cores:
        raise BadInput(
            f"DLA core {dla_core} does not exist on {target.name} (cores 0..{dla_cores - 1})"
        )
    if (hardware_compatible or version_compatible) and ver < (8, 6):
        raise BadInput(
            f"hardware/version compatible engines need TensorRT >= 8.6, {target.name} has "
            f"{version or 'an unknown version'}"
        )
    if hardware_compatible:
        sm = (target.hardware.sm or "").removeprefix("sm_")
        if not sm.isdigit() or int(sm) < 80:
            raise BadInput(
                f"hardware compatible engines need an Ampere or later GPU (sm_80+), "
                f"{target.name} has {target.hardware.sm or 'an unknown GPU'}"
            )
        if dla:
            raise BadInput("hardware compatible engines cannot use DLA: drop one of them")
    # DLA needs FP16/INT8 for every layer it runs: weakly typed with both flags. Layers kept in
    # float (--keep-float) run FP16 only through the FP16 flag, which strong typing refuses;
    # the explicit Q/DQ still fix which layers run INT8.
    strongly_typed = int8 and ver >= (10,) and not dla and not kept_float
    if workspace_mb is None:
        workspace_mb = max(MIN_WORKSPACE_MB, int(target.budgets.max_memory_mb // 4))
    return EngineBuildConfig(
        tensorrt=version,
        workspace_mb=workspace_mb,
        strongly_typed=strongly_typed,
        fp16=not strongly_typed,
        int8=int8 and not strongly_typed,
        dla_core=dla_core if dla else None,
        gpu_fallback=dla,
        timing_cache=f"{target.name}.timing.cache",
        hardware_compatible=hardware_compatible,
        version_compatible=version_compatible,
        batch=target.latency.batch,
    )


def _shape_text(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_args(
    onnx_path: str | Path,
    engine_path: str | Path,
    cfg: EngineBuildConfig,
    timing_cache: str | Path | None,
    layer_info_path: str | Path,
    *,
    shapes: dict[str, list[int]] | None = None,
    trtexec: str = "trtexec",
) -> list[str]:
    """The ``trtexec`` command line (a list, run without a shell) that builds ``cfg``.

    ``shapes`` gives the static shape for each input with a dynamic axis (min = opt = max).
    """
    ver = _version(cfg.tensorrt)
    args = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if cfg.strongly_typed:
        args.append("--stronglyTyped")
    else:
        args += ["--fp16"] * cfg.fp16 + ["--int8"] * cfg.int8
    if ver and ver < (8, 4):  # --memPoolSize arrived in 8.4
        args.append(f"--workspace={cfg.workspace_mb}")
    else:
        args.append(f"--memPoolSize=workspace:{cfg.workspace_mb}M")
    for flag in ("--minShapes", "--optShapes", "--maxShapes"):
        if shapes:
            args.append(f"{flag}=" + ",".join(f"{k}:{_shape_text(v)}" for k, v in shapes.items()))
    if cfg.dla_core is not None:
        args.append(f"--useDLACore={cfg.dla_core}")
        if cfg.gpu_fallback:
            args.append("--allowGPUFallback")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if cfg.hardware_compatible:
        args.append("--hardwareCompatibilityLevel=ampere+")
    if cfg.version_compatible:
        args.append("--versionCompatible")
    args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={layer_info_path}"]
    # Build only: no inference benchmark (--skipInference replaced --buildOnly in 8.6).
    args.append("--skipInference" if not ver or ver >= (8, 6) else "--buildOnly")
    return args


# --- INT8 coverage from the engine inspector -------------------------------------------------
#
# The inspector's JSON (IEngineInspector::getEngineInformation(kJSON), and trtexec
# --exportLayerInfo, with ProfilingVerbosity kDETAILED) is {"Layers": [...], "Bindings": [...]};
# each layer is a dict such as (TensorRT developer guide, "Engine Inspector"):
#   {"Name": "conv1 + bn1 + relu1", "LayerType": "CaskConvolution",
#    "Inputs": [{"Name": "x", "Dimensions": [16,512,28,28],
#                "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
#    "Outputs": [...], "ParameterType": "Convolution", "Kernel": [1,1], ...,
#    "Weights": {"Type": "Int8", "Count": 131072}, "Bias": {"Type": "Float", ...},
#    "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_...", ...}
# With dynamic shapes and no execution context, formats read "N/A due to dynamic shapes", so the
# weights' type (then the tactic name) decides. With lower verbosity a layer is only its name
# (a string): then nothing can be told.

_COMPUTE = ("conv", "gemm", "matrixmultiply", "matrix multiply", "matmul", "fullyconnected")
_COMPUTE_EXCLUDED = ("reformat", "shuffle", "pointwise")


def _is_compute(layer: dict[str, Any]) -> bool:
    kinds = " ".join(str(layer.get(k, "")) for k in ("LayerType", "ParameterType")).lower()
    if any(x in kinds for x in _COMPUTE_EXCLUDED):
        return False
    return any(x in kinds.replace(" ", "") or x in kinds for x in _COMPUTE)


def _datatype(text: str) -> str | None:
    low = text.lower()
    for name, words in (
        ("int8", ("int8",)),
        ("fp8", ("fp8",)),
        ("fp16", ("half", "fp16")),
        ("bf16", ("bf16", "bfloat16")),
        ("fp32", ("float", "fp32")),
    ):
        if any(w in low for w in words):
            return name
    return None


def _layer_precision(layer: dict[str, Any]) -> str:
    """The precision a compute layer computes in: int8, fp16, fp32, ... or "unknown"."""
    if isinstance(layer.get("Precision"), str):
        found = _datatype(layer["Precision"])
        if found:
            return found
    weights = layer.get("Weights")
    if isinstance(weights, dict) and isinstance(weights.get("Type"), str):
        found = _datatype(weights["Type"])
        if found:
            return found
    for tensor in layer.get("Inputs") or []:
        if isinstance(tensor, dict):
            found = _datatype(str(tensor.get("Format/Datatype", "")))
            if found:
                return found
            break  # only the data input (input 0) tells the kernel's type
    tactic = str(layer.get("TacticName", "")).lower()
    if "i8i8" in tactic or "int8" in tactic or "imma" in tactic:
        return "int8"
    if "f16f16" in tactic or "h1688" in tactic or "fp16" in tactic:
        return "fp16"
    return "unknown"


def int8_coverage(layer_info: dict[str, Any]) -> dict[str, Any]:
    """The fraction of compute layers (convolution, matmul/gemm) of an engine that run INT8.

    Returns ``{"compute_layers", "int8_layers", "coverage" (None when there is no compute layer
    or the information is not detailed), "not_int8": [{"name", "type", "precision"}]}``.
    """
    layers = layer_info.get("Layers") if isinstance(layer_info, dict) else None
    if not isinstance(layers, list):
        raise BadInput('engine layer information has no "Layers" list')
    detailed = [layer for layer in layers if isinstance(layer, dict)]
    compute = [layer for layer in detailed if _is_compute(layer)]
    not_int8 = []
    for layer in compute:
        precision = _layer_precision(layer)
        if precision != "int8":
            not_int8.append(
                {
                    "name": str(layer.get("Name", "")),
                    "type": str(layer.get("LayerType", "")),
                    "precision": precision,
                }
            )
    n = len(compute)
    return {
        "compute_layers": n,
        "int8_layers": n - len(not_int8),
        "coverage": (n - len(not_int8)) / n if n else None,
        "not_int8": not_int8,
        "detailed": len(detailed) == len(layers),
    }


# --- building ---------------------------------------------------------------------------------


def _kept_float(onnx_path: Path) -> bool:
    """Whether edgekd left layers of this model in float (its "kept_float" metadata)."""
    from edgekd.export.lint import load_onnx

    meta = {p.key: p.value for p in load_onnx(onnx_path).metadata_props}
    return bool(meta.get("kept_float"))


def _check_model(onnx_path: Path, target: Target) -> dict[str, list[int]]:
    """Refuse a model that cannot be built for ``target``; the static shapes of dynamic inputs."""
    from edgekd.export.lint import load_onnx

    model = load_onnx(onnx_path)
    quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if target.precision == "fp16" and quantized:
        raise BadInput(
            f"{onnx_path}: has Q/DQ nodes, but {target.name} has no INT8: build the float "
            "model (student_fp32.onnx)"
        )
    if target.precision == "int8" and not quantized:
        raise BadInput(
            f"{onnx_path}: has no Q/DQ nodes, so nothing would run INT8 on {target.name}: build "
            "the quantized model (student_int8.onnx)"
        )
    initializers = {t.name for t in model.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        if -1 not in shape:
            continue
        if -1 in shape[1:]:
            raise BadInput(
                f"{onnx_path}: input {value.name!r} has a dynamic axis other than the batch: "
                "export with a fixed input size"
            )
        shapes[value.name] = [target.latency.batch, *shape[1:]]
    return shapes


def _installed() -> str:
    if importlib.util.find_spec("tensorrt") is not None:
        return "python"
    if shutil.which("trtexec"):
        return "trtexec"
    raise BadInput(NOT_INSTALLED)


def build_engine(
    onnx_path: str | Path,
    target: Target,
    out_dir: str | Path | None = None,
    *,
    dla: bool = False,
    hardware_compatible: bool = False,
    version_compatible: bool = False,
) -> dict[str, Any]:
    """Build ``<out_dir>/<name>.engine`` (+ ``.build.log``, ``.layers.json``); a summary dict.

    ``out_dir`` defaults to the model's folder. The timing cache ``<target>.timing.cache`` in
    ``out_dir`` is read and updated, so rebuilding for the same device is quicker.
    """
    onnx_path = Path(onnx_path)
    compat = {
        "hardware_compatible": hardware_compatible,
        "version_compatible": version_compatible,
        "kept_float": _kept_float(onnx_path),
    }
    # Checks that need no TensorRT first, so a bad request fails the same way everywhere.
    for_target(target, dla=dla, **compat)
    shapes = _check_model(onnx_path, target)
    how = _installed()
    out = Path(out_dir) if out_dir is not None else onnx_path.parent
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in device_trt.engine_files(onnx_path.stem).items()}
    start = time.perf_counter()
    if how == "python":
        installed = device_trt.import_tensorrt().__version__
        cfg = for_target(target, dla=dla, tensorrt=installed, **compat)
        cfg, layer_info = build_python(onnx_path, cfg, out, paths)
    else:
        cfg = for_target(target, dla=dla, **compat)
        layer_info = _build_trtexec(onnx_path, cfg, out, paths, shapes)
    coverage = int8_coverage(layer_info)
    return {
        "model": str(onnx_path),
        "target": target.name,
        "builder": "tensorrt" if how == "python" else "trtexec",
        "tensorrt": cfg.tensorrt,
        "config": asdict(cfg),
        **{k: str(v) for k, v in paths.items()},
        "engine_bytes": paths["engine"].stat().st_size,
        "int8_coverage": coverage,
        "wall_seconds": round(time.perf_counter() - start, 3),
    }


def _build_trtexec(
    onnx_path: Path,
    cfg: EngineBuildConfig,
    out: Path,
    paths: dict[str, Path],
    shapes: dict[str, list[int]],
) -> dict[str, Any]:
    """Build with trtexec into temporary names, then move the results into place."""
    tmp = {k: p.with_name(f".{p.name}.partial") for k, p in paths.items()}
    cache = out / cfg.timing_cache if cfg.timing_cache else None
    args = trtexec_args(
        onnx_path,
        tmp["engine"],
        cfg,
        cache,
        tmp["layers"],
        shapes=shapes,
        trtexec=shutil.which("trtexec") or "trtexec",
    )
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        log = " ".join(args) + "\n" + done.stdout + done.stderr
        write_text(paths["build_log"], log)
        if done.returncode != 0 or not tmp["engine"].is_file():
            errors = [line for line in log.splitlines() if "error" in line.lower()]
            last = errors[-1].strip() if errors else f"exit status {done.returncode}"
            raise EdgekdError(
                f"trtexec failed to build {onnx_path.name}: {last} (see {paths['build_log']})"
            )
        layer_info = json.loads(tmp["layers"].read_text())
        write_bytes(paths["engine"], tmp["engine"].read_bytes())
        write_json(paths["layers"], layer_info)
        return layer_info
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def build_python(
    onnx_path: Path, cfg: EngineBuildConfig, out: Path, paths: dict[str, Path]
) -> tuple[EngineBuildConfig, dict[str, Any]]:
    """Build ``cfg`` with the TensorRT Python API (:func:`edgekd.device.trt.build_engine`) into
    ``paths`` (engine, build_log, layers), reading and updating the timing cache in ``out``;
    (the settings as built, the inspector's information)."""
    cache_path = out / cfg.timing_cache if cfg.timing_cache else None
    cache = None
    if cache_path is not None:
        cache = cache_path.read_bytes() if cache_path.is_file() else b""
    try:
        built = device_trt.build_engine(str(onnx_path), asdict(cfg), cache)
    except BuildFailed as e:
        write_text(paths["build_log"], e.log)
        raise EdgekdError(f"{e} (see {paths['build_log']})") from None
    except Unusable as e:
        raise BadInput(str(e)) from None
    if cache_path is not None and built.timing_cache is not None:
        write_bytes(cache_path, built.timing_cache)
    write_bytes(paths["engine"], built.plan)
    write_json(paths["layers"], built.layers)
    write_text(paths["build_log"], built.log)
    return EngineBuildConfig(**built.config), built.layers


def config_for_model(onnx_path: Path, target: Target) -> EngineBuildConfig:
    """The settings the engine deployed for ``target`` is built with (validate, bench)."""
    return for_target(target, kept_float=_kept_float(onnx_path))
