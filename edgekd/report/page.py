"""The HTML report's page builder: every figure it shows is a value of report.json, rendered with
``data-json``, the JSON pointer (RFC 6901) of that value."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from edgekd.report.schema import MODELS

Formatter = Callable[[Any], str]
FORMATS: dict[str, Formatter] = {
    "pct": lambda v: f"{100 * v:.2f} %",
    "ms": lambda v: f"{v:.3f}",
    "mb": lambda v: f"{v:.3f}",
    "int": lambda v: f"{v:,}",
    "sci": lambda v: f"{v:.2e}",
    "signed": lambda v: f"{v:+.2e}",
    "cos": lambda v: f"{v:.6f}",
    "s": lambda v: f"{v:.1f}",
    "g": lambda v: f"{v:g}",
    "pt": lambda v: f"{v:+.2f}",
    "text": str,
}


def pointer(*parts: str | int) -> str:
    """The JSON pointer (RFC 6901) of a value in the report."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(report: Any, ptr: str) -> Any:
    """The value at JSON pointer ``ptr``."""
    value = report
    for part in ptr.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def has(report: dict[str, Any], *parts: str | int) -> bool:
    try:
        return resolve(report, pointer(*parts)) is not None
    except (KeyError, IndexError, TypeError):
        return False


class Page:
    """Builds the HTML; ``v`` renders one report value with its pointer."""

    def __init__(self, report: dict[str, Any]):
        self.report = report
        self.parts: list[str] = []

    def v(self, kind: str, *path: str | int, tag: str = "span") -> str:
        ptr = pointer(*path)
        value = resolve(self.report, ptr)
        text = "—" if value is None else FORMATS[kind](value)
        cls = ' class="num"' if kind != "text" and tag == "td" else ""
        return f'<{tag}{cls} data-json="{escape(ptr)}">{escape(text)}</{tag}>'

    def td(self, kind: str, *path: str | int) -> str:
        return self.v(kind, *path, tag="td")

    def add(self, *html: str) -> None:
        self.parts.extend(html)

    def table(self, header: Iterable[str] | None, rows: Iterable[Iterable[str]]) -> None:
        """``rows`` of ready-made cells (``td``/``row_label`` strings); header texts escaped."""
        head = "".join(f"<th>{escape(h)}</th>" for h in header or ())
        body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
        thead = f"<thead><tr>{head}</tr></thead>" if head else ""
        self.add(f"<table>{thead}<tbody>{body}</tbody></table>")


def text_cell(s: str, cls: str = "") -> str:
    """A cell of constant text (no report figures in it)."""
    return f"<td{f' class={cls!r}' if cls else ''}>{escape(s)}</td>"


def row_label(s: str) -> str:
    """A row's label: a model, gate or quantity name (no report figures in it)."""
    return f'<th scope="row">{escape(s)}</th>'


def shown_models(report: dict[str, Any]) -> list[str]:
    return [m for m in MODELS if m in report["latency_ms"]]
