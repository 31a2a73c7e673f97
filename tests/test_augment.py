"""Augmentation drawn once per batch for student, teacher and labels: crops, flips, mixup and
cutmix (function matching, Beyer et al. 2022), the live teacher, and the labelled accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.config import CompressConfig
from edgekd.data import Split, load_dataset
from edgekd.distill.augment import (
    MixedLabels,
    cutmix,
    make_augment,
    mixup,
    random_crop,
    random_flip,
)
from edgekd.distill.control import BatchFingerprint
from edgekd.distill.losses import cross_entropy, make_objective
from edgekd.distill.teachers import LiveTeacher
from edgekd.distill.trainer import TrainConfig, fit
from edgekd.errors import BadInput
from edgekd.models.students import StudentSpec, build_student
from edgekd.models.teacher import load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits(digits_options, one_torch_thread) -> tuple[Split, nn.Module]:
    """The first 256 digits training images, and the trained digits teacher."""
    o = digits_options
    data = load_dataset(o["data"], mean=o["mean"], std=o["std"], seed=0)
    train = Split(data.train.x[:256], data.train.y[:256])
    return train, load_model(o["teacher"], o["weights"])


def _student() -> nn.Module:
    torch.manual_seed(0)
    return build_student(StudentSpec("convnet", 0.25, 0.5), 1, 10)


def _batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return x, torch.arange(n)  # distinct labels: the second label names the partner


def test_mixup_is_a_convex_mix_with_the_label_shares() -> None:
    x, y = _batch()
    out, labels = mixup(x, y, torch.Generator().manual_seed(0))
    partner, w = labels.second, labels.weight
    assert torch.equal(labels.first, y) and sorted(partner.tolist()) == y.tolist()
    assert (partner != y).sum() > 20  # a permutation, not the identity
    assert 0 < w[0] < 1 and torch.equal(w, torch.full_like(w, w[0].item()))  # one share a batch
    lam = w[:, None, None, None]
    assert torch.allclose(out, lam * x + (1 - lam) * x[partner], atol=1e-6)


def test_cutmix_pastes_one_box_and_the_share_is_its_area() -> None:
    x, y = _batch()
    out, labels = cutmix(x, y, torch.Generator().manual_seed(3), alpha=1.0)
    partner, w = labels.second, labels.weight
    from_self = out == x
    from_partner = out == x[partner]
    assert (from_self | from_partner).all()  # every pixel is one image's or its partner's
    moved = partner != y
    pasted = (~from_self[moved]).flatten(1).float().mean(1)  # random values: no ties
    assert 0 < w[0] < 1
    assert torch.allclose(pasted, 1 - w[moved], atol=1e-6)
    box = ~from_self[moved][0, 0]
    rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
    assert box.sum() == len(rows) * len(cols)  # one rectangle
    assert torch.equal(box.nonzero()[:, 0].unique(), rows)


def test_mixing_strength_follows_beta_alpha() -> None:
    x, y = _batch(4)

    def spread(alpha: float) -> float:
        shares = [mixup(x, y, torch.Generator().manual_seed(s), alpha)[1].weight[0].item()
                  for s in range(300)]  # fmt: skip
        return float(np.mean(np.abs(np.array(shares) - 0.5)))

    # Beta(a, a): mean |lam - 1/2| is 1/4 at a = 1 (uniform), near 1/2 for small a
    assert spread(0.2) > 0.35 > spread(1.0) > 0.2 > spread(8.0)


def test_augmentations_compose_in_order_and_the_seed_decides() -> None:
    x, y = _batch()
    aug = make_augment("crop+flip+mixup", mix_alpha=0.4)
    out, labels = aug(x, y, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    by_hand, expected = mixup(random_flip(random_crop(x, g), g), y, g, alpha=0.4)
    assert torch.equal(out, by_hand) and torch.equal(labels.weight, expected.weight)
    again, _ = aug(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    assert make_augment("cutmix").geometric is None and make_augment("crop+cutmix").mix == "cutmix"
    assert make_augment("crop+flip")(x, y, torch.Generator())[1] is y  # no mixing: hard labels
    for bad in ("mixup+crop", "flip+cutmix", "mixup+cutmix"):
        with pytest.raises(BadInput, match="unknown augmentation"):
            make_augment(bad)


def test_mixed_cross_entropy_is_the_soft_label_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    first = torch.tensor([0, 1, 2, -1, 3, -1])
    second = torch.tensor([1, 1, -1, 2, 0, -1])
    w = torch.tensor([0.7, 0.2, 0.6, 0.3, 0.5, 0.9])
    target = torch.zeros(6, 4)  # the soft labels, an unlabeled side's share left out
    for i in range(6):
        if first[i] >= 0:
            target[i, first[i]] += w[i]
        if second[i] >= 0:
            target[i, second[i]] += 1 - w[i]
    expected = -(target * F.log_softmax(logits, 1)).sum() / target.sum()
    got = cross_entropy(logits, MixedLabels(first, second, w))
    assert torch.allclose(got, expected, atol=1e-6)
    hard = torch.tensor([0, 1, -1, 3, 2, -1])
    one_hot = MixedLabels(hard, hard, torch.ones(6))
    assert torch.allclose(cross_entropy(logits, one_hot), cross_entropy(logits, hard), atol=1e-6)


def test_function_matching_is_kd_with_the_label_term_off() -> None:
    """--loss kd --alpha 1 (or --loss-weight kd=1): CE gets 1 - 1 = 0."""
    objective = make_objective("kd", weights={"kd": 1.0})
    assert objective.ce_weight == 0.0
    CompressConfig(teacher="t.onnx", data="d.npz", weight_bits=8, augment="crop+flip+mixup",
                   alpha=1.0).resolved()  # fmt: skip


def _hook_inputs(model: nn.Module, seen: list[torch.Tensor]):
    return model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))


@pytest.mark.parametrize("name", ["crop+flip+mixup", "cutmix"])
def test_teacher_student_and_labels_see_the_same_batch(digits, name) -> None:
    train, teacher = digits
    teacher_in, student_in, batches = [], [], []
    student = _student()
    live = LiveTeacher([teacher], None, 4.0, CPU)
    hooks = [_hook_inputs(teacher, teacher_in), _hook_inputs(student, student_in)]
    cfg = TrainConfig(epochs=1, lr=3e-3, batch_size=64, bn_recalibration=0)
    try:
        fit(student, train, live, make_objective("kd"), cfg, device=CPU, augment=make_augment(name),
            batches=lambda idx, x, y: batches.append((idx, x, y)))  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
        live.close()
    assert len(teacher_in) == len(student_in) == len(batches) == 4
    for t, s, (idx, x, labels) in zip(teacher_in, student_in, batches, strict=True):
        assert torch.equal(t, s) and torch.equal(t, x)
        assert t.is_contiguous(memory_format=torch.channels_last)  # the fast layout
        assert isinstance(labels, MixedLabels) and torch.equal(labels.first, train.y[idx])
        assert not torch.equal(x, train.x[idx])  # mixed, not the stored images
    assert teacher.body[0].weight.is_contiguous()  # close(): the teacher back as it came


def _mixup_fit(train: Split, teacher: nn.Module, checkpoint=None, before_epoch=None) -> nn.Module:
    student = _student()
    live = LiveTeacher([teacher], None, 4.0, CPU)
    try:
        fit(student, train, live, make_objective("kd"),
            TrainConfig(epochs=3, lr=3e-3, batch_size=64, seed=4, bn_recalibration=64),
            device=CPU, augment=make_augment("crop+mixup"), checkpoint=checkpoint,
            before_epoch=before_epoch)  # fmt: skip
    finally:
        live.close()
    return student


class Interrupt(Exception):
    pass


def test_mixed_training_is_deterministic_and_resumes_bit_identically(digits, tmp_path) -> None:
    train, teacher = digits
    straight = _mixup_fit(train, teacher)
    again = _mixup_fit(train, teacher)
    ckpt = tmp_path / "distill.ckpt"

    def stop_at_2(model: nn.Module, epoch: int) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        _mixup_fit(train, teacher, ckpt, stop_at_2)
    resumed = _mixup_fit(train, teacher, ckpt)
    for name, a in straight.state_dict().items():
        assert torch.equal(a, again.state_dict()[name]), name
        assert torch.equal(a, resumed.state_dict()[name]), name


def test_fingerprint_covers_the_label_mixing() -> None:
    x, y = _batch()
    digests = []
    for w in (0.3, 0.4):
        fp = BatchFingerprint()
        fp(y, x, MixedLabels(y, y.flip(0), torch.full((len(y),), w)))
        digests.append(fp.to_dict()["sha256"])
    assert digests[0] != digests[1]  # same indices and inputs, other label shares


class Linear(nn.Module):
    """No BatchNorm, so that at lr 0 the logits are a fixed function of the inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name", ["none", "crop+mixup"])
