"""report.json against its committed JSON Schema; report.md regenerated from it and true to it."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from engine_layers import HALF_GEMM, INT8_CONV

from edgekd.errors import BadInput
from edgekd.report.files import regenerate
from edgekd.report.markdown import render_markdown
from edgekd.report.schema import MODELS, SCHEMA_VERSION, load_schema

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "runs" / "example" / "report.json"


@pytest.fixture(scope="module")
def validator():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, report: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(report)
    ]


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def test_schema_is_versioned() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f":{SCHEMA_VERSION}")
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert schema["additionalProperties"] is False
    optional = {"wall_seconds", "drift", "per_class_accuracy", "latency_quantiles", "config"}
    optional.add("engines")  # remote validate on a TensorRT target only
    optional.add("distillation_gain")  # --baseline runs only
    assert set(schema["required"]) == set(schema["properties"]) - optional


def test_digits_report_follows_the_schema(digits_run: Path, validator) -> None:
    report = _report(digits_run)
    assert _errors(validator, report) == []
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["student"]["deployed"] == "student_int8" and "wall_seconds" in report


def test_fp16_only_report_follows_the_schema(fp16_run: Path, validator) -> None:
    report = _report(fp16_run)
    assert _errors(validator, report) == []
    assert report["accuracy"]["student_int8"] is None
    assert "student_int8" not in report["latency_ms"]


def test_example_report_follows_the_schema(validator) -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} not present (made by running the bundled example)")
    assert _errors(validator, json.loads(EXAMPLE.read_text())) == []


def test_documented_example_report_is_current(validator) -> None:
    """docs/example-report/ holds the bundled example's reports in this schema version."""
    docs = ROOT / "docs" / "example-report"
    report = json.loads((docs / "report.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION and _errors(validator, report) == []
    assert (docs / "report.md").read_text() == render_markdown(report)


def _missing(r: dict) -> None:
    del r["gates"]


def _renamed(r: dict) -> None:
    r["latency"] = r.pop("latency_ms")


def _renamed_inner(r: dict) -> None:
    r["latency_ms"]["teacher"]["p95"] = r["latency_ms"]["teacher"].pop("p90")


def _percent(r: dict) -> None:
    r["accuracy"]["student_fp32"] = 1.5


def _few_queries(r: dict) -> None:
    r["latency_ms"]["student_int8"]["n"] = 10


def _unsaid_where(r: dict) -> None:
    r["latency_ms"]["teacher"]["where"] = "onnxruntime"


def _int8_without_accuracy(r: dict) -> None:
    r["accuracy"]["student_int8"] = None


def _passed_with_failures(r: dict) -> None:
    r["gates"]["records"][0]["status"] = "failed"


def _prose_gates(r: dict) -> None:
    r["gates"] = {"passed": True, "checked": ["accuracy_drop"], "failed": [], "skipped": []}


def _gate_without_place(r: dict) -> None:
    del r["gates"]["records"][0]["measured_on_target"]


def _two_line_evidence(r: dict) -> None:
    r["gates"]["records"][0]["evidence"] += "\nand more"


def _latency_without_place(r: dict) -> None:
    del r["latency_ms"]["teacher"]["on_target"]


def _zero_params(r: dict) -> None:
    r["params"]["student"] = 0


def _other_version(r: dict) -> None:
    r["schema_version"] = 1


@pytest.mark.parametrize(
    "damage",
    [
        _missing,
        _renamed,
        _renamed_inner,
        _percent,
        _few_queries,
        _unsaid_where,
        _int8_without_accuracy,
        _passed_with_failures,
        _prose_gates,
        _gate_without_place,
        _two_line_evidence,
        _latency_without_place,
        _zero_params,
        _other_version,
    ],
)
def test_schema_rejects_a_damaged_report(digits_run: Path, validator, damage) -> None:
    report = copy.deepcopy(_report(digits_run))
    damage(report)
    assert _errors(validator, report), f"{damage.__name__} was accepted"


def _copy_reports(run: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("report.json", "report.md"):
        shutil.copy(run / name, dest / name)
    return dest


def test_regenerate_rewrites_report_md_identically(digits_run: Path, tmp_path: Path) -> None:
    copy_ = _copy_reports(digits_run, tmp_path / "run")
    original = (copy_ / "report.md").read_text()
    (copy_ / "report.md").unlink()
    report = regenerate(copy_)
    assert report == _report(digits_run)
    assert (copy_ / "report.md").read_text() == original
    assert not list(copy_.glob("*.tmp"))


def test_regenerate_needs_a_readable_report_json(digits_run: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="report.json is missing") as e:
        regenerate(tmp_path)
    assert "\n" not in str(e.value)
    copy_ = _copy_reports(digits_run, tmp_path / "run")
    for text in ("{not json", "[]", *(f'{{"schema_version": {v}}}' for v in (1, 2, 99))):
        (copy_ / "report.json").write_text(text)
        with pytest.raises(BadInput) as e:
            regenerate(copy_)
        assert "\n" not in str(e.value) and "report.json" in str(e.value)
    assert (copy_ / "report.md").read_text() == (digits_run / "report.md").read_text()


def _table(markdown: str) -> dict[str, dict[str, str]]:
    """The model table (the first) of report.md as {model: {column: cell}}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells, strict=True))
        for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows[2:])
    }


def _num(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix(" %"))


@pytest.mark.parametrize("which", ["digits_run", "fp16_run"])
def test_markdown_says_what_the_json_says(which: str, request) -> None:
    run = request.getfixturevalue(which)
    report = _report(run)
    md = (run / "report.md").read_text()
    verdict = "PASSED" if report["gates"]["passed"] else "FAILED"
    assert md.splitlines()[0] == (
        f"## edgekd: {report['student']['label']} for `{report['target']['name']}` — {verdict}"
    )
    table = _table(md)
    assert list(table) == [m for m in MODELS if m in report["latency_ms"]]
    for name, row in table.items():
        assert _num(row["accuracy"]) == pytest.approx(100 * report["accuracy"][name], abs=0.005)
        if name != "teacher":
            agree = _num(row["agreement with teacher"])
            assert agree == pytest.approx(100 * report["agreement"][name], abs=0.005)
        params = report["params"]["teacher" if name == "teacher" else "student"]
        assert _num(row["params"]) == params
        assert _num(row["file MB"]) == pytest.approx(report["model_mb"][name], abs=5e-4)
        for q in ("p50", "p90", "p99"):
            assert _num(row[f"{q} ms"]) == pytest.approx(report["latency_ms"][name][q], abs=5e-4)
    n = min(lat["n"] for lat in report["latency_ms"].values())
    assert re.search(rf"\b{n}\+ timed queries", md)
    assert f"{report['data']['val_samples']:,} validation samples" in md


def test_markdown_is_short_enough_for_a_pull_request_comment(digits_run: Path) -> None:
    """The verdict and one table in view; the quantization details folded below them."""
    md = (digits_run / "report.md").read_text()
    shown, folded = md.split("<details><summary>Quantization details</summary>")
    assert shown.count("\n|---") == 1  # one table: the models
    assert "### Quantization" not in shown and "### Quantization" in folded
    assert folded.rstrip().endswith("</details>")
    assert len(shown.splitlines()) <= 20


def test_engines_built_on_the_device_reach_every_report(digits_run: Path, validator) -> None:
    """A remote validate on a TensorRT target adds the device's engine builds (as the remote
    runner returns them); the schema takes them, report.md and report.html show their figures."""
    from dataclasses import asdict

    from edgekd.export.tensorrt import for_target, int8_coverage
    from edgekd.report.html import render_html
    from edgekd.targets import load_target

    layers = {"Layers": [INT8_CONV, HALF_GEMM]}  # engine_layers: an INT8 conv, an FP16 gemm
    report = _report(digits_run)
    report["engines"] = {
        "student_int8": {
            "tensorrt": "10.3.0", "strongly_typed": True, "build_seconds": 12.25,
            "engine": "student_int8.engine", "log": "student_int8.engine.log",
            "layers": "student_int8.engine.layers.json",
            "config": asdict(for_target(load_target("jetson-orin-nano-8gb"))),
            "int8_coverage": int8_coverage(layers),
        }
    }  # fmt: skip
    assert _errors(validator, report) == []
    md = render_markdown(report)
    assert (
        "TensorRT engine for student_int8, built on the device: TensorRT 10.3.0, 12.2 s, "
        "1 of 2 compute layers INT8 (50.0 %)."
    ) in md.split("<details>")[0]
    html = render_html(report)
    for pointer, shown in [
        ("/engines/student_int8/tensorrt", "10.3.0"),
        ("/engines/student_int8/int8_coverage/coverage", "50.00 %"),
        ("/engines/student_int8/int8_coverage/compute_layers", "2"),
    ]:
        assert f'data-json="{pointer}">{shown}<' in html
    broken = copy.deepcopy(report)
    broken["engines"]["student_int8"]["int8_coverage"]["coverage"] = 1.5
    assert _errors(validator, broken)
