"""Feature taps: pairing syntax, name resolution on float and QAT models, hooks, auto-pairing."""

from __future__ import annotations

import pytest
import torch
from digits import TEACHER_SOURCE
from torch import nn

from edgekd.distill.features import (
    FeatureTap,
    Pair,
    auto_pairs,
    embedding_dims,
    feature_shapes,
    parse_pairs,
    resolve,
)
from edgekd.distill.losses import Outputs, make_objective
from edgekd.errors import BadInput
from edgekd.models.students import ConvNet
from edgekd.models.teacher import ExportedTeacher, OnnxTeacher
from edgekd.quant.prepare import calibrate, prepare_qat
from edgekd.quant.scheme import get_scheme


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Small models on shared cores."""


def digits_teacher() -> nn.Module:
    scope: dict = {}
    exec(TEACHER_SOURCE, scope)
    torch.manual_seed(0)
    return scope["DigitsTeacher"]()


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(float ConvNet with BN statistics, its calibrated QAT GraphModule, inputs)."""
    torch.manual_seed(0)
    student = ConvNet(1, 10, width=0.5)
    x = torch.randn(16, 1, 8, 8)
    student.train()
    student(x)
    student.eval()
    qat = prepare_qat(student, get_scheme("onnxruntime"))
    calibrate(qat, [x])
    return student, qat.eval(), x


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def test_parse_pairs():
    pairs = parse_pairs(["teacher.layer3=student.stage2", " body.5 = features.1 ", "t.x=s.y"])
    assert pairs == [Pair("layer3", "stage2"), Pair("body.5", "features.1"), Pair("t.x", "s.y")]
    for bad in ["layer3", "=features.1", "teacher.=student.x", "a=b=c"]:
        with pytest.raises(BadInput, match="expected teacher.MODULE=student.MODULE"):
            parse_pairs([bad])


def test_resolve_taps_the_same_point_on_float_and_qat_models(models):
    student, qat, x = models
    names = ["features.3", "features.4.1", "features.7", "features.4.2"]
    assert [resolve(student, n, "student") for n in names] == [
        "features.3.2", "features.4.1", "features.7.2", "features.4.2"
    ]  # fmt: skip
    # the BatchNorm features.4.1 is folded into features.4.0 in the QAT model
    assert [resolve(qat, n, "student") for n in names] == [
        "features.3.2", "features.4.0", "features.7.2", "features.4.2"
    ]  # fmt: skip
    with torch.no_grad(), FeatureTap(student, names) as a, FeatureTap(qat, names) as b:
        student(x)
        qat(x)
        float_maps, _ = a.take()
        qat_maps, _ = b.take()
    for f, q in zip(float_maps, qat_maps, strict=True):
        assert f.shape == q.shape
        assert correlation(f, q) > 0.99  # the same point, up to int8 rounding
    assert correlation(float_maps[0], qat_maps[3]) < 0.9  # same shape, another point
    # the BN output is kept as it was, before the in-place ReLU that follows it
    assert (float_maps[1] < 0).any()


