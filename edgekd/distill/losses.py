"""Distillation losses, chosen by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import BadInput


class KDLoss(nn.Module):
    """Hinton et al. (2015): ``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y)``.

    The ``T^2`` factor keeps the soft-target gradients on the scale of the hard-label ones.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise BadInput(
                f"kd needs temperature > 0 and alpha in [0, 1], got {temperature}, {alpha}"
            )
        self.temperature = temperature
        self.alpha = alpha

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        hard = F.cross_entropy(student, labels)
        return self.alpha * t * t * soft + (1.0 - self.alpha) * hard


LOSSES: dict[str, type[nn.Module]] = {"kd": KDLoss}


def make_loss(name: str, **kwargs: float) -> nn.Module:
    """The loss registered as ``name``, built with ``kwargs``."""
    if name not in LOSSES:
        raise BadInput(f"unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)
