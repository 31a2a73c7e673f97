"""The student zoo: every family builds for the data, sizing picks sane students per target."""

from __future__ import annotations

from dataclasses import replace

import corpus
import pytest
import torch
from torch import nn

from edgekd.errors import BadInput
from edgekd.models import students
from edgekd.models.profile import profile
from edgekd.models.sizing import check_student, size_student
from edgekd.models.students import FAMILIES, StudentSpec, build_student, get_family
from edgekd.targets import load_target

pytestmark = pytest.mark.zoo  # the families from torchvision and timm run where they import

# torchvision's resnet18 with 10 classes (checked against the real one below when it imports)
RESNET18_PARAMS = 11_181_642
RESNET18_MACS = {32: 37_016_576, 224: 1_813_566_464}
TARGETS = ("host-cpu", "jetson-orin-nano-8gb", "android-snapdragon-8gen3")


def _needs(family: str) -> None:
    missing = students.unavailable().get(family)
    if missing:
        pytest.skip(f"{family}: {missing}")


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_family_builds_for_the_data(family: str, channels: int) -> None:
    _needs(family)
    fam = FAMILIES[family]
    sizes = []
    for width in (fam.widths[0], fam.widths[len(fam.widths) // 2]):
        torch.manual_seed(0)
        model = build_student(StudentSpec(family, width, fam.depths[-1]), channels, 10).eval()
        with torch.no_grad():
            out = model(torch.randn(2, channels, 32, 32))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == channels
        sizes.append(sum(p.numel() for p in model.parameters()))
    assert sizes[0] < sizes[1]  # the width multiplier scales the network


def test_activations_match_the_int8_flags() -> None:
    """A family flagged INT8-friendly for every scheme uses only ReLU/ReLU6; hardswish is not."""
    for name in students.available():
        fam = FAMILIES[name]
        model = build_student(StudentSpec(name, fam.widths[0], fam.depths[0]), 3, 10)
        acts = {type(m).__name__ for m in model.modules()}
        if fam.int8_schemes == students.INT8_ALL:
            assert not acts & {"Hardswish", "SiLU", "GELU", "Hardsigmoid"}, (name, acts)
        else:
            assert acts & {"Hardswish", "Hardsigmoid"}, (name, acts)
            assert not fam.int8_friendly("tensorrt") and not fam.int8_friendly("qnn")


def test_unknown_and_unavailable_families_are_bad_input(monkeypatch) -> None:
    with pytest.raises(BadInput, match="unknown student family 'vgg'"):
        get_family("vgg")
    monkeypatch.setattr(students, "_import_error", lambda m: f"{m} does not import (test)")
    assert set(students.unavailable()) == set(FAMILIES) - {"convnet"}
    with pytest.raises(BadInput, match="'mobilenet_v2' is unavailable: torchvision does not"):
        get_family("mobilenet_v2")


def test_without_the_zoo_sizing_falls_back_to_convnet_and_says_why(monkeypatch) -> None:
    monkeypatch.setattr(students, "_import_error", lambda m: f"{m} does not import (test)")
    decision = size_student(
        load_target("host-cpu"), (3, 32, 32), 10, RESNET18_PARAMS,
        family="auto", teacher_macs=RESNET18_MACS[32],
    )  # fmt: skip
    record = decision.to_dict()
    assert record["family"] == "convnet" and record["families"] == ["convnet"]
    assert record["unavailable"]["mobilenet_v2"] == "torchvision does not import (test)"
    assert any("unavailable here" in r and "timm does not import" in r for r in record["reasons"])


@pytest.mark.skipif(not corpus.has("torchvision"), reason="torchvision does not import")
def test_teacher_constants_are_resnet18() -> None:
    teacher = corpus.build("resnet18")
    for size, macs in RESNET18_MACS.items():
        prof = profile(teacher, (3, size, size))
        assert (prof.params, prof.macs) == (RESNET18_PARAMS, macs)


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("name", TARGETS)
def test_sizing_picks_a_sane_student(name: str, size: int) -> None:
    target = load_target(name)
    teacher_macs = RESNET18_MACS[size]
    decision = size_student(
        target, (3, size, size), 10, RESNET18_PARAMS, family="auto", teacher_macs=teacher_macs
    )
    c = decision.chosen
    assert not c.violations
    assert c.macs <= teacher_macs and c.params <= RESNET18_PARAMS / 8
    assert c.params <= target.budgets.max_params and c.model_mb <= target.budgets.max_model_mb
    # target-derived bounds: the arithmetic alone fits the p90 budget at the datasheet peak, and
    # the estimate (roofline + overheads) does too
    assert 2 * c.macs / target.peak_ops_per_s("int8") * 1e3 <= target.budgets.p90_latency_ms
    assert c.roofline_ms < c.latency_ms <= target.budgets.p90_latency_ms
    assert c.overhead_ms > 0 and c.layers > 0
    if size == 224:
        assert c.macs < 1e9  # never a multi-GMAC network for an edge device
    if len(decision.families) > 1:
        assert FAMILIES[c.spec.family].proven  # a published architecture beats the own convnet
    if target.quant_scheme in ("tensorrt", "qnn"):
        assert c.int8_friendly
    record = decision.to_dict()
    assert record["considered"] == len(record["candidates"]) >= record["feasible"] > 0
    assert record["max_macs"] == teacher_macs
    assert record["estimate"]["latency_ms"] == c.latency_ms


def test_mac_budget_keeps_convnet_below_the_teacher() -> None:
    """Counting parameters alone, a 32x32 convnet can outweigh ResNet-18 in MACs."""
    target = load_target("host-cpu")
    by_params = size_student(target, (3, 32, 32), 10, RESNET18_PARAMS).chosen
    both = size_student(
        target, (3, 32, 32), 10, RESNET18_PARAMS, teacher_macs=RESNET18_MACS[32]
    ).chosen
    assert by_params.macs > RESNET18_MACS[32]  # what the MAC budget is for
    assert both.macs <= RESNET18_MACS[32]


def test_tensorrt_prefers_int8_friendly_families() -> None:
    _needs("mobilenet_v3_small")
    target = load_target("jetson-orin-nano-8gb")
    decision = size_student(
        target, (3, 224, 224), 10, RESNET18_PARAMS, family="auto",
        teacher_macs=RESNET18_MACS[224],
    )  # fmt: skip
    v3 = [c for c in decision.candidates if c.spec.family == "mobilenet_v3_small"]
    assert v3 and not any(c.int8_friendly for c in v3)
    assert decision.chosen.int8_friendly
    only_v3 = size_student(
        target, (3, 224, 224), 10, RESNET18_PARAMS, family="mobilenet_v3_small",
        teacher_macs=RESNET18_MACS[224],
    )  # fmt: skip
    assert any("hardswish has no integer kernel" in r for r in only_v3.reasons)


def test_user_student_is_checked_against_the_budgets() -> None:
    target = load_target("host-cpu")
    big = build_student(StudentSpec("convnet", 4.0, 2.0), 3, 10)
    record = check_student(
        big, "big.py:make", target, (3, 64, 64), RESNET18_PARAMS, teacher_macs=10_000_000
    )
    assert record["student"] == "user: big.py:make"
    assert {"params", "macs", "model_mb", "latency_ms"} <= set(record["estimate"])
    assert any("params" in w for w in record["warnings"])
    assert any("MACs" in w and "> 10,000,000" in w for w in record["warnings"])
    assert all(w.startswith("--student big.py:make: ") for w in record["warnings"])
    small = build_student(StudentSpec("convnet", 0.25, 0.5), 3, 10)
    ok = check_student(small, "small.py:make", target, (3, 32, 32), RESNET18_PARAMS)
    assert ok["warnings"] == [] and ok["estimate"]["latency_ms"] > 0


def test_no_student_fits_is_bad_input() -> None:
    target = load_target("host-cpu")
    tiny = replace(target, budgets=replace(target.budgets, max_params=100))
    with pytest.raises(BadInput, match="no student of any available family meets the budgets"):
        size_student(tiny, (3, 32, 32), 10, RESNET18_PARAMS, family="auto")