class Block(nn.Module):
    """A custom block: fx traces through it, so QAT has no module called "stem"."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Block()
        self.head = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.extra = nn.ModuleList([nn.Identity()])
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.head(self.stem(x)).mean((2, 3)))


def test_custom_blocks_and_folded_batchnorm_map_to_the_same_point():
    torch.manual_seed(0)
    model, x = Custom().eval(), torch.randn(8, 1, 6, 6)
    qat = prepare_qat(model, get_scheme("onnxruntime"))
    calibrate(qat, [x])
    qat.eval()
    names = ["stem", "head", "head.1"]
    assert [resolve(model, n, "student") for n in names] == ["stem", "head.1", "head.1"]
    assert [resolve(qat, n, "student") for n in names] == ["stem.act", "head.0", "head.0"]
    with torch.no_grad(), FeatureTap(model, names) as a, FeatureTap(qat, names) as b:
        model(x)
        qat(x)
        for f, q in zip(a.take()[0], b.take()[0], strict=True):
            assert correlation(f, q) > 0.99
    with pytest.raises(BadInput, match="'extra' is a ModuleList, never called itself"):
        resolve(model, "extra", "student")


def test_unknown_module_names_suggest_near_ones(models):
    student, qat, _ = models
    with pytest.raises(
        BadInput, match=r"student has no module 'feature\.3'; near names: features\.3"
    ):
        resolve(student, "feature.3", "student")
    with pytest.raises(BadInput, match=r"no module 'features\.9'; near names: features\."):
        resolve(qat, "features.9", "student")
    with pytest.raises(BadInput, match="teacher has no module 'nothing_like_it'; it has: body"):
        resolve(digits_teacher(), "nothing_like_it", "teacher")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_opaque_teachers_cannot_be_hooked():
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    plain(torch.zeros(1, 1, 5, 5))
    opaque = [
        ExportedTeacher(plain),
        torch.jit.script(plain),
        OnnxTeacher.__new__(OnnxTeacher),  # only its type matters here
    ]
    for teacher in opaque:
        with pytest.raises(BadInput, match="need a teacher given as module:factory"):
            resolve(teacher, "0", "teacher")
        with pytest.raises(BadInput, match="need a teacher given as module:factory"):
            FeatureTap(teacher, [], embedding=True)
        with pytest.raises(BadInput, match="need a teacher given as module:factory"):
            auto_pairs(teacher, plain, torch.zeros(1, 1, 5, 5))


def test_tap_collects_features_and_embedding_then_clears_and_closes(models):
    student, _, x = models
    tap = FeatureTap(student, ["features.1", "features.7"], embedding=True)
    with torch.no_grad():
        logits = student(x)
    (f1, f7), emb = tap.take()
    assert f1.shape == (16, 8, 8, 8) and f7.shape == (16, 32, 2, 2)
    assert torch.allclose(emb, f7.mean((2, 3)), atol=1e-6)  # pooled last map feeds the classifier
    with pytest.raises(BadInput, match="'features.1.2' was not called in the forward pass"):
        tap.take()
    tap.close()
    with torch.no_grad():
        student(x)
    assert tap._features == {} and tap._embedding is None
    assert torch.allclose(student.classifier(emb), logits, atol=1e-6)


def test_auto_pairs_match_spatial_sizes_from_the_last_stage():
    teacher, student = digits_teacher(), ConvNet(1, 10, width=0.5)
    sample = torch.randn(2, 1, 8, 8)
    pairs = auto_pairs(teacher, student, sample)
    # teacher stages: 8x8 (body.5), 4x4 (body.9); student: 8x8, 4x4, 2x2 (no teacher match)
    assert pairs == [Pair("body.5", "features.1.2"), Pair("body.9", "features.4.2")]
    shapes = feature_shapes(teacher, student, pairs, sample)
    assert shapes == [((8, 8, 8), (128, 8, 8)), ((16, 4, 4), (128, 4, 4))]
    assert embedding_dims(teacher, student, sample) == (32, 128)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert auto_pairs(mlp, student, sample) == []
    assert teacher.training and student.training  # modes restored


def test_feature_losses_train_the_qat_student(models):
    student, _, x = models
    teacher = digits_teacher()
    pairs = auto_pairs(teacher, student, x)
    shapes = feature_shapes(teacher, student, pairs, x)
    objective = make_objective("fitnet+at+sp", feature_shapes=shapes)
    qat = prepare_qat(student, get_scheme("onnxruntime"))
    calibrate(qat, [x])
    qat.train()
    with FeatureTap(qat, [p.student for p in pairs]) as s_tap:
        with FeatureTap(teacher, [p.teacher for p in pairs]) as t_tap, torch.no_grad():
            t = Outputs(teacher(x), t_tap.take()[0])
        s = Outputs(qat(x), s_tap.take()[0])
    loss, parts = objective(s, t, torch.randint(0, 10, (16,)))
    loss.backward()
    assert all(v > 0 for k, v in parts.items() if k != "ce")
    assert qat.get_submodule("features.0.0").parametrizations.weight.original.grad is not None
    assert all(p.grad is not None for p in objective.parameters())
