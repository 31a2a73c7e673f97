"""Random input augmentation for training: random crops with padding, horizontal flips, and
mixing of two images with their labels (mixup, Zhang et al. 2018; cutmix, Yun et al. 2019).

One augmentation draws everything for a batch, and the trainer hands the one result to the
student, the teacher and the label term alike ("function matching", Beyer et al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.errors import BadInput

MIXES = ("mixup", "cutmix")
AUGMENTATIONS = (
    "none", "crop", "crop+flip",
    *MIXES, *(f"crop+{m}" for m in MIXES), *(f"crop+flip+{m}" for m in MIXES),
)  # fmt: skip
# Beta(a, a) draws each batch's mixing share. 1.0 (uniform) for both: cutmix's paper value, and
# mixup's on CIFAR-sized images (0.2 is its ImageNet value); function matching mixes boldly.
MIX_ALPHA = 1.0


def mixing(name: str) -> str | None:
    """The mixing of augmentation ``name`` (``mixup``, ``cutmix``), or None."""
    last = name.split("+")[-1]
    return last if last in MIXES else None


@dataclass(frozen=True)
class MixedLabels:
    """The labels of a mixed batch: sample i is ``weight[i]`` of ``first[i]`` and the rest of
    ``second[i]`` (-1 = unlabeled, as in a plain label tensor)."""

    first: torch.Tensor  # (B,) int64
    second: torch.Tensor  # (B,) int64
    weight: torch.Tensor  # (B,) float32, the share of ``first``

    def to(self, device: torch.device) -> MixedLabels:
        return MixedLabels(self.first.to(device), self.second.to(device), self.weight.to(device))

    def dominant(self) -> torch.Tensor:
        """Each sample's label with the larger share (``first`` at a tie)."""
        return torch.where(self.weight >= 0.5, self.first, self.second)


Labels = torch.Tensor | MixedLabels


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


def _beta(gen: torch.Generator, alpha: float) -> float:
    """One draw of Beta(alpha, alpha), decided by ``gen`` (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, alpha: float = MIX_ALPHA
) -> tuple[torch.Tensor, MixedLabels]:
    """Each image blended with a partner from the batch (a random permutation), one share
    ``lam ~ Beta(alpha, alpha)`` per batch: ``lam x + (1 - lam) x[partner]``, labels alike."""
    partner = torch.randperm(len(x), generator=gen)
    lam = _beta(gen, alpha)
    mixed = lam * x + (1.0 - lam) * x[partner]
    return mixed, MixedLabels(y, y[partner], torch.full((len(x),), lam))


def cutmix(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, alpha: float = MIX_ALPHA
) -> tuple[torch.Tensor, MixedLabels]:
    """Each image with a box pasted from a partner (a random permutation): the box covers about
    ``1 - lam`` of the image, ``lam ~ Beta(alpha, alpha)``, centred at random and clipped to it;
    the label share is the exact area kept. One box per batch, as in the paper."""
    partner = torch.randperm(len(x), generator=gen)
    lam = _beta(gen, alpha)
    h, w = x.shape[-2:]
    cut = (1.0 - lam) ** 0.5
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = (int(torch.randint(0, n, (1,), generator=gen)) for n in (h, w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, MixedLabels(y, y[partner], torch.full((len(x),), kept))


@dataclass(frozen=True)
class Augmentation:
    """A named augmentation: the geometric part per image, then the mixing across the batch."""

    name: str
    geometric: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None
    mix: str | None = None  # "mixup" | "cutmix"
    mix_alpha: float = MIX_ALPHA

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, Labels]:
        """The augmented batch and its labels (mixed, if this augmentation mixes)."""
        if self.geometric is not None:
            x = self.geometric(x, gen)
        if self.mix is None:
            return x, y
        return (mixup if self.mix == "mixup" else cutmix)(x, y, gen, self.mix_alpha)


def _crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return random_flip(random_crop(x, gen), gen)


def make_augment(name: str, mix_alpha: float | None = None) -> Augmentation | None:
    """The augmentation called ``name`` (see :data:`AUGMENTATIONS`), or None for ``none``;
    ``mix_alpha``: the Beta parameter of mixup/cutmix (default :data:`MIX_ALPHA`)."""
    if name not in AUGMENTATIONS:
        raise BadInput(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return None
    mix = mixing(name)
    parts = name.split("+")[: -1 if mix else None]
    geometric = {(): None, ("crop",): random_crop, ("crop", "flip"): _crop_flip}[tuple(parts)]
    alpha = MIX_ALPHA if mix_alpha is None else mix_alpha
    if not alpha > 0:
        raise BadInput(f"the mixing alpha must be > 0, got {alpha}")
    return Augmentation(name, geometric, mix, alpha)