def test_train_accuracy_counts_labelled_samples_only(digits, name) -> None:
    train, teacher = digits
    y = train.y.clone()
    y[::2] = -1  # half the samples unlabeled (a transfer set's label)
    half = Split(train.x, y)
    student, batches = Linear(), []
    cfg = TrainConfig(epochs=1, lr=0.0, batch_size=64, weight_decay=0.0, bn_recalibration=0)
    live = LiveTeacher([teacher], None, 4.0, CPU)
    try:
        (record,) = fit(student, half, live, make_objective("kd"), cfg, device=CPU,
                        augment=make_augment(name),
                        batches=lambda idx, x, labels: batches.append((x, labels)))  # fmt: skip
    finally:
        live.close()
    hits = labelled = wrong_unlabeled = 0
    with torch.no_grad():
        for x, labels in batches:
            target = labels.dominant() if isinstance(labels, MixedLabels) else labels
            right = student(x).argmax(1) == target
            hits += right[target >= 0].sum().item()
            labelled += (target >= 0).sum().item()
            wrong_unlabeled += (target < 0).sum().item()
    assert 0 < labelled < len(half) and wrong_unlabeled > 0
    assert record["train_accuracy"] == pytest.approx(hits / labelled)
    assert record["train_accuracy"] > hits / len(half)  # what counting -1 as wrong gave
    unlabeled = Split(train.x, torch.full_like(y, -1))
    live = LiveTeacher([teacher], None, 4.0, CPU)
    try:
        (record,) = fit(Linear(), unlabeled, live, make_objective("kd"), cfg, device=CPU,
                        augment=make_augment(name))  # fmt: skip
    finally:
        live.close()
    assert "train_accuracy" not in record and record["loss_ce"] == 0.0  # nothing to count


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"loss": "dkd", "augment": "crop+mixup"}, "--loss dkd needs one target class per image"),
        ({"loss": "kd+dkd", "augment": "cutmix"}, "--loss dkd needs one target class per image"),
        ({"augment": "crop", "mix_alpha": 0.4}, "--augment crop does not mix"),
        ({"mix_alpha": 0.4}, "--augment none does not mix"),
    ],
)
def test_what_mixing_cannot_do_is_refused_on_resolving(values, says) -> None:
    cfg = CompressConfig(teacher="t.onnx", data="d.npz", weight_bits=8, **values)
    with pytest.raises(BadInput, match=says) as e:
        cfg.resolved()
    assert "\n" not in str(e.value)


