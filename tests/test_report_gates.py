"""Gates as records: schema-valid, read back from version-1 reports, and the only source the
Markdown, HTML, compare table and CLI render gates and where-measured from."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import jsonschema
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.report.compare import load_runs, table
from edgekd.report.gates import failure_line
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.read import load_report
from edgekd.report.schema import SCHEMA_VERSION, load_schema
from edgekd.runners.latency import stats
from edgekd.runners.ort_runner import OrtRunner
from edgekd.runners.trt_runner import TrtRunner
from edgekd.targets import load_target
from edgekd.validate import gate, placed

V1 = Path(__file__).parent / "data" / "report-v1"
HOST_FAILED, ORIN_HERE = V1 / "host-latency-failed", V1 / "orin-on-this-host"
TRT_WHERE = "measured: tensorrt 10.3.0 engine, CUDA events, Orin (nvgpu)"


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(load_schema())


def _errors(validator, report: dict) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(report)]


def _records(report: dict) -> list[tuple[str, str, bool | None]]:
    return [(g["name"], g["status"], g["measured_on_target"]) for g in report["gates"]["records"]]


def test_version_1_reports_read_as_version_2(validator) -> None:
    raw = json.loads((HOST_FAILED / "report.json").read_text())
    assert raw["schema_version"] == 1 and _errors(validator, raw)  # not a version-2 report
    host = load_report(HOST_FAILED)
    assert host["schema_version"] == SCHEMA_VERSION and _errors(validator, host) == []
    assert host["gates"]["passed"] is False
    assert _records(host) == [
        ("accuracy_drop", "passed", True),
        ("latency_budget", "failed", True),
        ("int8_pays", "skipped", True),
    ]
    failed, skipped = host["gates"]["records"][1:]
    assert f"latency_budget: {failed['evidence']}" == raw["gates"]["failed"][0]
    assert f"int8_pays: {skipped['evidence']}" == raw["gates"]["skipped"][0]
    acc = host["accuracy"]
    assert (
        f"{100 * acc['student_int8']:.2f} % vs teacher {100 * acc['teacher']:.2f} %"
        in (host["gates"]["records"][0]["evidence"])
    )
    assert all(lat["on_target"] for lat in host["latency_ms"].values())

    orin = load_report(ORIN_HERE)
    assert _errors(validator, orin) == []
    assert _records(orin) == [
        ("accuracy_drop", "passed", False),
        ("latency_budget", "skipped", False),
        ("int8_pays", "skipped", False),
        ("tensorrt_qdq_lint", "passed", None),
    ]
    assert not any(lat["on_target"] for lat in orin["latency_ms"].values())
    assert orin["latency_ms"] == {
        k: {**v, "on_target": False}
        for k, v in json.loads((ORIN_HERE / "report.json").read_text())["latency_ms"].items()
    }


def test_compare_and_html_take_version_1_run_folders() -> None:
    rows = {
        row[0]: row[1:]
        for row in table([HOST_FAILED, ORIN_HERE], load_runs([HOST_FAILED, ORIN_HERE]))
    }
    assert rows["verdict"] == ["FAILED: latency_budget", "PASSED"]
    assert rows["latency measured"] == ["on the target (this host)", "this host, not the target"]
    html = render_html(load_report(HOST_FAILED))
    assert 'data-json="/gates/records/1/evidence">student_int8 p90 0.011 ms &gt; budget' in html


def test_report_command_upgrades_a_version_1_folder(tmp_path: Path, validator) -> None:
    run = tmp_path / "old"
    shutil.copytree(HOST_FAILED, run)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 3, result.output
    saved = json.loads((run / "report.json").read_text())
    assert saved == load_report(HOST_FAILED) and _errors(validator, saved) == []
    assert failure_line(saved["gates"]) in result.stderr
    assert "- ❌ latency_budget: student_int8 p90 0.011 ms" in (run / "report.md").read_text()


def test_compare_names_the_failed_gates_from_the_records() -> None:
    """Records alone decide: a failed gate whose evidence reads like another gate's line."""
    report = load_report(HOST_FAILED)
    report["gates"]["records"][0].update(status="failed", evidence="kd_gain: 1 pt below")
    report["gates"]["records"][2].update(status="passed")
    (row,) = [r for r in table(["a"], [report]) if r[0] == "verdict"]
    assert row == ["verdict", "FAILED: accuracy_drop, latency_budget"]
    md = render_markdown(report)
    assert "- ❌ accuracy_drop: kd_gain: 1 pt below\n- ❌ latency_budget: " in md
    report["gates"] = {"passed": True, "records": []}
    (row,) = [r for r in table(["a"], [report]) if r[0] == "verdict"]
    assert row == ["verdict", "PASSED"]


