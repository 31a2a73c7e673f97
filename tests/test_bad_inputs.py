"""The fast cases of bench/bad_inputs.py (the same table), each a real ``edgekd`` subprocess:
exit 2, exactly one ``edgekd: error:`` line, no traceback, the folder and ``--out`` as they were."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "bench" / "bad_inputs.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_bad_inputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
FAST = [c for c in bench.CASES if c.fast]


def test_the_table_covers_the_issue_and_at_least_40_cases() -> None:
    names = {c.name for c in bench.CASES}
    assert len(names) == len(bench.CASES) >= 40
    for must in ("--lr nan", "--lr inf", "--temperature nan", "--max-accuracy-drop nan",
                 "--config lr = nan", "--out names a file", "--out read-only (/proc)",
                 "manifest: negative index", "manifest: float index", "manifest: string index",
                 "teacher factory raises", "student factory raises",
                 "--config deeply nested array", "target: deeply nested array"):  # fmt: skip
        assert must in names, must


@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path) -> None:
    outcome = bench.run_case(case, tmp_path / "cache")
    assert outcome.exit_code == 2, outcome.stderr
    assert outcome.one_line, outcome.stderr
    assert outcome.clean, f"{case.name}: the folder or --out changed"
