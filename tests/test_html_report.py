"""report.html: parses, embeds its images, and shows exactly the figures of report.json."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.report.html import render_html
from edgekd.report.page import resolve
from edgekd.report.schema import load_schema

RUNS = ["digits_run", "fp16_run"]
PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"img", "meta", "br", "hr", "link", "input", "col", "wbr", "source"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self, skip=lambda n: False) -> str:
        return "".join(
            c if isinstance(c, str) else ("" if skip(c) else c.text(skip)) for c in self.children
        )

    def walk(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()


class TreeBuilder(HTMLParser):
    """A strict little DOM: every non-void element must be closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


@pytest.fixture(scope="module", params=RUNS)
def page(request) -> tuple[dict, str, Node]:
    run = request.getfixturevalue(request.param)
    html = (run / "report.html").read_text()
    return json.loads((run / "report.json").read_text()), html, parse(html)


NUMBER = re.compile(r"([+-]?[\d,]*\.?\d+(?:e([+-]\d+))?)( %)?")


def _shows(text: str, value) -> bool:
    """Whether ``text`` shows ``value`` as rounded for display (percent for fractions)."""
    if value is None:
        return text == "—"
    if isinstance(value, str):
        return text == value
    m = NUMBER.fullmatch(text)
    assert m, f"{text!r} is not a number"
    mantissa = m[1].split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(m[2]) if m[2] else 0
    expected = 100 * value if m[3] else value
    return abs(float(m[1].replace(",", "")) - expected) <= 0.5 * 10 ** (exponent - decimals) * 1.001


def test_html_is_self_contained_with_embedded_pngs(page) -> None:
    report, html, root = page
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)
    assert not any(n.tag in ("link", "script", "iframe") for n in root.walk())
    images = [n for n in root.walk() if n.tag == "img"]
    # accuracy vs latency, latency CDF, per class, size, training curves
    assert len(images) == 5
    for img in images:
        src = img.attrs["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG) and len(data) > 2000 and img.attrs["alt"]


def test_verdict_comes_first(page) -> None:
    report, _, root = page
    body = next(n for n in root.walk() if n.tag == "body")
    first = next(c for c in body.children if isinstance(c, Node))
    verdict = "PASSED" if report["gates"]["passed"] else "FAILED"
    assert (
        first.tag == "section"
        and ("pass" if report["gates"]["passed"] else "fail") in (first.attrs["class"])
    )
    assert first.text().split()[0] == verdict
    rows = [n for n in first.walk() if n.tag == "tr"][1:]
    records = report["gates"]["records"]
    assert [r.children[0].text() for r in rows] == [g["name"] for g in records]
    shown = {"passed": "passed", "failed": "failed", "skipped": "not checked"}
    assert [r.children[1].text() for r in rows] == [shown[g["status"]] for g in records]


def test_every_figure_shown_equals_report_json(page) -> None:
    report, _, root = page
    shown = [n for n in root.walk() if "data-json" in n.attrs]
    assert len(shown) > 60
    for node in shown:
        value = resolve(report, node.attrs["data-json"])
        assert _shows(node.text().strip(), value), (node.attrs["data-json"], node.text(), value)
    pointers = {n.attrs["data-json"] for n in shown}
    for model in report["latency_ms"]:
        for key in ("p50", "p90", "p99", "mean", "n"):
            assert f"/latency_ms/{model}/{key}" in pointers
        assert f"/accuracy/{model}" in pointers and f"/model_mb/{model}" in pointers


def test_no_figure_in_a_table_or_list_comes_from_elsewhere(page) -> None:
    """Every digit in a table cell or list item lies inside an element tied to report.json
    (or is an identifier in <code>, or p50/p90/p99)."""
    _, _, root = page

    def tied(n: Node) -> bool:
        return "data-json" in n.attrs or n.tag == "code"

    for node in root.walk():
        if node.tag in ("td", "li") and not tied(node):
            loose = re.sub(r"\bp(50|90|99)\b", "", node.text(skip=tied))  # quantity names
            assert not re.search(r"\d", loose), f"<{node.tag}> shows {loose!r}"


def test_plots_name_the_figures_they_draw(page) -> None:
    report, _, root = page
    figures = [n for n in root.walk() if n.tag == "figure"]
    assert len(figures) == 5
    for fig in figures:
        sources = fig.attrs["data-sources"].split()
        assert sources
        for ptr in sources:
            assert resolve(report, ptr) is not None, ptr


def test_new_sections_are_consistent(page, digits_npz: Path) -> None:
    """Per-class accuracy averages back to the accuracy; quantiles bracket p50/p90/p99."""
    report, _, _ = page
    with np.load(digits_npz) as z:
        counts = np.bincount(z["y_val"], minlength=10)
    pc = report["per_class_accuracy"]
    assert len(pc["classes"]) == report["data"]["classes"] == len(counts)
    for model in report["latency_ms"]:
        mean = sum(a * n for a, n in zip(pc[model], counts, strict=True)) / counts.sum()
        assert mean == pytest.approx(report["accuracy"][model], abs=1e-9)
    q = report["latency_quantiles"]
    for model, values in q["ms"].items():
        assert len(values) == len(q["percentiles"]) and values == sorted(values)
        at = dict(zip(q["percentiles"], values, strict=True))
        for p in (50, 90, 99):
            assert at[p] == pytest.approx(report["latency_ms"][model][f"p{p}"], abs=1e-5)


def test_report_command_rewrites_html_identically(digits_run: Path, tmp_path: Path) -> None:
    copy_ = tmp_path / "run"
    copy_.mkdir()
    shutil.copy(digits_run / "report.json", copy_)
    result = CliRunner().invoke(app, ["report", str(copy_)])
    assert result.exit_code == 0, result.output
    assert (copy_ / "report.html").read_text() == (digits_run / "report.html").read_text()
    assert not list(copy_.glob(".*.tmp"))


def test_older_report_without_the_new_sections_still_renders(digits_run: Path) -> None:
    import jsonschema

    report = copy.deepcopy(json.loads((digits_run / "report.json").read_text()))
    for key in ("per_class_accuracy", "latency_quantiles", "config"):
        del report[key]
    for key in ("max_params", "max_model_mb", "max_memory_mb"):
        del report["target"][key]
    jsonschema.validate(report, load_schema())
    root = parse(render_html(report))
    assert len([n for n in root.walk() if n.tag == "img"]) == 3
    assert "rerun edgekd validate" in root.text()


def _browser() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


@pytest.mark.skipif(_browser() is None, reason="chromium is not installed (Debian: chromium)")
def test_headless_chromium_renders_a_page_that_is_not_blank(digits_run: Path, tmp_path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    subprocess.run(
        [_browser(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1100,1600",
         (digits_run / "report.html").resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 100
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "the screenshot is blank"
    assert (image.std(axis=(0, 1)) > 10).all()
