"""Count a model's parameters, multiply-accumulates and tensor bytes at a given input shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelProfile:
    """Static cost of one forward pass at batch 1."""

    params: int
    macs: int
    activation_elems: int  # inputs + outputs of every conv/linear, summed
    layers: int = 0  # conv/linear calls: what a target's per-layer overhead is counted over

    def weight_bytes(self, bytes_per_param: float) -> float:
        return self.params * bytes_per_param

    def model_mb(self, bytes_per_param: float) -> float:
        return self.weight_bytes(bytes_per_param) / 1e6


def profile(model: nn.Module, input_shape: tuple[int, ...]) -> ModelProfile:
    """Profile ``model`` on one zero input of ``input_shape`` (C, H, W) with forward hooks.

    A model built on the ``meta`` device is profiled without allocating or computing anything.
    """
    macs = acts = layers = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs, acts, layers
        x = inputs[0]
        layers += 1
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs += out.numel() * k
        else:
            macs += out.numel() * mod.in_features
        acts += x.numel() + out.numel()

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return ModelProfile(params=params, macs=macs, activation_elems=acts, layers=layers)
