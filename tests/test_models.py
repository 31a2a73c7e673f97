"""Student family, profiling and sizing to a target's budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.errors import BadInput
from edgekd.models.profile import profile
from edgekd.models.sizing import size_student
from edgekd.models.students import StudentSpec, build_student, candidates, stem_halvings
from edgekd.targets import list_targets, load_target


def test_width_and_depth_scale_the_student() -> None:
    small = build_student(StudentSpec("convnet", 0.5, 1.0), 3, 7)
    wide = build_student(StudentSpec("convnet", 2.0, 1.0), 3, 7)
    deep = build_student(StudentSpec("convnet", 0.5, 2.0), 3, 7)
    n = [sum(p.numel() for p in m.parameters()) for m in (small, wide, deep)]
    assert n[0] < n[2] < n[1]
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    convs = [m for m in deep.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)


def test_profile_counts_macs_by_hand() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    p = profile(model, (1, 5, 5))
    assert p.macs == 4 * 5 * 5 * 9 + 100 * 2
    assert p.params == 4 * 9 + 4 + 100 * 2 + 2
    assert p.activation_elems == (25 + 100) + (100 + 2)


def test_sizing_picks_the_largest_feasible_student() -> None:
    target = load_target("host-cpu")
    decision = size_student(target, (1, 28, 28), 10, teacher_params=1_000_000)
    assert decision.chosen.params <= 125_000 and not decision.chosen.violations
    bigger = [
        c
        for c in candidates()
        if profile(build_student(c, 1, 10), (1, 28, 28)).params > decision.chosen.params
    ]
    assert bigger  # there were larger students and they were refused
    assert any("next larger" in r for r in decision.reasons)
    assert decision.to_dict()["student"] == decision.chosen.spec.label


def test_tighter_latency_budget_gives_a_smaller_student() -> None:
    target = load_target("raspberry-pi-5")
    loose = size_student(target, (3, 64, 64), 10, teacher_params=50_000_000)
    tight_target = replace(
        target, budgets=replace(target.budgets, p90_latency_ms=loose.chosen.latency_ms / 3)
    )
    tight = size_student(tight_target, (3, 64, 64), 10, teacher_params=50_000_000)
    assert tight.chosen.macs < loose.chosen.macs
    assert tight.chosen.latency_ms <= tight_target.budgets.p90_latency_ms


@pytest.mark.parametrize("target", list_targets(), ids=lambda t: t.name)
def test_every_bundled_target_sizes_the_example(target) -> None:
    decision = size_student(target, (1, 28, 28), 10, teacher_params=1_165_930)
    assert decision.chosen.latency_ms is not None
    expected = "fp16" if target.name == "jetson-nano" else "int8"
    assert decision.chosen.model_mb == pytest.approx(
        decision.chosen.params * (1 if expected == "int8" else 2) / 1e6
    )


def test_impossible_budget_is_bad_input(tmp_path: Path) -> None:
    target = load_target("host-cpu")
    tiny = replace(target, budgets=replace(target.budgets, max_params=100))
    with pytest.raises(BadInput, match="no convnet student meets the budgets of target host-cpu"):
        size_student(tiny, (1, 28, 28), 10, teacher_params=1_000_000)


def test_convnet_stem_downsamples_large_inputs() -> None:
    """At 224 pixels the convnet's stem brings the first stage to 28 (3 halvings): without it a
    width-1.25 convnet costs ~1.6 GMAC, nearly a ResNet-18; at 28 pixels nothing changes."""
    spec = StudentSpec("convnet", 1.25, 2.0)
    assert [stem_halvings(s) for s in (28, 32, 33, 64, 96, 224)] == [0, 0, 1, 1, 2, 3]
    small = build_student(spec, 3, 10, 28)
    assert small.state_dict().keys() == build_student(spec, 3, 10).state_dict().keys()
    assert profile(small, (3, 28, 28)).macs == profile(build_student(spec, 3, 10), (3, 28, 28)).macs
    big = build_student(spec, 3, 10, 224)
    assert big.features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)
    assert profile(big, (3, 224, 224)).macs < profile(small, (3, 224, 224)).macs / 40
