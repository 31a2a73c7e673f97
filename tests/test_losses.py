"""Distillation losses and the objective: values, decompositions, gradients, autocast, rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgekd.distill.losses import (
    DEFAULT_WEIGHTS,
    LOSSES,
    ATLoss,
    DKDLoss,
    FitNetLoss,
    KDLoss,
    Outputs,
    SPLoss,
    dkd_parts,
    make_objective,
    parse_loss_spec,
)
from edgekd.errors import BadInput

B, K = 6, 5
# (student, teacher) per pair: different channels, one pair at different spatial sizes
SHAPES = [((4, 8, 8), (6, 4, 4)), ((8, 4, 4), (12, 4, 4))]
DIMS = (8, 12)


def outputs(shapes: list[tuple[int, ...]], dim: int, seed: int, grad: bool = False) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    out = Outputs(
        torch.randn(B, K, generator=g),
        [torch.randn(B, *s, generator=g) for s in shapes],
        torch.randn(B, dim, generator=g),
    )
    if grad:
        for x in [out.logits, *out.features, out.embedding]:
            x.requires_grad_(True)
    return out


def pair_outputs(shapes=SHAPES, dims=DIMS) -> tuple[Outputs, Outputs]:
    s = outputs([s for s, _ in shapes], dims[0], seed=1, grad=True)
    t = outputs([t for _, t in shapes], dims[1], seed=2)
    return s, t


def objective(name: str, shapes=SHAPES, dims=DIMS, **kw):
    return make_objective(name, feature_shapes=shapes, embedding_dims=dims, ce_weight=0.0, **kw)


def test_kd_matches_a_hand_computed_value():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    tau = 2.0
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist(), strict=True):
        zs = sum(math.exp(v / tau) for v in srow)
        zt = sum(math.exp(v / tau) for v in trow)
        for a, b in zip(srow, trow, strict=True):
            p, q = math.exp(b / tau) / zt, math.exp(a / tau) / zs
            expected += p * math.log(p / q)
    expected = expected / 2 * tau**2
    got = KDLoss(tau)(Outputs(s, []), Outputs(t, []))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_parts_match_the_direct_formulas_and_decompose_kd():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, K, generator=g), torch.randn(3, K, generator=g)
    target = torch.tensor([0, 3, 1])
    tau = 3.0
    for i in range(3):
        tckd, nckd = dkd_parts(s[i : i + 1], t[i : i + 1], target[i : i + 1], tau)
        ps, pt = F.softmax(s[i] / tau, 0).tolist(), F.softmax(t[i] / tau, 0).tolist()
        gt = int(target[i])
        bs, bt = [ps[gt], 1 - ps[gt]], [pt[gt], 1 - pt[gt]]
        direct_tckd = sum(b * math.log(b / a) for a, b in zip(bs, bt, strict=True))
        rest = [k for k in range(K) if k != gt]
        direct_nckd = sum(pt[k] / bt[1] * math.log((pt[k] / bt[1]) / (ps[k] / bs[1])) for k in rest)
        assert tckd.item() == pytest.approx(direct_tckd, rel=1e-4, abs=1e-7)
        assert nckd.item() == pytest.approx(direct_nckd, rel=1e-4, abs=1e-7)
        kd = KDLoss(tau)(Outputs(s[i : i + 1], []), Outputs(t[i : i + 1], [])) / tau**2
        assert kd.item() == pytest.approx(direct_tckd + bt[1] * direct_nckd, rel=1e-4)


def test_dkd_weights_terms_and_uses_the_teacher_class_for_unlabeled():
    g = torch.Generator().manual_seed(1)
    s, t = Outputs(torch.randn(4, K, generator=g), []), Outputs(torch.randn(4, K, generator=g), [])
    labels = torch.tensor([2, -1, 0, -1])
    filled = torch.where(labels >= 0, labels, t.logits.argmax(1))
    tckd, nckd = dkd_parts(s.logits, t.logits, filled, 4.0)
    loss = DKDLoss(4.0, alpha=1.0, beta=8.0)
    assert loss(s, t, labels).item() == pytest.approx((16 * (tckd + 8 * nckd)).item(), rel=1e-5)
    assert loss(s, t, labels).item() == pytest.approx(loss(s, t, filled).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "at", "sp", "rkd", "cc"])
def test_loss_is_zero_when_student_equals_teacher(name):
    shapes = [((4, 8, 8), (4, 8, 8)), ((8, 4, 4), (8, 4, 4))]
    s = outputs([s for s, _ in shapes], 8, seed=3)
    _, parts = objective(name, shapes, (8, 8))(s, s, torch.full((B,), -1))
    # DIST's correlation has an eps of 1e-8 in the denominator (as in the paper's code)
    assert parts[name] == pytest.approx(0.0, abs=1e-3 if name == "dist" else 1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_is_positive_and_trains_student_and_adapters(name):
    s, t = pair_outputs()
    obj = objective(name)
    loss, parts = obj(s, t, torch.randint(0, K, (B,)))
    assert parts[name] > 0
    loss.backward()
    grads = [x.grad for x in [s.logits, *s.features, s.embedding] if x.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    for p in obj.parameters():  # fitnet's regressor, cc's projection
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_is_computed_in_float32_under_autocast(name):
    s, t = pair_outputs()
    to_bf16 = lambda o: Outputs(  # noqa: E731 - what an autocast forward pass hands over
        o.logits.bfloat16(), [f.bfloat16() for f in o.features], o.embedding.bfloat16()
    )
    labels = torch.randint(0, K, (B,))
    obj = objective(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = obj(to_bf16(s), to_bf16(t), labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    as_float = lambda o: Outputs(  # noqa: E731
        o.logits.float(), [f.float() for f in o.features], o.embedding.float()
    )
    reference, _ = obj(as_float(to_bf16(s)), as_float(to_bf16(t)), labels)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_attention_transfer_ignores_channels_and_pools_the_larger_map():
    fs = torch.rand(2, 3, 4, 4)
    same_attention = fs.repeat(1, 2, 1, 1)  # 6 channels, the same mean of squares
    loss = ATLoss([((3, 4, 4), (6, 4, 4))])
    assert loss(Outputs(fs[:, :1, 0, 0], [fs]), Outputs(fs, [same_attention])).item() < 1e-9
    larger = fs.repeat_interleave(2, 2).repeat_interleave(2, 3)  # 8x8, pools back to fs
    loss = ATLoss([((3, 4, 4), (3, 8, 8))])
    assert loss.kernels == [((1, 1), (2, 2))]
    assert loss(Outputs(fs[:, :1, 0, 0], [fs]), Outputs(fs, [larger])).item() < 1e-9


def test_similarity_preserving_is_scale_and_shape_free():
    f = torch.randn(B, 4, 2, 2)
    s = Outputs(torch.zeros(B, K), [f])
    assert SPLoss()(s, Outputs(s.logits, [3 * f.flatten(1)])).item() < 1e-9
    assert SPLoss()(s, Outputs(s.logits, [torch.randn(B, 7)])).item() > 0


def test_rkd_is_scale_free_and_dimension_free():
    e = torch.randn(B, 8)
    obj = objective("rkd", dims=(8, 8))
    s, t = Outputs(torch.zeros(B, K), [], e), Outputs(torch.zeros(B, K), [], 3 * e)
    assert obj(s, t, torch.full((B,), -1))[1]["rkd"] < 1e-6
    wider = Outputs(torch.zeros(B, K), [], torch.cat([e, torch.zeros(B, 4)], 1))
    assert objective("rkd", dims=(8, 12))(s, wider, torch.full((B,), -1))[1]["rkd"] < 1e-6


def test_fitnet_regresses_the_last_pair_and_pools_the_larger_map():
    shapes = [((2, 4, 4), (2, 4, 4)), ((4, 8, 8), (6, 4, 4))]
    loss = FitNetLoss.build(4.0, shapes, None)
    assert isinstance(loss.regressor[0], torch.nn.AvgPool2d)
    s, t = pair_outputs(shapes)
    want = F.mse_loss(loss.regressor(s.features[-1]), t.features[-1])
    assert loss(s, t).item() == pytest.approx(want.item(), rel=1e-6)
    wider_teacher = FitNetLoss((4, 4, 4), (6, 8, 8))
    assert wider_teacher.t_kernel == (2, 2)


@pytest.mark.parametrize("name", ["fitnet", "at"])
def test_unjoinable_feature_shapes_are_bad_input(name):
    with pytest.raises(BadInput, match=r"feature shapes \(4, 6, 6\) and \(8, 4, 4\) cannot be"):
        objective(name, shapes=[((4, 6, 6), (8, 4, 4))])


def test_feature_and_embedding_losses_need_their_inputs():
    with pytest.raises(BadInput, match="loss 'at' needs feature pairs: give --pair"):
        make_objective("kd+at")
    with pytest.raises(BadInput, match="loss 'rkd' needs the models' embeddings"):
        make_objective("rkd")


def test_ce_weight_defaults():
    assert make_objective("kd").ce_weight == pytest.approx(0.1)
    assert make_objective("kd", weights={"kd": 0.5}).ce_weight == pytest.approx(0.5)
    assert make_objective("dkd").ce_weight == 1.0
    assert make_objective("kd", ce_weight=1.0).ce_weight == 1.0
    assert make_objective("dist").weights == {"dist": DEFAULT_WEIGHTS["dist"]}
    with pytest.raises(BadInput, match=r"kd weight must be in \[0, 1\]"):
        make_objective("kd", weights={"kd": 1.5})
    with pytest.raises(BadInput, match="not in 'kd'"):
        make_objective("kd", weights={"dkd": 1.0})


def test_unlabeled_samples_are_left_out_of_cross_entropy():
    s, t = pair_outputs()
    obj = make_objective("kd")
    labels = torch.tensor([1, -1, 2, -1, 0, -1])
    loss, parts = obj(s, t, labels)
    keep = labels >= 0
    assert parts["ce"] == pytest.approx(F.cross_entropy(s.logits[keep], labels[keep]).item())
    loss, parts = obj(s, t, torch.full((B,), -1))
    assert parts["ce"] == 0.0 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.9 * parts["kd"], rel=1e-6)
    loss.backward()
    assert torch.isfinite(s.logits.grad).all()


def test_combined_objective_sums_weighted_terms():
    s, t = pair_outputs()
    labels = torch.randint(0, K, (B,))
    obj = make_objective("kd+rkd", embedding_dims=DIMS, weights={"rkd": 2.0})
    assert obj.names == ["kd", "rkd"] and obj.needs == frozenset({"embedding"})
    loss, parts = obj(s, t, labels)
    assert set(parts) == {"ce", "kd", "rkd"}
    want = 0.1 * parts["ce"] + 0.9 * parts["kd"] + 2.0 * parts["rkd"]
    assert loss.item() == pytest.approx(want, rel=1e-5)
    alone = make_objective("rkd", embedding_dims=DIMS)(s, t, labels)[1]["rkd"]
    assert parts["rkd"] == pytest.approx(alone, rel=1e-6)


def test_objective_state_reloads_into_an_identical_objective():
    a, b = objective("fitnet+cc"), objective("fitnet+cc")
    b.load_state_dict(a.state_dict())
    s, t = pair_outputs()
    labels = torch.zeros(B, dtype=torch.long)
    assert a(s, t, labels)[0].item() == pytest.approx(b(s, t, labels)[0].item())


def test_loss_spec_parsing():
    assert parse_loss_spec("kd+rkd") == ["kd", "rkd"]
    assert parse_loss_spec(" DKD + at ") == ["dkd", "at"]
    with pytest.raises(BadInput, match="unknown loss 'kld'.*valid: at, cc, dist, dkd, fitnet, kd"):
        parse_loss_spec("kld")
    with pytest.raises(BadInput, match="unknown loss ''"):
        parse_loss_spec("kd+")
    with pytest.raises(BadInput, match="'kd' appears more than once"):
        parse_loss_spec("kd+at+kd")
