"""The training loop: learning, optimizers, checkpoints and resuming, augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgekd.data import Split
from edgekd.distill.augment import make_augment, random_crop, random_flip
from edgekd.distill.losses import make_objective
from edgekd.distill.trainer import TrainConfig, fit
from edgekd.errors import BadInput
from edgekd.models.students import StudentSpec, build_student


def _data() -> tuple[Split, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    teacher = F.one_hot(y, 2).float() * 6 - 3
    return Split(x, y), teacher


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student(StudentSpec("convnet", 0.25, 0.5), 1, 2)


def test_fit_learns_a_simple_task() -> None:
    split, teacher = _data()
    student = _student()
    history = fit(student, split, teacher, make_objective('kd'), TrainConfig(epochs=6, lr=1e-2, batch_size=32),
                  device=torch.device("cpu"), val=split)  # fmt: skip
    assert len(history) == 6
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] > 0.85


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    split, teacher = _data()
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=32)
    cpu = torch.device("cpu")
    straight = _student()
    fit(straight, split, teacher, make_objective("kd"), cfg, device=cpu)

    ckpt = tmp_path / "distill.ckpt"

    def stop_at_2(model, epoch):
        if epoch == 2:
            raise Interrupt

    resumed = _student()
    with pytest.raises(Interrupt):
        fit(
            resumed,
            split,
            teacher,
            make_objective("kd"),
            cfg,
            device=cpu,
            checkpoint=ckpt,
            before_epoch=stop_at_2,
        )
    assert ckpt.exists()
    resumed = _student()
    history = fit(resumed, split, teacher, make_objective("kd"), cfg, device=cpu, checkpoint=ckpt)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_sgd_learns_too_and_unknown_optimizer_is_bad_input() -> None:
    split, teacher = _data()
    cfg = TrainConfig(epochs=4, lr=5e-2, batch_size=32, optimizer="sgd")
    history = fit(_student(), split, teacher, make_objective("kd"), cfg,
                  device=torch.device("cpu"), val=split)  # fmt: skip
    assert history[-1]["val_accuracy"] > 0.85
    assert {"loss_ce", "loss_kd"} <= set(history[-1])
    with pytest.raises(BadInput, match="valid: adamw, sgd"):
        fit(_student(), split, teacher, make_objective("kd"),
            TrainConfig(epochs=1, lr=1e-2, optimizer="lamb"), device=torch.device("cpu"))  # fmt: skip


def test_random_crop_shifts_each_image_within_the_padding() -> None:
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0  # one bright pixel per image
    out = random_crop(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert out.sum().item() == 64  # no pixel lost: a shift of at most 2 keeps it inside
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # shifts differ per image
    again = random_crop(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)  # the generator decides everything


def test_random_flip_mirrors_about_half() -> None:
    x = torch.arange(8.0).repeat(200, 1, 8, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 7).float().mean().item()
    assert 0.35 < flipped < 0.65
    assert torch.equal(out[out[:, 0, 0, 0] == 7], x[out[:, 0, 0, 0] == 7].flip(-1))
    assert make_augment("none") is None
    with pytest.raises(BadInput, match="valid: none, crop, crop\\+flip, mixup, cutmix"):
        make_augment("flip+mixup")


def test_live_teacher_on_augmented_inputs_learns() -> None:
    split, _ = _data()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with torch.no_grad():  # a teacher that knows the rule: sign of the mean
        teacher[1].weight.copy_(torch.tensor([[-1.0] * 64, [1.0] * 64]) / 8)
        teacher[1].bias.zero_()
    from edgekd.distill.teachers import LiveTeacher

    calls = []
    source = LiveTeacher([teacher], None, 4.0, torch.device("cpu"))

    def counted(idx, x):
        calls.append(len(idx))
        return source(idx, x)

    history = fit(_student(), split, counted, make_objective("kd"),
                  TrainConfig(epochs=3, lr=1e-2, batch_size=32), device=torch.device("cpu"),
                  val=split, augment=make_augment("crop"))  # fmt: skip
    assert sum(calls) == 3 * len(split)  # the teacher saw every augmented batch
    assert history[-1]["val_accuracy"] > 0.8
