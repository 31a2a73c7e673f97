"""TensorRT engine builds: settings per target, trtexec arguments, INT8 coverage, refusals.

TensorRT itself is needed only by the test marked ``tensorrt`` (run it on the device with
``pytest -m tensorrt``); everything else is pure Python.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from engine_layers import DYNAMIC_INT8_CONV, FLOAT_CONV, HALF_GEMM, INT8_CONV, OTHERS
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BadInput
from edgekd.export.tensorrt import (
    NOT_INSTALLED,
    EngineBuildConfig,
    build_engine,
    for_target,
    int8_coverage,
    trtexec_args,
)
from edgekd.targets import load_target

JETSONS = [
    "jetson-agx-orin-64gb",
    "jetson-nano",
    "jetson-orin-nano-8gb",
    "jetson-orin-nx-16gb",
    "jetson-xavier-nx",
]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_TRTEXEC = shutil.which("trtexec") is not None


def _qdq_model(path: Path, quantized: bool = True) -> Path:
    """A one-Conv model with a dynamic batch: Q/DQ on its input and weight when ``quantized``."""
    w = np.random.default_rng(0).integers(-127, 128, size=(4, 1, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zero"),
        numpy_helper.from_array(w.astype(np.float32) * 0.01, "w_float"),
    ]
    if quantized:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "zero"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zero"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
            helper.make_node("Conv", ["x_dq", "w"], ["y"], pads=[1, 1, 1, 1]),
        ]
    else:
        nodes = [helper.make_node("Conv", ["x", "w_float"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# --- settings per target ----------------------------------------------------------------------


@pytest.mark.parametrize("name", JETSONS)
def test_config_from_each_jetson(name: str) -> None:
    target = load_target(name)
    cfg = for_target(target, dla=False)
    assert cfg.dla_core is None and not cfg.gpu_fallback
    assert cfg.workspace_mb == max(64, int(target.budgets.max_memory_mb // 4))
    assert cfg.timing_cache == f"{name}.timing.cache"
    assert not cfg.hardware_compatible and not cfg.version_compatible
    if name == "jetson-nano":  # FP16 only, TensorRT 8.2
        assert (cfg.strongly_typed, cfg.fp16, cfg.int8) == (False, True, False)
    elif name == "jetson-xavier-nx":  # INT8 on TensorRT 8.5: no strong typing yet
        assert (cfg.strongly_typed, cfg.fp16, cfg.int8) == (False, True, True)
    else:  # INT8 on TensorRT 10.3: strongly typed, Q/DQ decide, no precision flags
        assert (cfg.strongly_typed, cfg.fp16, cfg.int8) == (True, False, False)


@pytest.mark.parametrize("name", JETSONS)
def test_dla_only_where_the_target_has_it_and_it_is_asked(name: str) -> None:
    target = load_target(name)
    if target.hardware.dla_cores == 0:
        with pytest.raises(BadInput, match=f"target {name} has no DLA cores: drop --dla"):
            for_target(target, dla=True)
        return
    cfg = for_target(target, dla=True)
    assert cfg.dla_core == 0 and cfg.gpu_fallback
    # DLA runs FP16/INT8 only: weakly typed, FP16 for the layers kept float.
    assert not cfg.strongly_typed and cfg.fp16 and cfg.int8
    with pytest.raises(BadInput, match="DLA core 2 does not exist"):
        for_target(target, dla=True, dla_core=2)


def test_installed_version_decides_strong_typing() -> None:
    xavier = load_target("jetson-xavier-nx")
    assert for_target(xavier, tensorrt="10.3.0").strongly_typed
    orin = load_target("jetson-orin-nano-8gb")
    assert not for_target(orin, tensorrt="8.6.1").strongly_typed


def test_compatibility_flags_need_ampere_and_tensorrt_8_6() -> None:
    orin = load_target("jetson-orin-nx-16gb")
    cfg = for_target(orin, hardware_compatible=True, version_compatible=True)
    assert cfg.hardware_compatible and cfg.version_compatible
    with pytest.raises(BadInput, match="cannot use DLA"):
        for_target(orin, dla=True, hardware_compatible=True)
    with pytest.raises(BadInput, match="need TensorRT >= 8.6"):
        for_target(load_target("jetson-xavier-nx"), version_compatible=True)
    with pytest.raises(BadInput, match="sm_80"):
        for_target(load_target("jetson-xavier-nx"), hardware_compatible=True, tensorrt="10.3")


def test_non_tensorrt_target_is_refused() -> None:
    with pytest.raises(BadInput, match="runs onnxruntime, not TensorRT"):
        for_target(load_target("host-cpu"))


# --- trtexec ----------------------------------------------------------------------------------


def test_trtexec_args_for_orin_nx_on_dla() -> None:
    cfg = for_target(load_target("jetson-orin-nx-16gb"), dla=True, dla_core=1)
    args = trtexec_args(
        "m.onnx",
        "m.engine",
        cfg,
        "jetson-orin-nx-16gb.timing.cache",
        "m.layers.json",
        shapes={"input": [1, 3, 32, 32]},
    )
    assert args == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--int8",
        "--memPoolSize=workspace:384M",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:1x3x32x32",
        "--maxShapes=input:1x3x32x32",
        "--useDLACore=1",
        "--allowGPUFallback",
        "--timingCacheFile=jetson-orin-nx-16gb.timing.cache",
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=m.layers.json",
        "--skipInference",
    ]


def test_trtexec_args_strongly_typed_and_compatible() -> None:
    cfg = for_target(
        load_target("jetson-orin-nano-8gb"), hardware_compatible=True, version_compatible=True
    )
    args = trtexec_args("m.onnx", "m.engine", cfg, None, "l.json")
    assert "--stronglyTyped" in args and "--fp16" not in args and "--int8" not in args
    assert "--hardwareCompatibilityLevel=ampere+" in args and "--versionCompatible" in args
    assert not any(a.startswith("--timingCacheFile") or "Shapes" in a for a in args)


def test_trtexec_args_for_old_tensorrt() -> None:
    args = trtexec_args("m.onnx", "m.engine", for_target(load_target("jetson-nano")), None, "l")
    assert "--workspace=192" in args and "--buildOnly" in args and "--fp16" in args


# --- INT8 coverage ----------------------------------------------------------------------------
def test_int8_coverage_counts_compute_layers_only() -> None:
    info = {
        "Layers": [INT8_CONV, *OTHERS, DYNAMIC_INT8_CONV, FLOAT_CONV, HALF_GEMM],
        "Bindings": ["input", "logits"],
    }
    cov = int8_coverage(info)
    assert cov["compute_layers"] == 4 and cov["int8_layers"] == 2
    assert cov["coverage"] == pytest.approx(0.5) and cov["detailed"]
    assert cov["not_int8"] == [
        {"name": "/head/conv/Conv", "type": "CaskConvolution", "precision": "fp32"},
        {"name": "/fc/Gemm", "type": "gemm", "precision": "fp16"},
    ]


def test_int8_coverage_without_detail_or_compute() -> None:
    cov = int8_coverage({"Layers": ["/stem/conv/Conv + /stem/act/Relu", "/fc/Gemm"]})
    assert cov["coverage"] is None and not cov["detailed"] and cov["compute_layers"] == 0
    assert int8_coverage({"Layers": OTHERS})["coverage"] is None
    assert int8_coverage({"Layers": [INT8_CONV]})["coverage"] == 1.0
    with pytest.raises(BadInput, match="Layers"):
        int8_coverage({"Bindings": []})


# --- refusals and the missing TensorRT -------------------------------------------------------


@pytest.mark.skipif(HAS_TENSORRT or HAS_TRTEXEC, reason="TensorRT or trtexec is installed here")
def test_without_tensorrt_one_line_and_exit_2(tmp_path: Path) -> None:
    model = _qdq_model(tmp_path / "student_int8.onnx")
    result = CliRunner().invoke(
        app, ["build-engine", str(model), "--target", "jetson-orin-nano-8gb"]
    )
    assert result.exit_code == 2
    assert result.stderr == f"edgekd: error: {NOT_INSTALLED}\n"
    assert NOT_INSTALLED == (
        "TensorRT is not installed here: build engines on the device (pip install "
        "'edgekd[tensorrt]' or JetPack's python3-libnvinfer) or put trtexec on PATH"
    )
    assert not list(tmp_path.glob("*.engine"))


def test_cli_refuses_a_non_tensorrt_target(tmp_path: Path) -> None:
    model = _qdq_model(tmp_path / "m.onnx")
    result = CliRunner().invoke(app, ["build-engine", str(model), "--target", "host-cpu"])
    assert result.exit_code == 2
    assert "target host-cpu runs onnxruntime, not TensorRT" in result.stderr


def test_cli_refuses_dla_without_dla(tmp_path: Path) -> None:
    model = _qdq_model(tmp_path / "m.onnx")
    args = ["build-engine", str(model), "--target", "jetson-orin-nano-8gb", "--dla"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "has no DLA cores: drop --dla" in result.stderr


def test_missing_and_non_onnx_models_are_refused(tmp_path: Path) -> None:
    target = load_target("jetson-orin-nano-8gb")
    with pytest.raises(BadInput, match="no such file"):
        build_engine(tmp_path / "missing.onnx", target, tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model\xff" * 10)
    with pytest.raises(BadInput, match="not an ONNX model"):
        build_engine(junk, target, tmp_path)


def test_precision_and_model_must_agree(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="has no Q/DQ nodes"):
        build_engine(
            _qdq_model(tmp_path / "f.onnx", quantized=False), load_target("jetson-orin-nano-8gb")
        )
    with pytest.raises(BadInput, match="has no INT8"):
        build_engine(_qdq_model(tmp_path / "q.onnx"), load_target("jetson-nano"))


def test_config_is_frozen() -> None:
    cfg = for_target(load_target("jetson-orin-nano-8gb"))
    assert isinstance(cfg, EngineBuildConfig)
    with pytest.raises(AttributeError):
        cfg.fp16 = True  # type: ignore[misc]


# --- a real build (on the device) -------------------------------------------------------------


def _gpu_reason() -> str | None:
    if not HAS_TENSORRT:
        return "needs the tensorrt Python module"
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken install is a reason to skip
        return f"tensorrt does not import: {type(e).__name__}"
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    return None


@pytest.mark.tensorrt
@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_real_engine_from_a_tensorrt_scheme_export(tmp_path: Path) -> None:
    import torch

    from edgekd.export.onnx_export import export_onnx
    from edgekd.models.students import StudentSpec, build_student
    from edgekd.quant.prepare import calibrate, freeze, prepare_qat
    from edgekd.quant.scheme import SCHEMES

    torch.manual_seed(0)
    model = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()
    q = prepare_qat(model, SCHEMES["tensorrt"])
    x = torch.randn(64, 1, 16, 16)
    calibrate(q, [x[:32], x[32:]])
    freeze(q)
    path = tmp_path / "student_int8.onnx"
    export_onnx(q.eval(), x[:1], path, scheme=SCHEMES["tensorrt"])

    summary = build_engine(path, load_target("jetson-orin-nano-8gb"), tmp_path / "engine")
    out = tmp_path / "engine"
    for suffix in (".engine", ".build.log", ".layers.json"):
        assert (out / f"student_int8{suffix}").stat().st_size > 0
    assert (out / "jetson-orin-nano-8gb.timing.cache").is_file()
    cov = summary["int8_coverage"]
    assert cov["compute_layers"] > 0 and cov["coverage"] > 0, cov
