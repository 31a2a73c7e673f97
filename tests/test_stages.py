"""The stage table (edgekd.pipeline.stages) says what each stage writes: checked against a real
run of every stage on digits, file by file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.config import CompressConfig
from edgekd.pipeline import (
    FIRST_STAGE,
    PLANNED,
    STAGES,
    open_run,
    run_in,
    stage_done,
    stage_started,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``, with what changes when it is written again (atomic writes
    rename a new file into place)."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {name for name, stamp in after.items() if before.get(name) != stamp}


def test_each_stage_writes_exactly_its_declared_outputs(tmp_path: Path, digits_options) -> None:
    cfg = CompressConfig(
        **digits_options, epochs=1, qat_epochs=1, max_accuracy_drop=100.0, sensitivity=False,
        baseline=True,  # the optional outputs too
    )  # fmt: skip
    out = tmp_path / "run"
    ctx = open_run(cfg, out)
    assert set(_files(out)) == set(PLANNED)
    for name, stage in STAGES.items():
        assert not stage_started(ctx, name) and not stage_done(ctx, name)
        before = _files(out)
        run_in(ctx, name)
        declared = {str(p.relative_to(out)) for p in stage.writes(ctx)}
        assert _written(before, _files(out)) == declared, name
        assert set(stage.optional) & declared or not stage.optional, name  # they were written
        assert stage_done(ctx, name) == stage_started(ctx, name) == (not stage.remeasured)


def test_each_stage_reads_what_plan_or_an_earlier_stage_wrote() -> None:
    written = set(PLANNED)
    for name, stage in STAGES.items():
        # logs/drift.json: from `edgekd diff`, which the report includes when it is there
        assert set(stage.inputs) - {"logs/drift.json"} <= written, name
        written |= {*stage.outputs, *stage.optional}


def test_what_a_resume_may_change_is_a_stage_setting() -> None:
    assert FIRST_STAGE["qat_epochs"] == "quantize" and FIRST_STAGE["min_kd_gain"] == "validate"
    assert set(FIRST_STAGE.values()) <= {*STAGES, None}
