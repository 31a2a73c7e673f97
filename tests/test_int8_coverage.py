"""What runs in INT8 after the runtime's optimizations, and the mixed-precision plan measured on
ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import onnx
import pytest
import torch
from engine_layers import DYNAMIC_INT8_CONV, FLOAT_CONV, HALF_GEMM, INT8_CONV, OTHERS
from onnx import TensorProto, helper, numpy_helper

from edgekd.config import CompressConfig
from edgekd.export.onnx_export import export_onnx
from edgekd.models.students import StudentSpec, build_student
from edgekd.pipeline import compress
from edgekd.quant.coverage import FLOAT_KERNELS, INTEGER_KERNELS, ort_coverage, tensorrt_coverage
from edgekd.quant.mixed import speed_plan
from edgekd.quant.prepare import calibrate, freeze, prepare_qat, quantizable_layers
from edgekd.quant.scheme import get_scheme
from edgekd.quant.sensitivity import Probe
from edgekd.report.schema import load_schema
from edgekd.roofline import load_cost
from edgekd.targets import load_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SCHEME = get_scheme("onnxruntime")


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student(StudentSpec("convnet", 0.5, 1.0), 3, 10).eval()


def _int8(tmp_path: Path, keep_float: frozenset[str] = frozenset()) -> Path:
    q = prepare_qat(_student(), SCHEME, keep_float=keep_float)
    x = torch.randn(32, 3, 32, 32)
    calibrate(q, [x])
    freeze(q)
    path = tmp_path / "int8.onnx"
    export_onnx(q.eval(), x[:1], path, scheme=SCHEME)
    return path


def test_every_mac_of_a_fully_quantized_model_runs_in_integer_kernels(tmp_path: Path) -> None:
    path = _int8(tmp_path)
    layers = quantizable_layers(_student())
    cov = ort_coverage(path, modules=layers)
    assert cov["macs"] == load_cost(path).macs > 0  # the roofline's count of the same graph
    assert cov["int8_macs"] == cov["macs"] and cov["int8_fraction"] == 1.0
    assert [r["module"] for r in cov["per_layer"]] == layers
    assert all(r["kernel"].split(".")[-1] in INTEGER_KERNELS for r in cov["per_layer"])
    assert sum(r["macs"] for r in cov["per_layer"]) == cov["macs"]
    export_onnx(_student(), torch.randn(1, 3, 32, 32), tmp_path / "fp32.onnx")
    fp32 = ort_coverage(tmp_path / "fp32.onnx")
    assert fp32["int8_fraction"] == 0.0 and fp32["macs"] == cov["macs"]
    assert all(r["kernel"].split(".")[-1] in FLOAT_KERNELS for r in fp32["per_layer"])


def test_a_kept_float_layer_is_reported_float(tmp_path: Path) -> None:
    kept = "features.0.0"
    layers = quantizable_layers(_student())
    cov = ort_coverage(_int8(tmp_path, frozenset({kept})), modules=layers)
    rows = {r["module"]: r for r in cov["per_layer"]}
    assert not rows[kept]["int8"] and rows[kept]["kernel"].split(".")[-1] in FLOAT_KERNELS
    assert all(r["int8"] for name, r in rows.items() if name != kept)
    assert cov["int8_macs"] == cov["macs"] - rows[kept]["macs"]
    assert cov["int8_fraction"] == pytest.approx(1 - rows[kept]["macs"] / cov["macs"])
    assert 0 < cov["int8_fraction"] < 1 and cov["int8_layers"] == cov["layers"] - 1


def test_coverage_reads_the_runtime_not_the_export(tmp_path: Path) -> None:
    """A float conv between a DequantizeLinear and a QuantizeLinear: ONNX Runtime quantizes its
    weights itself and runs it in QLinearConv, so it is INT8 whatever the export kept."""
    cov = ort_coverage(
        _int8(tmp_path, frozenset({"features.3.0"})), modules=quantizable_layers(_student())
    )
    row = next(r for r in cov["per_layer"] if r["module"] == "features.3.0")
    assert row["int8"] and row["kernel"] == "com.microsoft.QLinearConv"
    assert cov["int8_fraction"] == 1.0


def _engine_onnx() -> onnx.ModelProto:
    """An ONNX graph whose nodes the engine_layers samples name: stem, block, head convs, fc."""

    def conv(name: str, x: str, y: str, cin: int, cout: int, k: int) -> list:
        w = numpy_helper.from_array(torch.zeros(cout, cin, k, k).numpy(), f"{name}.w")
        return [w, helper.make_node("Conv", [x, w.name], [y], name=name, pads=[k // 2] * 4)]

    parts = [
        conv("/stem/conv/Conv", "input", "a", 3, 16, 3),
        conv("/block/conv/Conv", "a", "b", 16, 16, 3),
        conv("/head/conv/Conv", "b", "c", 16, 8, 3),
    ]
    fc_w = numpy_helper.from_array(torch.zeros(10, 8).numpy(), "fc.w")
    nodes = [p[1] for p in parts] + [
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["f", "fc.w"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "engine",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [p[0] for p in parts] + [fc_w],
    )
    return helper.make_model(graph)


def test_tensorrt_mac_coverage_from_the_engine_inspector() -> None:
    info = {"Layers": [INT8_CONV, DYNAMIC_INT8_CONV, FLOAT_CONV, HALF_GEMM, *OTHERS]}
    cov = tensorrt_coverage(info, _engine_onnx(), "TensorRT 10.3")
    macs = {r["layer"]: r["macs"] for r in cov["per_layer"]}
    assert macs == {
        "/stem/conv/Conv": 32 * 32 * 16 * 3 * 9,
        "/block/conv/Conv": 32 * 32 * 16 * 16 * 9,
        "/head/conv/Conv": 32 * 32 * 8 * 16 * 9,
        "/fc/Gemm": 10 * 8,
    }
    int8 = macs["/stem/conv/Conv"] + macs["/block/conv/Conv"]
    assert cov["int8_macs"] == int8 and cov["macs"] == sum(macs.values())
    assert cov["int8_fraction"] == pytest.approx(int8 / sum(macs.values()))
    assert [r["int8"] for r in cov["per_layer"]] == [True, True, False, False]
    assert cov["per_layer"][3]["kernel"] == "gemm (fp16)"
    missing = tensorrt_coverage({"Layers": [INT8_CONV]}, _engine_onnx())
    assert missing["int8_fraction"] is None and "3 layer(s)" in missing["unavailable"]


def _probe() -> Probe:
    torch.manual_seed(1)
    x = torch.randn(64, 3, 32, 32)
    return Probe(x[:32], x, torch.zeros(64, dtype=torch.long), torch.randn(64, 10))


def test_the_plan_ships_the_fastest_measured_mix(fast_target: Path) -> None:
    student, target = _student(), load_target(fast_target)
    layers = quantizable_layers(student)
    plan = speed_plan(student, SCHEME, "max", _probe(), ["classifier"], target)
    assert plan["measured"] and plan["percentile"] == 90 and plan["threads"] == 1
    assert "onnxruntime" in plan["where"] and "1 thread" in plan["where"]
    mixes = {m["name"]: m for m in plan["mixes"]}
    assert mixes["all_int8"]["keep_float"] == ["classifier"]
    assert all("classifier" in m["keep_float"] for m in mixes.values())  # accuracy's choice stays
    assert all(len(m["keep_float"]) < len(layers) for m in mixes.values())
    chosen = mixes[plan["chosen"]]
    assert chosen["p90_ms"] == min(m["p90_ms"] for m in mixes.values())
    assert plan["layers"] == chosen["keep_float"]
    for m in mixes.values():
        assert m["vs_fp32"] == pytest.approx(m["p90_ms"] / plan["fp32_p90_ms"])
    assert plan["queries"]["fp32"] >= plan["rounds"] * 64 and set(plan["queries"]) == {
        "fp32",
        *mixes,
    }
    assert mixes["all_int8"]["runtime_int8"] == []  # the classifier is last: nothing follows it
    assert 0 < mixes["all_int8"]["int8_fraction"] < 1
    assert ("why_not_faster" in plan) == (chosen["p90_ms"] >= plan["fp32_p90_ms"])
    rows = plan["profile"]["layers"]
    assert [r["module"] for r in rows] == layers
    assert all(r["int8_kernel_us"] > 0 and r["fp32_kernel_us"] > 0 for r in rows)
    assert not rows[-1]["int8_kernel"]  # the classifier was exported in float


def test_the_plan_uses_accuracy_alone_off_this_machine() -> None:
    plan = speed_plan(_student(), SCHEME, "max", _probe(), [], load_target("jetson-orin-nano-8gb"))
    assert plan == {"measured": False, "why": plan["why"]}
    assert "jetson-orin-nano-8gb runs tensorrt" in plan["why"]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, digits_options) -> tuple[Path, dict]:
    cfg = CompressConfig(**digits_options, epochs=1, qat_epochs=0, keep_float="auto")
    out = tmp_path_factory.mktemp("runs") / "auto"
    return out, compress(cfg, out)


def test_compress_records_the_plan_and_the_coverage(auto_run) -> None:
    out, report = auto_run
    jsonschema.Draft202012Validator(load_schema()).validate(report)
    record = json.loads((out / "logs" / "quantize.json").read_text())
    keep = record["keep_float"]
    assert keep["mode"] == "auto" and keep["speed"]["measured"]
    assert keep["layers"] == keep["speed"]["layers"]
    meta = {p.key: p.value for p in onnx.load(out / "student_int8.onnx").metadata_props}
    assert meta.get("kept_float", "") == ",".join(keep["layers"])
    cov = report["export"]["int8_coverage"]
    floats = {r["module"] for r in cov["per_layer"] if not r["int8"]}
    assert floats <= set(keep["layers"])  # the runtime may still quantize a kept one
    md = (out / "report.md").read_text()
    assert f"Mixed precision, timed whole in {keep['speed']['rounds']} interleaved rounds" in md
    assert f"Shipped: {keep['speed']['chosen']}." in md
    assert f"{100 * cov['int8_fraction']:.1f} % of {cov['macs']:,} MACs in integer kernels" in md
    assert "### INT8 per layer" in md
    html = (out / "report.html").read_text()
    assert "What runs in INT8: student_int8" in html
    assert 'data-json="/export/int8_coverage/int8_fraction"' in html
    assert 'data-json="/quantization/keep_float/speed/chosen"' in html
