"""report.json's version, the models it describes and its JSON Schema."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

MODELS = ("teacher", "student_fp32", "student_int8")
SCHEMA_VERSION = 2  # report.json's "schema_version"; edgekd/schemas/report.schema.json describes it


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of report.json."""
    text = resources.files("edgekd.schemas").joinpath("report.schema.json").read_text()
    return json.loads(text)
