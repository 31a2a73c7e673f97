"""`edgekd diff`: per-layer drift of the deployed INT8 model from the fake-quant student."""

from __future__ import annotations

import json
import math
import shutil
import sys
import types
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.diff import diff_run
from edgekd.export.onnx_export import export_onnx
from edgekd.models.students import StudentSpec, build_student
from edgekd.pipeline import Context, compress, run_stage
from edgekd.quant.drift import layer_drift, tensorrt_status
from edgekd.quant.fakequant import ActFakeQuant
from edgekd.quant.prepare import calibrate, freeze, prepare_qat
from edgekd.quant.scheme import SCHEMES
from edgekd.report.schema import load_schema
from edgekd.run import RunDir
from edgekd.runners.ort_runner import OrtRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAMPLES = 256


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread, digits_options) -> Path:
    """A short compress on digits for the fast host target (ONNX Runtime INT8 scheme)."""
    cfg = CompressConfig(**digits_options, epochs=1, qat_epochs=1, max_accuracy_drop=100.0)
    out = tmp_path_factory.mktemp("drift") / "digits"
    compress(cfg, out)
    return out


@pytest.fixture(scope="module")
def drift(run: Path) -> dict:
    return diff_run(run, samples=SAMPLES)


def _ctx(run: Path) -> Context:
    rundir = RunDir(run)
    return Context(rundir.config(), rundir)


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None})


def test_every_quantized_layer_is_named_by_its_module(run: Path, drift: dict) -> None:
    ctx = _ctx(run)
    float_student = ctx.trained_student()  # ConvNet: definition order is execution order
    expected = [n for n, m in float_student.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [layer["module"] for layer in drift["layers"]] == expected  # execution order
    assert all(layer["quantized"] for layer in drift["layers"])
    assert drift["not_compared"] == []
    assert drift["samples"] == SAMPLES and drift["scheme"] == "onnxruntime"
    # the ONNX Runtime scheme: each layer is read after its QuantizeLinear/DequantizeLinear pair
    assert all(
        layer["tensor"].endswith("DequantizeLinear_output_0") for layer in drift["layers"][:-1]
    )
    assert drift["layers"][-1]["tensor"] == "logits"


def test_metrics_are_finite_and_sane(drift: dict) -> None:
    for layer in drift["layers"]:
        values = [layer[k] for k in ("max_abs_diff", "rel_l2", "cosine", "added_rel_l2")]
        assert all(math.isfinite(v) for v in values), layer
        assert 0 <= layer["max_abs_diff"] < 1.0 and 0 <= layer["rel_l2"] < 0.1, layer
        assert 0.99 < layer["cosine"] <= 1.0, layer
    logits = drift["logits"]
    assert logits["top1_agreement"] >= 0.95 and logits["cosine"] > 0.99
    # the last layer's sub-model is the whole model: its numbers are the logits' numbers
    last = drift["layers"][-1]
    assert {k: last[k] for k in ("max_abs_diff", "rel_l2")} == pytest.approx(
        {k: logits[k] for k in ("max_abs_diff", "rel_l2")}
    )
    assert drift["tensorrt"] in ("not installed",) or drift["tensorrt"].startswith("not compared")


def test_layers_rank_by_the_error_they_add(drift: dict) -> None:
    layers = drift["layers"]
    rel = {layer["module"]: layer["rel_l2"] for layer in layers}
    previous = None
    for layer in layers:  # a plain chain: each layer's input comes from the one before
        assert layer["upstream"] == ([previous] if previous else [])
        inherited = rel[previous] if previous else 0.0
        assert layer["added_rel_l2"] == pytest.approx(layer["rel_l2"] - inherited)
        previous = layer["module"]
    added = [next(x for x in layers if x["module"] == m)["added_rel_l2"] for m in drift["top"]]
    assert added == sorted(added, reverse=True)
    assert len(drift["top"]) == min(5, len(layers))
    assert max(x["added_rel_l2"] for x in layers) == added[0]


def test_logits_match_an_independent_computation(run: Path, drift: dict) -> None:
    ctx = _ctx(run)
    x = ctx.data.val.x[:SAMPLES]
    with torch.no_grad():
        ref = ctx.qat_student()(x).numpy()
    with OrtRunner(run / "student_int8.onnx", threads=0) as runner:
        out = runner.predict(x.numpy())
    logits = drift["logits"]
    assert logits["max_abs_diff"] == pytest.approx(float(np.abs(out - ref).max()), rel=1e-5)
    assert logits["top1_agreement"] == float((out.argmax(1) == ref.argmax(1)).mean())


def test_a_layer_matches_hooks_and_an_extracted_model_file(
    run: Path, drift: dict, tmp_path: Path
) -> None:
    """The first layer redone another way: a forward hook on its fake-quant, extract_model."""
    ctx = _ctx(run)
    x = ctx.data.val.x[:SAMPLES]
    layer = drift["layers"][0]
    student = ctx.qat_student()
    name = layer["tensor"].split("/")[1]  # "/act_quant_1/DequantizeLinear_output_0"
    assert isinstance(student.get_submodule(name), ActFakeQuant)
    seen: list[torch.Tensor] = []
    student.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        student(x)
    sub = tmp_path / "sub.onnx"
    onnx.utils.extract_model(str(run / "student_int8.onnx"), str(sub), ["input"], [layer["tensor"]])
    with OrtRunner(sub, threads=0) as runner:
        out = runner.predict(x.numpy())
    ref = seen[0].numpy()
    # float32 sums in another order (the runner's batches and threads): ~1e-6 apart on some CPUs
    assert layer["rel_l2"] == pytest.approx(
        np.linalg.norm(out - ref) / np.linalg.norm(ref), rel=1e-4
    )


def test_report_picks_up_the_drift(run: Path, drift: dict) -> None:
    assert RunDir(run).saved_drift() == json.loads((run / "logs" / "drift.json").read_text())
    report = run_stage("validate", run)
    assert report["drift"]["top"] == drift["top"]
    saved = json.loads((run / "report.json").read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(saved)
    md = (run / "report.md").read_text()
    assert "### Drift (fake-quant vs ONNX Runtime)" in md
    rows = [line for line in md.splitlines() if line.startswith(f"| {drift['top'][0]} |")]
    assert len(rows) == 1


def _plant(run: Path, module: str, factor: float) -> None:
    """Multiply the weight scale of ``module``'s Conv/Gemm in student_int8.onnx by ``factor``."""
    path = run / "student_int8.onnx"
    model = onnx.load(path)
    producers = {o: n for n in model.graph.node for o in n.output}
    layer = next(
        n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and f"/{module}/" in n.name
    )
    scale = producers[layer.input[1]].input[1]  # the weight's DequantizeLinear scale
    init = next(t for t in model.graph.initializer if t.name == scale)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, scale))
    onnx.save(model, path)