def test_bad_mixing_values_are_refused_when_the_config_is_built() -> None:
    with pytest.raises(BadInput, match="--mix-alpha must be a finite number above 0"):
        CompressConfig(augment="mixup", mix_alpha=0.0)
    with pytest.raises(BadInput, match='--augment "mixup\\+flip": valid: none, crop, crop\\+flip'):
        CompressConfig(augment="mixup+flip")


def test_dkd_refuses_mixed_labels_through_the_python_api(digits) -> None:
    train, teacher = digits
    live = LiveTeacher([teacher], None, 4.0, CPU)
    try:
        with pytest.raises(BadInput, match="loss dkd needs one target class per image"):
            fit(_student(), train, live, make_objective("dkd"),
                TrainConfig(epochs=1, lr=3e-3, batch_size=64), device=CPU,
                augment=make_augment("mixup"))  # fmt: skip
    finally:
        live.close()


@pytest.mark.parametrize("fmt", ["script", "trace", "pt2", "onnx"])
def test_live_teacher_in_every_format_answers_as_the_eager_one(digits, tmp_path, fmt) -> None:
    train, teacher = digits
    x = train.x[:64]
    path = tmp_path / {"script": "t.pt", "trace": "t.pt", "pt2": "t.pt2", "onnx": "t.onnx"}[fmt]
    if fmt == "script":
        torch.jit.script(teacher).save(str(path))
    elif fmt == "trace":
        torch.jit.trace(teacher, x).save(str(path))
    elif fmt == "pt2":
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(torch.export.export(teacher, (x,), dynamic_shapes=({0: batch},)), path)
    else:
        torch.onnx.export(teacher, (x,), str(path), dynamo=False, input_names=["images"],
                          dynamic_axes={"images": {0: "batch"}})  # fmt: skip
    mixed, _ = make_augment("crop+cutmix")(x, train.y[:64], torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = teacher(mixed)
    live = LiveTeacher([load_model(str(path))], None, 1.0, CPU)
    try:
        got = live(torch.arange(64), mixed).logits
    finally:
        live.close()
    assert got.dtype == torch.float32 and not got.is_inference()  # autograd may read it
    torch.testing.assert_close(got.softmax(1), expected.softmax(1), rtol=1e-4, atol=1e-5)
