"""End to end: compress on digits, then each stage alone, resume, and a failing gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnx.numpy_helper
import pytest
import torch
from typer.testing import CliRunner

from edgekd.atomic import sha256
from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.pipeline import compress, run_stage


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_options) -> tuple[Path, dict]:
    cfg = CompressConfig(**digits_options, epochs=4, qat_epochs=1, max_accuracy_drop=5.0)
    out = tmp_path_factory.mktemp("runs") / "digits"
    return out, compress(cfg, out)


def test_report_has_the_contracted_fields(run) -> None:
    _, report = run
    for name in ("teacher", "student_fp32", "student_int8"):
        assert 0.0 <= report["accuracy"][name] <= 1.0
        lat = report["latency_ms"][name]
        assert set(lat) == {"p50", "p90", "p99", "mean", "n", "where", "on_target"}
        assert lat["on_target"] is True  # a host target: this machine is the target
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert lat["n"] >= 64
        assert lat["where"].startswith("measured: onnxruntime") and "1 thread" in lat["where"]
    assert 0.0 <= report["agreement"]["student_int8"] <= 1.0
    records = report["gates"]["records"]
    assert report["gates"]["passed"] is True and {g["status"] for g in records} <= {
        "passed",
        "skipped",
    }
    passed = {g["name"]: g for g in records if g["status"] == "passed"}
    assert {"accuracy_drop", "latency_budget"} <= set(passed)
    assert passed["latency_budget"]["measured_on_target"] is True
    assert report["params"]["teacher"] >= 8 * report["params"]["student"]


def test_students_learn_and_int8_tracks_the_teacher(run) -> None:
    _, report = run
    acc = report["accuracy"]
    assert acc["teacher"] > 0.9
    assert acc["student_fp32"] > 0.8 and acc["student_int8"] > 0.8
    assert report["agreement"]["student_int8"] > 0.8
    assert report["export"]["student_int8"]["top1_agreement"] >= 0.98


def test_artifacts_are_valid_and_fingerprinted(run) -> None:
    out, report = run
    for name in ("teacher", "student_fp32", "student_int8"):
        onnx.checker.check_model(onnx.load(out / f"{name}.onnx"), full_check=True)
    ops = {n.op_type for n in onnx.load(out / "student_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["epochs"] == 4
    for rel, entry in manifest["artifacts"].items():
        assert sha256(out / rel) == entry["sha256"], rel
    for name in ("student.pt", "student_qat.pt", "report.json", "report.md", "student_int8.onnx"):
        assert name in manifest["artifacts"]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.ckpt"))
    torch.load(out / "student_qat.pt", weights_only=True)
    md = (out / "report.md").read_text()
    assert "PASSED" in md and "student_int8" in md and "measured: onnxruntime" in md


def test_validate_alone_reproduces_accuracy(run) -> None:
    out, report = run
    again = run_stage("validate", out)
    assert again["accuracy"] == report["accuracy"]


def test_export_alone_rewrites_the_same_models(run) -> None:
    out, _ = run
    before = sha256(out / "student_int8.onnx")
    run_stage("export", out)
    assert sha256(out / "student_int8.onnx") == before


def test_report_command_rewrites_the_markdown(run) -> None:
    out, _ = run
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text() == before


def test_resume_skips_finished_stages(run) -> None:
    out, _ = run
    cfg = CompressConfig(**json.loads((out / "config.json").read_text()))
    stamp = (out / "student.pt").stat().st_mtime_ns
    compress(cfg, out, resume=True)
    assert (out / "student.pt").stat().st_mtime_ns == stamp


def test_latency_budget_gate_exits_3(run, tmp_path: Path, fast_target: Path) -> None:
    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tight = tmp_path / "tight.toml"
    tight.write_text(
        fast_target.read_text().replace("p90_latency_ms = 5.0", "p90_latency_ms = 0.00001")
    )
    config = json.loads((copy / "config.json").read_text())
    config["target"] = str(tight)
    (copy / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["validate", str(copy), "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout.splitlines()[0])
    assert summary["gates"]["passed"] is False
    failed = [g for g in summary["gates"]["records"] if g["status"] == "failed"]
    assert [g["name"] for g in failed] == ["latency_budget"]
    assert "budget 1e-05 ms" in failed[0]["evidence"]
    report = json.loads((copy / "report.json").read_text())
    assert report["gates"] == summary["gates"]
    assert f"latency_budget: {failed[0]['evidence']}" in result.stderr


def _with_config(run: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **changes}))
    return copy


def test_int8_gate_follows_the_measured_latencies(run, tmp_path: Path) -> None:
    out, _ = run
    skipped = {g["name"]: g for g in run[1]["gates"]["records"] if g["status"] == "skipped"}
    assert skipped["int8_pays"]["evidence"] == "not required (--allow-slower-int8)"
    report = run_stage("validate", _with_config(out, tmp_path, int8_must_pay=True))
    records, p90 = (
        report["gates"]["records"],
        {k: v["p90"] for k, v in report["latency_ms"].items()},
    )
    (int8,) = [g for g in records if g["name"] == "int8_pays"]
    # an 8x8 digits student may well be slower in INT8: the gate must say so exactly then
    slower = p90["student_int8"] >= p90["student_fp32"]
    assert int8["status"] == ("failed" if slower else "passed")
    failed = [g["name"] for g in records if g["status"] == "failed"]
    assert failed == (["int8_pays"] if slower else [])


def test_int8_slower_than_float_exits_3(run, tmp_path: Path) -> None:
    copy = _with_config(run[0], tmp_path, int8_must_pay=True)
    # an "INT8" artifact that is the much larger teacher: accurate, and surely slower
    shutil.copy(copy / "teacher.onnx", copy / "student_int8.onnx")
    result = CliRunner().invoke(app, ["validate", str(copy), "--json"])
    assert result.exit_code == 3, result.output
    records = json.loads(result.stdout.splitlines()[0])["gates"]["records"]
    failed = [g["name"] for g in records if g["status"] == "failed"]
    assert "int8_pays" in failed, records
    assert "not faster than its float twin" in result.output


def _fast_copy(name: str, tmp_path: Path) -> Path:
    """A bundled device profile with a short latency method, as a user file."""
    text = (Path(__file__).parents[1] / "targets" / f"{name}.toml").read_text()
    text = (
        text.split("[latency]")[0]
        + "[latency]\nwarmup = 2\nmin_queries = 64\nmin_duration_s = 0.01\nthreads = 1\n"
    )
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_tensorrt_target_gets_symmetric_qdq_and_an_unchecked_latency_gate(
    tmp_path: Path, digits_options: dict
) -> None:
    target = _fast_copy("jetson-orin-nano-8gb", tmp_path)
    options = {**digits_options, "target": str(target)}
    report = compress(
        CompressConfig(**options, epochs=1, qat_epochs=1, max_accuracy_drop=100.0),
        tmp_path / "orin",
    )
    assert report["quantization"]["scheme"] == "tensorrt"
    graph = onnx.load(tmp_path / "orin" / "student_int8.onnx").graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    zero_points = [
        inits[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    ]
    assert zero_points and all((z == 0).all() for z in zero_points)
    gates = [(g["name"], g["status"], g["measured_on_target"]) for g in report["gates"]["records"]]
    assert gates == [
        ("accuracy_drop", "passed", False),
        ("latency_budget", "skipped", False),
        ("int8_pays", "skipped", False),
        ("tensorrt_qdq_lint", "passed", None),
    ]
    assert report["export"]["tensorrt_lint"] == []  # edgekd's own export passes its linter
    assert all(
        "this host, not jetson-orin-nano-8gb" in v["where"] and v["on_target"] is False
        for v in report["latency_ms"].values()
    )


def test_fp16_only_target_ships_no_int8_model(tmp_path: Path, digits_options: dict) -> None:
    target = _fast_copy("jetson-nano", tmp_path)
    options = {**digits_options, "target": str(target)}
    report = compress(
        CompressConfig(**options, epochs=1, max_accuracy_drop=100.0), tmp_path / "nano"
    )
    assert report["accuracy"]["student_int8"] is None
    assert report["student"]["deployed"] == "student_fp32"
    assert not (tmp_path / "nano" / "student_int8.onnx").exists()
    assert not (tmp_path / "nano" / "student_qat.pt").exists()
    assert "student_int8" not in (tmp_path / "nano" / "report.md").read_text()


def _teacher_file(fmt: str, digits_options: dict, tmp_path: Path) -> str:
    """The digits teacher saved as TorchScript, torch.export .pt2 or ONNX."""
    from edgekd.models.teacher import load_model

    model = load_model(digits_options["teacher"], digits_options["weights"])
    x = torch.zeros(2, 1, 8, 8)
    if fmt == "torchscript":
        path = tmp_path / "teacher.ts"
        torch.jit.trace(model, x).save(str(path))
    elif fmt == "pt2":
        path = tmp_path / "teacher.pt2"
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: batch},)), str(path))
    else:
        from edgekd.export.onnx_export import export_onnx

        path = tmp_path / "teacher.onnx"
        export_onnx(model, x, path)
    return str(path)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_teacher_formats_run_end_to_end(fmt: str, tmp_path: Path, digits_options: dict) -> None:
    teacher = _teacher_file(fmt, digits_options, tmp_path)
    options = {**digits_options, "teacher": teacher, "weights": None}
    report = compress(
        CompressConfig(**options, epochs=1, qat_epochs=0, max_accuracy_drop=100.0), tmp_path / "run"
    )
    assert report["accuracy"]["teacher"] > 0.9  # the teacher's own ONNX export, run by ORT
    onnx.checker.check_model(onnx.load(tmp_path / "run" / "teacher.onnx"))
    assert report["params"]["teacher"] > 200_000


def test_mobile_target_gets_an_ort_format_model(tmp_path: Path, digits_options: dict) -> None:
    target = _fast_copy("raspberry-pi-5", tmp_path)
    options = {**digits_options, "target": str(target)}
    report = compress(
        CompressConfig(**options, epochs=1, qat_epochs=0, max_accuracy_drop=100.0), tmp_path / "pi"
    )
    ort_file = tmp_path / "pi" / "student_int8.ort"
    assert (
        ort_file.exists() and ort_file.read_bytes()[4:8] == b"ORTM"
    )  # ORT format's file identifier
    parity = report["export"]["student_int8_ort"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-3
    manifest = json.loads((tmp_path / "pi" / "manifest.json").read_text())
    assert manifest["artifacts"]["student_int8.ort"]["sha256"] == sha256(ort_file)
