"""Random input augmentation for training (random crops with padding, horizontal flips)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from edgekd.errors import BadInput

AUGMENTATIONS = ("none", "crop", "crop+flip")
# (inputs, generator) -> randomly augmented inputs
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Each image shifted by up to ``pad`` pixels each way, the border zero-filled (the mean)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
    out = padded[torch.arange(b)[:, None, None], :, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half of the images mirrored left to right."""
    mask = torch.rand(len(x), generator=gen) < 0.5
    out = x.clone()
    out[mask] = x[mask].flip(-1)
    return out


def make_augment(name: str) -> Augment | None:
    """The augmentation called ``name``, or None for ``none``."""
    if name not in AUGMENTATIONS:
        raise BadInput(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return None
    if name == "crop":
        return random_crop
    return lambda x, gen: random_flip(random_crop(x, gen), gen)