def _tiny_onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _latencies(where: str, int8_ms: float) -> dict:
    return {
        "teacher": stats([1.0] * 64, where),
        "student_fp32": stats([0.5] * 64, where),
        "student_int8": stats([int8_ms] * 64, where),
    }


def test_tensorrt_run_here_on_the_target_is_measured_on_the_target(
    tmp_path: Path, validator
) -> None:
    """validate on the device itself: make_runner's TrtRunner (TensorRT installed here) measures
    on the target; ONNX Runtime standing in for the same target does not."""
    orin = load_target("jetson-orin-nano-8gb")
    model = _tiny_onnx(tmp_path / "student_int8.onnx")
    trt = TrtRunner(model, orin, tmp_path / "engines")  # not entered: no engine is built
    latency = {n: placed(s, orin, trt) for n, s in _latencies(TRT_WHERE, 0.25).items()}
    assert all(s.on_target and s.where == TRT_WHERE for s in latency.values())
    acc = {"teacher": 0.99, "student_fp32": 0.98, "student_int8": 0.97}
    gates = gate(orin, acc, latency, "student_int8", 5.0)
    report = load_report(ORIN_HERE)  # a real Orin report, measured afresh on the device
    report["latency_ms"] = {n: s.to_dict() for n, s in latency.items()}
    report["latency_ratio"]["student_int8_vs_fp32"] = 0.5
    report["gates"] = gates.to_dict()
    assert _errors(validator, report) == []
    assert _records(report)[:3] == [
        ("accuracy_drop", "passed", True),
        ("latency_budget", "passed", True),
        ("int8_pays", "passed", True),
    ]
    (row,) = [r for r in table(["orin"], [report]) if r[0] == "latency measured"]
    assert row == ["latency measured", "on the target"]
    assert "this host" not in render_markdown(report)

    with OrtRunner(model) as ort:
        here = {n: placed(s, orin, ort) for n, s in _latencies(ort.where, 0.25).items()}
    assert not any(s.on_target for s in here.values())
    assert all(s.where.endswith("(this host, not jetson-orin-nano-8gb)") for s in here.values())
    stand_in = gate(orin, acc, here, "student_int8", 5.0).to_dict()
    assert [(g["name"], g["status"]) for g in stand_in["records"][1:]] == [
        ("latency_budget", "skipped"),
        ("int8_pays", "skipped"),
    ]


def test_every_gate_record_follows_the_schema(validator) -> None:
    """Records of each status from validate's gate(), in a real report."""
    host = load_target("host-cpu")
    acc = {"teacher": 0.99, "student_fp32": 0.98, "student_int8": 0.90}
    where = "measured: onnxruntime 1.32.0 CPUExecutionProvider, 1 thread(s), AMD EPYC"
    latency = {n: replace(s, on_target=True) for n, s in _latencies(where, 0.75).items()}
    gates = gate(host, acc, latency, "student_int8", 5.0).to_dict()
    assert _records({"gates": gates}) == [
        ("accuracy_drop", "failed", True),
        ("latency_budget", "passed", True),
        ("int8_pays", "failed", True),
    ]
    assert "9.00 pt below, allowed 5 pt" in gates["records"][0]["evidence"]
    assert failure_line(gates).startswith("accuracy_drop: student_int8 90.00 %")
    report = load_report(HOST_FAILED)
    report["gates"] = gates
    assert _errors(validator, report) == []
    for damage in ({"status": "unknown"}, {"measured_on_target": "yes"}, {"evidence": ""}):
        broken = copy.deepcopy(report)
        broken["gates"]["records"][1].update(damage)
        assert _errors(validator, broken), damage
