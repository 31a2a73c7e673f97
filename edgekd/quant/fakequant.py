"""Fake-quant modules: per-tensor activations (calibrated) and per-channel weights."""

from __future__ import annotations

import torch
from torch import nn

_RESERVOIR = 1 << 20  # activation values kept for percentile calibration


class ActFakeQuant(nn.Module):
    """Per-tensor activation fake-quant with a range found by calibration.

    While ``observing``, it passes values through and records their range; ``finalize`` turns
    the range into a scale and zero point; afterwards it rounds like the runtime will.
    """

    def __init__(self, qmin: int, qmax: int, percentile: float = 99.99):
        super().__init__()
        self.qmin, self.qmax = qmin, qmax
        self.percentile = percentile
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.observing = False
        self._samples: list[torch.Tensor] = []
        self._lo = float("inf")
        self._hi = float("-inf")

    @property
    def symmetric(self) -> bool:
        return self.qmin < 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x.detach())
            return x
        return torch.fake_quantize_per_tensor_affine(
            x, self.scale, self.zero_point, self.qmin, self.qmax
        )

    def _observe(self, x: torch.Tensor) -> None:
        flat = x.float().flatten()
        self._lo = min(self._lo, flat.min().item())
        self._hi = max(self._hi, flat.max().item())
        keep = max(1, _RESERVOIR // 64)
        if flat.numel() > keep:
            flat = flat[torch.randint(flat.numel(), (keep,), device=flat.device)]
        self._samples.append(flat.cpu())

    def finalize(self) -> None:
        """Fix scale and zero point from what was observed (percentile of values, clipped)."""
        if not self._samples:
            raise RuntimeError("activation quantizer saw no data during calibration")
        values = torch.cat(self._samples)[:_RESERVOIR]
        q = self.percentile / 100.0
        hi = min(self._hi, torch.quantile(values, q).item())
        lo = max(self._lo, torch.quantile(values, 1.0 - q).item())
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.symmetric:
            amax = max(abs(lo), abs(hi), 1e-8)
            scale, zp = amax / self.qmax, 0
        else:
            scale = max(hi - lo, 1e-8) / (self.qmax - self.qmin)
            zp = int(round(self.qmin - lo / scale))
            zp = min(max(zp, self.qmin), self.qmax)
        self.scale.fill_(scale)
        self.zero_point.fill_(zp)
        self.observing = False
        self._samples.clear()

    def extra_repr(self) -> str:
        scale, zp = self.scale.item(), self.zero_point.item()
        return f"qmin={self.qmin}, qmax={self.qmax}, scale={scale:.4g}, zero_point={zp}"


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 weight fake-quant, used as a parametrization.

    The scale follows the weights during training; ``freeze`` stores it in a buffer so that the
    ONNX exporter sees constants and emits plain QuantizeLinear/DequantizeLinear.
    """

    def __init__(self, out_channels: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(out_channels))
        self.register_buffer("zero_point", torch.zeros(out_channels, dtype=torch.int32))
        self.frozen = False

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            amax = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8)
            self.scale.copy_(amax / 127.0)
        # [-128, 127] is the range the ONNX exporter accepts; |w| / scale <= 127 by construction,
        # so the weights land in [-127, 127] as TensorRT requires.
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero_point, 0, -128, 127)

    def freeze(self) -> None:
        self.frozen = True
