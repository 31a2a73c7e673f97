"""A run folder's report files: ``report.json`` with the Markdown and HTML rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.atomic import write_json, write_text
from edgekd.errors import BadInput
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.read import load_report
from edgekd.run import RunDir


def write_reports(run: RunDir, report: dict[str, Any]) -> None:
    """Write ``report`` as report.json, report.md and report.html, each atomically."""
    write_json(run.report_json, report)
    write_text(run.report_md, render_markdown(report))
    write_text(run.report_html, render_html(report))


def regenerate(run_dir: str | Path) -> dict[str, Any]:
    """Rewrite ``report.md`` and ``report.html`` from a run folder's ``report.json``, and that in
    the current schema version (an older one is converted); return the report."""
    run = RunDir(run_dir)
    report = load_report(run.root)
    try:
        markdown = render_markdown(report)
        html = render_html(report)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(
            f"{run.report_json}: not a readable edgekd report ({type(e).__name__}: {e})"
        ) from None
    write_json(run.report_json, report)
    write_text(run.report_md, markdown)
    write_text(run.report_html, html)
    return report
