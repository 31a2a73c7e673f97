"""KD loss and the training loop: learning, checkpoints and resuming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgekd.data import Split
from edgekd.distill.losses import KDLoss, make_loss
from edgekd.distill.trainer import TrainConfig, fit
from edgekd.errors import BadInput
from edgekd.models.students import StudentSpec, build_student


def test_kd_loss_matches_its_definition() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    loss = KDLoss(temperature=4.0, alpha=0.9)(s, t, y)
    p_t = F.softmax(t / 4, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 4, dim=1))).sum(1).mean()
    expected = 0.9 * 16 * kl + 0.1 * F.cross_entropy(s, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert KDLoss(alpha=1.0)(t, t, y).item() == pytest.approx(0.0, abs=1e-6)


def test_unknown_loss_lists_valid_ones() -> None:
    with pytest.raises(BadInput, match="valid: kd"):
        make_loss("fitnet2")


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
    history = fit(student, split, teacher, KDLoss(), TrainConfig(epochs=6, lr=1e-2, batch_size=32),
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
    fit(straight, split, teacher, KDLoss(), cfg, device=cpu)

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
            KDLoss(),
            cfg,
            device=cpu,
            checkpoint=ckpt,
            before_epoch=stop_at_2,
        )
    assert ckpt.exists()
    resumed = _student()
    history = fit(resumed, split, teacher, KDLoss(), cfg, device=cpu, checkpoint=ckpt)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
