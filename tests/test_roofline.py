"""Roofline estimates counted from ONNX graphs: MACs and bytes, precision per target."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.models.profile import profile
from edgekd.models.students import StudentSpec, build_student
from edgekd.quant.prepare import calibrate, freeze, prepare_qat
from edgekd.quant.scheme import get_scheme
from edgekd.roofline import graph_cost, load_cost, roofline
from edgekd.targets import list_targets, load_target


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()
    x = torch.randn(32, 1, 16, 16)
    root = tmp_path_factory.mktemp("roofline")
    export_onnx(model, x[:1], root / "fp32.onnx")
    q = prepare_qat(model, get_scheme("onnxruntime"))
    calibrate(q, [x])
    freeze(q)
    export_onnx(q.eval(), x[:1], root / "int8.onnx", scheme=get_scheme("onnxruntime"))
    return model, root / "fp32.onnx", root / "int8.onnx"


def test_counts_match_the_pytorch_profile(exported) -> None:
    model, fp32, int8 = exported
    prof = profile(model, (1, 16, 16))
    for path in (fp32, int8):
        cost = load_cost(path)
        assert cost.macs == prof.macs and cost.activation_elems == prof.activation_elems
    a, b = load_cost(fp32), load_cost(int8)
    assert not a.int8_weights and b.int8_weights
    assert a.weight_bytes == pytest.approx(4 * prof.params, rel=0.02)  # float32, BN folded
    assert b.weight_bytes < a.weight_bytes / 2  # int8 weights, int32 biases, scales


def test_hand_built_graph_counts() -> None:
    """A depthwise 3x3 Conv (groups=8) then Gemm with transB: MACs by the formulas."""
    w = numpy_helper.from_array(torch.randn(8, 1, 3, 3).numpy(), "w")
    g = numpy_helper.from_array(torch.randn(10, 8 * 4 * 4).numpy(), "g")
    shape = numpy_helper.from_array(torch.tensor([1, -1]).numpy(), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, g, shape],
    )  # fmt: skip
    cost = graph_cost(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert cost.macs == 8 * 4 * 4 * 9 + 10 * 128
    assert cost.activation_elems == (128 + 128) + (128 + 10)
    assert cost.weight_bytes == 4 * (72 + 1280) + 8 * 2


def test_roofline_precision_and_bound_per_target(exported) -> None:
    _, fp32, int8 = exported
    host, orin, nano = (load_target(n) for n in ("host-cpu", "jetson-orin-nano-8gb", "jetson-nano"))
    f, q = load_cost(fp32), load_cost(int8)
    assert roofline(f, host)["precision"] == "fp32" and roofline(q, host)["precision"] == "int8"
    assert roofline(f, orin)["precision"] == "fp16"  # a float model in a TensorRT engine
    assert roofline(q, nano) is None  # no INT8 on the Nano
    est = roofline(q, host)
    compute = 2 * q.macs / (host.hardware.int8_tops * 1e12)
    memory = (q.weight_bytes + q.activation_elems) / host.bytes_per_s
    assert est["latency_ms"] == pytest.approx(max(compute, memory) * 1e3)
    assert est["bound"] == ("compute" if compute >= memory else "memory") and est["estimated"]


def test_cli_every_target_and_bad_input(exported, tmp_path) -> None:
    _, _, int8 = exported
    runner = CliRunner()
    result = runner.invoke(app, ["roofline", str(int8), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["targets"]
    assert [r["target"] for r in rows] == [t.name for t in list_targets()]
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    result = runner.invoke(app, ["roofline", str(bad)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"edgekd: error: {bad}: not an ONNX model (")


def test_empty_model_is_bad_input(tmp_path) -> None:
    path = tmp_path / "empty.onnx"
    onnx.save(helper.make_model(helper.make_graph([], "g", [], [])), path)
    with pytest.raises(BadInput, match="not an ONNX model"):
        load_cost(path)


def test_report_gives_rooflines_and_measured_over_roofline(digits_run, fp16_run) -> None:
    report = json.loads((digits_run / "report.json").read_text())
    est = report["estimate"]
    assert set(est["roofline"]) == {"teacher", "student_fp32", "student_int8"}
    assert est["roofline"]["student_int8"]["precision"] == "int8"
    for name, ratio in est["measured_over_roofline"].items():  # measured here, on the host
        assert ratio == pytest.approx(
            report["latency_ms"][name]["p90"] / est["roofline"][name]["latency_ms"]
        )
    assert "Roofline estimate for student_int8" in (digits_run / "report.md").read_text()
    nano = json.loads((fp16_run / "report.json").read_text())["estimate"]
    assert nano["roofline"]["student_fp32"]["precision"] == "fp16"
    assert "measured_over_roofline" not in nano  # measured on this host, not on the Nano
