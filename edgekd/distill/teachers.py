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
    """Teachers run on every batch: for randomly augmented or mixed inputs, which no cache can
    hold.

    PyTorch teachers run in inference mode, in channels-last memory format (weights, and inputs
    when they are images) like the student, and on CUDA under autocast (bfloat16 where the GPU
    has it, else float16); every output is float32. ONNX teachers run in ONNX Runtime on the CPU.
    """

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
            if not isinstance(m, OnnxTeacher):
                m.to(d, memory_format=torch.channels_last)  # 4-D weights only: the convolutions
        self.weights = weights
        self.temperature = temperature
        self.half = torch.bfloat16 if torch.cuda.is_available() and (
            torch.cuda.is_bf16_supported()) else torch.float16  # fmt: skip
        self.tap = FeatureTap(models[0], list(layers), embedding) if layers or embedding else None

    def _forward(self, model: nn.Module, device: torch.device, x: torch.Tensor) -> torch.Tensor:
        if isinstance(model, OnnxTeacher):
            return model(x)
        layout = torch.channels_last if x.ndim == 4 else torch.contiguous_format
        with torch.autocast("cuda", dtype=self.half, enabled=device.type == "cuda"):
            return model(x.to(device, memory_format=layout))

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Outputs:
        with torch.inference_mode():
            logits = [
                self._forward(m, d, x).float().cpu()
                for m, d in zip(self.models, self.devices, strict=True)
            ]
            features, embedding = self.tap.take() if self.tap is not None else ([], None)
            ensemble = ensemble_logits(logits, self.weights, self.temperature)
        # inference-mode tensors cannot take part in autograd: the losses get float32 copies
        return Outputs(
            ensemble.clone(),
            [f.float().clone() for f in features],
            None if embedding is None else embedding.float().clone(),
        )

    def close(self) -> None:
        """Remove the taps; the PyTorch teachers back on the CPU in the default memory format."""
        if self.tap is not None:
            self.tap.close()
        for m in self.models:
            if not isinstance(m, OnnxTeacher):
                m.to("cpu", memory_format=torch.contiguous_format)
