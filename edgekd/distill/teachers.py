"""Where the student's targets come from: cached teacher outputs, or teachers run live.

Response-based losses see the ensemble of every teacher (soft targets averaged at the
temperature); feature and relation losses see the first teacher's taps.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.distill.cache import TeacherOutputs
from edgekd.distill.ensemble import ensemble_logits
from edgekd.distill.features import FeatureTap
from edgekd.distill.losses import Outputs
from edgekd.models.teacher import OnnxTeacher


class CachedTeacher:
    """Teacher outputs read by sample index: ensemble logits in memory, taps memory-mapped."""

    def __init__(self, logits: torch.Tensor, primary: TeacherOutputs | None = None):
        self.logits = logits
        self.primary = primary
        self.taps = primary is not None and (
            bool(primary.features) or primary.embedding is not None
        )

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Outputs:
        if not self.taps:
            return Outputs(self.logits[idx], [])
        _, features, embedding = self.primary.batch(idx)
        return Outputs(self.logits[idx], features, embedding)


class LiveTeacher:
    """Teachers run on every batch: for randomly augmented inputs, which no cache can hold."""

    def __init__(
        self,
        models: list[nn.Module],
        weights: list[float] | None,
        temperature: float,
        device: torch.device,
        layers: list[str] = (),
        embedding: bool = False,
    ):
        self.models = [m.eval() for m in models]
        self.devices = [
            torch.device("cpu") if isinstance(m, OnnxTeacher) else device for m in models
        ]
        for m, d in zip(self.models, self.devices, strict=True):
            m.to(d)
        self.weights = weights
        self.temperature = temperature
        self.tap = FeatureTap(models[0], list(layers), embedding) if layers or embedding else None

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Outputs:
        logits = [m(x.to(d)).float().cpu() for m, d in zip(self.models, self.devices, strict=True)]
        features, embedding = self.tap.take() if self.tap is not None else ([], None)
        return Outputs(
            ensemble_logits(logits, self.weights, self.temperature),
            [f.float() for f in features],
            None if embedding is None else embedding.float(),
        )

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