@pytest.mark.parametrize("index", [1, -1])
def test_planted_drift_is_named_first(run: Path, drift: dict, tmp_path: Path, index: int) -> None:
    copy = _copy(run, tmp_path)
    module = drift["layers"][index]["module"]
    _plant(copy, module, 1.5)
    assert RunDir(copy).saved_drift() is None  # the saved record describes the unplanted model
    planted = diff_run(copy, samples=SAMPLES)
    assert planted["top"][0] == module
    assert planted["logits"]["max_abs_diff"] > 10 * drift["logits"]["max_abs_diff"]
    assert RunDir(copy).saved_drift() is not None


def test_cli_prints_the_top_layers(run: Path, tmp_path: Path) -> None:
    copy = _copy(run, tmp_path)
    result = cli("diff", copy, "--samples", 64, "--top", 2)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    saved = json.loads((copy / "logs" / "drift.json").read_text())
    assert saved["samples"] == 64 and len(saved["top"]) == 2
    assert lines[0].startswith("layer") and "added rel. error" in lines[0]
    assert {len(line) for line in lines[:3]} == {len(lines[0])}  # numbers right-aligned
    assert [line.split()[0] for line in lines[1:3]] == saved["top"]
    assert lines[3].startswith("On 64 validation samples") and "TensorRT not " in lines[3]
    assert len(lines) == 4
    as_json = cli("diff", copy, "--samples", 64, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert (
        json.loads(as_json.stdout)["top"]
        == json.loads((copy / "logs" / "drift.json").read_text())["top"]
    )


def _nano(run: Path, tmp_path: Path) -> Path:
    """The run folder as if made for the FP16-only Jetson Nano: no INT8 files."""
    copy = _copy(run, tmp_path)
    for name in ("student_qat.pt", "student_int8.onnx"):
        (copy / name).unlink()
    target = Path(__file__).parents[1] / "targets" / "jetson-nano.toml"
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "target": str(target)}))
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_onnx", "student_int8.onnx is missing; run edgekd export"),
        ("no_qat", "student_qat.pt is missing; run edgekd quantize"),
        ("text_onnx", "student_int8.onnx: not an ONNX model"),
        ("fp16_target", "target jetson-nano runs fp16 without an INT8 model"),
        ("samples", "--samples and --top must be 1 or more"),
        ("not_a_run", "not a run folder"),
    ],
)
def test_bad_input_exits_2(run: Path, tmp_path: Path, damage: str, message: str) -> None:
    folder, extra = _copy(run, tmp_path), []
    if damage == "no_onnx":
        (folder / "student_int8.onnx").unlink()
    elif damage == "no_qat":
        (folder / "student_qat.pt").unlink()
    elif damage == "text_onnx":
        (folder / "student_int8.onnx").write_text("not a model\n")
    elif damage == "fp16_target":
        shutil.rmtree(folder)
        folder = _nano(run, tmp_path)
    elif damage == "samples":
        extra = ["--samples", 0]
    else:
        folder = tmp_path / "empty"
        folder.mkdir()
    result = cli("diff", folder, *extra)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("edgekd: error: ") and message in err and "\n" not in err


def test_tensorrt_scheme_layers_are_matched_and_read_after_their_relu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    student = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()
    x = torch.randn(96, 1, 16, 16)
    qmodel = prepare_qat(student, SCHEMES["tensorrt"])
    calibrate(qmodel, [x[:48]])
    freeze(qmodel)
    proto = export_onnx(qmodel.eval(), x[:1], tmp_path / "int8.onnx", scheme=SCHEMES["tensorrt"])
    result = layer_drift(qmodel, proto, x, top=3)
    names = [n for n, m in student.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [layer["module"] for layer in result["layers"]] == names
    # read after the ReLU, or after the Q/DQ pair that follows it when the next layer comes next
    tensors = [layer["tensor"] for layer in result["layers"][:-1]]
    assert all(t.endswith(("Relu_output_0", "DequantizeLinear_output_0")) for t in tensors)
    assert any(t.endswith("Relu_output_0") for t in tensors)  # before a MaxPool
    assert all(0.99 < layer["cosine"] <= 1.0 for layer in result["layers"])
    assert result["samples"] == 96 and len(result["top"]) == 3


def test_tensorrt_is_never_faked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    assert tensorrt_status() == "not installed"
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    assert tensorrt_status().startswith("not compared: TensorRT 10.3.0 is installed")
