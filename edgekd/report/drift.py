"""The drift table of ``edgekd diff`` (fake-quant student vs the runtime, layer by layer): its
columns and rows of text, shared by the CLI, report.md and report.html."""

from __future__ import annotations

from typing import Any

from edgekd.report.page import FORMATS

# (header, key of a drift layer, format in FORMATS); "text" columns align left, the rest right
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("layer", "module", "text"),
    ("op", "op", "text"),
    ("added rel. error", "added_rel_l2", "signed"),
    ("rel. error", "rel_l2", "sci"),
    ("max abs diff", "max_abs_diff", "sci"),
    ("cosine", "cosine", "cos"),
)
HEADER = [header for header, _, _ in COLUMNS]
NUMERIC = [kind != "text" for _, _, kind in COLUMNS]


def top_layers(drift: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index in ``layers``, layer) of the layers that add the most error, most first."""
    index = {layer["module"]: i for i, layer in enumerate(drift["layers"])}
    return [(index[name], drift["layers"][index[name]]) for name in drift["top"]]


def drift_rows(drift: dict[str, Any]) -> list[list[str]]:
    """The top layers' cells as text, one row each in :data:`COLUMNS` order."""
    return [
        [FORMATS[kind](layer[key]) for _, key, kind in COLUMNS] for _, layer in top_layers(drift)
    ]


def drift_summary(drift: dict[str, Any]) -> str:
    """The logits' drift over the compared samples, and whether TensorRT was compared."""
    logits = drift["logits"]
    return (
        f"On {drift['samples']} validation samples ({drift['runtime']}): logits max abs diff "
        f"{FORMATS['sci'](logits['max_abs_diff'])}, top-1 agreement "
        f"{FORMATS['pct'](logits['top1_agreement'])}; TensorRT {drift['tensorrt']}."
    )
