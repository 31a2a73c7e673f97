"""The control arm of a distillation: the same student trained on labels alone, and fingerprints
that show both arms started from the same weights and saw the same batches."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from edgekd.distill.augment import Labels, MixedLabels
from edgekd.distill.losses import Outputs


def state_sha256(model: nn.Module) -> str:
    """sha256 of a model's state (names, dtypes, shapes and values, in order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def no_teacher(idx: torch.Tensor, x: torch.Tensor) -> Outputs:
    """The teacher side of a labels-only objective, which reads nothing from it."""
    return Outputs(torch.empty(len(idx), 0), [])


class BatchFingerprint:
    """A batch observer (``fit(batches=...)``) that hashes every batch as the student sees it:
    sample indices, the augmented (mixed) inputs and the (mixed) labels with their shares.
    Equal digests, equal batches."""

    def __init__(self) -> None:
        self.batches = 0
        self._h = hashlib.sha256()

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, labels: Labels) -> None:
        parts = [idx, x]
        if isinstance(labels, MixedLabels):
            parts += [labels.first, labels.second, labels.weight]
        else:
            parts.append(labels)
        for t in parts:
            self._h.update(t.contiguous().numpy().tobytes())
        self.batches += 1

    def to_dict(self) -> dict[str, str | int]:
        return {"sha256": self._h.hexdigest(), "batches": self.batches}
