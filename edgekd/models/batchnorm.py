"""BatchNorm running statistics recomputed for a model's current weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recompute every BatchNorm's running statistics from ``batches``; returns the batch count.

    Running averages lag the weights: torchvision's models use BN momentum 0.01, so after a
    short schedule the statistics still describe the weights of many steps before (folding them
    at QAT left MobileNetV3 at chance). Here each BatchNorm takes the equal-weight average of the
    batches' statistics (momentum None), with the rest of the model in eval mode (Dropout off)
    and without gradients; momenta and modes are restored. Without batches the statistics are
    left as they were.
    """
    norms = [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]  # fmt: skip
    momenta = [m.momentum for m in norms]
    was_training = model.training
    count = 0
    try:
        for x in batches:
            if count == 0:
                model.eval()
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None
                    m.train()
            model(x)
            count += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return count
