"""The physical latency estimate: roofline + the target's per-inference and per-layer overheads."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_targets import PROFILE, write

from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.models.profile import profile
from edgekd.models.sizing import estimate
from edgekd.models.students import StudentSpec, build_student
from edgekd.roofline import load_cost, overhead_s, roofline
from edgekd.targets import list_targets, load_target

OVERHEAD = """
[overhead]
per_inference_us = 40
per_layer_us = 6
source = "a measurement"
"""


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()
    path = tmp_path_factory.mktemp("estimate") / "fp32.onnx"
    export_onnx(model, torch.randn(1, 1, 16, 16), path)
    return model, path


def test_every_bundled_target_has_sourced_overheads() -> None:
    for target in list_targets():
        o = target.overhead
        assert o is not None and o.per_inference_us > 0 and o.per_layer_us > 0, target.name
        assert o.source.startswith(("measured", "derived")), target.name


def test_estimate_adds_the_overheads_to_the_roofline(student) -> None:
    model, path = student
    cost = load_cost(path)
    assert cost.layers == profile(model, (1, 16, 16)).layers == 7  # 6 convs + the linear head
    for target in list_targets():
        est = roofline(cost, target)
        if est is None:
            continue
        o = target.overhead
        expected = (o.per_inference_us + cost.layers * o.per_layer_us) / 1e3
        assert est["overhead_ms"] == pytest.approx(expected)
        assert est["estimate_ms"] == pytest.approx(est["latency_ms"] + expected)
        assert est["estimate_ms"] > est["latency_ms"]  # above the bare roofline
        assert est["overhead_source"] == o.source
        bare = roofline(cost, replace(target, overhead=None))
        assert bare["estimate_ms"] == bare["latency_ms"] == est["latency_ms"]


def test_tiny_int8_student_on_orin_nano_is_physical(student) -> None:
    """The bare roofline says microseconds; a TensorRT inference never takes less than its
    enqueue, copies and one kernel launch per layer."""
    model, _ = student
    orin = load_target("jetson-orin-nano-8gb")
    _, _, latency = estimate(profile(model, (1, 28, 28)), orin)
    assert latency >= orin.overhead.per_inference_us / 1e3 + 7 * orin.overhead.per_layer_us / 1e3
    assert overhead_s(7, orin) * 1e3 == pytest.approx(latency, rel=0.1)  # overhead-bound


def test_overheads_are_optional_and_validated(tmp_path: Path) -> None:
    assert load_target(write(tmp_path, PROFILE, "plain.toml")).overhead is None
    target = load_target(write(tmp_path, PROFILE + OVERHEAD, "with.toml"))
    assert (target.overhead.per_inference_us, target.overhead.per_layer_us) == (40.0, 6.0)
    for old, new, expected in [
        (
            "per_layer_us = 6",
            "per_layer_us = -6",
            "overhead.per_layer_us must be a positive number",
        ),
        ("per_inference_us = 40", 'per_inference_us = "40"', "overhead.per_inference_us must be"),
        ('source = "a measurement"\n', "", "missing required field overhead.source"),
        ("per_layer_us", "per_op_us", "unknown key(s) overhead.per_op_us"),
    ]:
        path = write(tmp_path, PROFILE + OVERHEAD.replace(old, new), "bad.toml")
        with pytest.raises(BadInput, match=re.escape(expected)) as info:
            load_target(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
