"""The training recipe: BatchNorm momentum while training, no weight decay on norms and biases."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import Split
from edgekd.distill.losses import make_objective
from edgekd.distill.trainer import TrainConfig, _param_groups, fit
from edgekd.models.batchnorm import reestimate_bn
from edgekd.models.students import StudentSpec, build_student


def _student(momentum: float) -> nn.Module:
    torch.manual_seed(0)
    model = build_student(StudentSpec("convnet", 0.25, 0.5), 1, 2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum  # as torchvision builds its MobileNets and EfficientNets
    return model


def _momenta(model: nn.Module) -> set[float | None]:
    return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


def test_bn_momentum_while_training_then_the_models_own() -> None:
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    split, teacher = Split(x, y), F.one_hot(y, 2).float()
    seen = []
    for momentum in (0.1, None):
        model = _student(0.01)
        cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=32, bn_momentum=momentum)
        fit(model, split, teacher, make_objective("kd"), cfg, device=torch.device("cpu"),
            before_epoch=lambda m, _: seen.append(_momenta(m)))  # fmt: skip
        assert _momenta(model) == {0.01}  # restored: the user's model leaves as it came
    assert seen == [{0.1}, {0.01}]


def test_weight_decay_skips_norms_and_biases() -> None:
    model = _student(0.1)
    params = list(model.parameters())
    cfg = TrainConfig(epochs=1, lr=1e-3, weight_decay=0.05, decay_norm_and_bias=False)
    decayed, plain = _param_groups(params, cfg)
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert {id(p) for p in decayed["params"]} == {id(m.weight) for m in convs}
    assert len(decayed["params"]) + len(plain["params"]) == len(params)
    (everything,) = _param_groups(params, TrainConfig(epochs=1, lr=1e-3, decay_norm_and_bias=True))
    assert len(everything["params"]) == len(params)


def test_recalibration_gives_the_exact_statistics_of_the_final_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01)).eval()
    x = torch.randn(512, 1, 6, 6) * 3 + 1  # 4 equal batches: their average is the mean
    reestimate_bn(model, x.split(128))
    bn = model[1]
    with torch.no_grad():
        h = model[0](x).transpose(0, 1).flatten(1)  # channels x (samples * positions)
    torch.testing.assert_close(bn.running_mean, h.mean(1), rtol=1e-4, atol=1e-5)
    # the average of per-batch unbiased variances: within 1 % of the population variance here
    torch.testing.assert_close(bn.running_var, h.var(1), rtol=1e-2, atol=1e-4)
    assert bn.momentum == 0.01 and not model.training  # left as it was
