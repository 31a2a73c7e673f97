"""``edgekd compare``: runs side by side, true to each report.json; clear errors."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app

runner = CliRunner()


def _rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    assert set(lines[1]) <= set("|-:")
    return {row[0]: row[1:] for row in [cells[0], *cells[2:]]}


def test_compare_puts_two_runs_side_by_side(digits_run: Path, fp16_run: Path, tmp_path) -> None:
    md, html = tmp_path / "cmp.md", tmp_path / "cmp.html"
    result = runner.invoke(
        app, ["compare", str(digits_run), str(fp16_run), "--md", str(md), "--html", str(html)]
    )
    assert result.exit_code == 0, result.output
    assert md.read_text() == result.stdout
    rows = _rows(result.stdout)
    assert rows[""] == [str(digits_run), str(fp16_run)]
    reports = [json.loads((run / "report.json").read_text()) for run in (digits_run, fp16_run)]
    for i, r in enumerate(reports):
        assert rows["target"][i] == f"`{r['target']['name']}`"
        assert rows["deployed"][i] == r["student"]["deployed"]
        assert rows["verdict"][i] == ("PASSED" if r["gates"]["passed"] else "FAILED")
        for m in ("teacher", "student_fp32", "student_int8"):
            acc = r["accuracy"][m]
            assert rows[f"accuracy {m}"][i] == ("—" if acc is None else f"{100 * acc:.2f} %")
            lat = r["latency_ms"].get(m)
            assert rows[f"p90 ms {m}"][i] == ("—" if lat is None else f"{lat['p90']:.3f}")
            mb = r["model_mb"].get(m)
            assert rows[f"file MB {m}"][i] == ("—" if mb is None else f"{mb:.3f}")
        assert rows["params student"][i] == f"{r['params']['student']:,}"
    assert rows["runtime, precision"] == ["onnxruntime, int8", "tensorrt, fp16"]
    assert rows["latency measured"] == ["on the target (this host)", "this host, not the target"]

    parser = HTMLParser()
    parser.feed(html.read_text())
    parser.close()
    assert "<table>" in html.read_text() and str(fp16_run) in html.read_text()


@pytest.mark.parametrize("case", ["not_a_run", "one_run"])
def test_compare_refuses_a_folder_without_report(digits_run: Path, tmp_path, case) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(digits_run), str(empty)] if case == "not_a_run" else [str(digits_run)]
    result = runner.invoke(app, ["compare", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: ")
    assert ("no report.json" in lines[0]) if case == "not_a_run" else ("two" in lines[0])
