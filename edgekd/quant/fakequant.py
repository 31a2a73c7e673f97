"""Fake-quant modules: per-tensor activations (calibrated) and per-channel weights."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.quant.calibrators import get_calibrator, qparams

_RESERVOIR = 1 << 20  # activation values a calibrator sees (an even sample over all batches)
_BATCH_SAMPLE = 1 << 17  # values kept per batch: all of a small tensor, a sample of a large one


def _sample(values: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``values`` if there are at most ``n``, else ``n`` of them drawn at random, with replacement
    (seeded, so that calibration is reproducible): O(n) time and memory for the draw, where a
    permutation of all the values took seconds and gigabytes on 224x224 activations."""
    if values.numel() <= n:
        return values
    g = torch.Generator(device=values.device).manual_seed(seed)
    return values[torch.randint(values.numel(), (n,), generator=g, device=values.device)]


class ActFakeQuant(nn.Module):
    """Per-tensor activation fake-quant with a range found by calibration.

    While ``observing``, it passes values through and records their exact min/max and a sample
    of them; ``finalize`` has the ``calibrator`` (edgekd.quant.calibrators) find a range in these
    and turns it into a scale and zero point; afterwards it rounds like the runtime will.
    """

    def __init__(self, qmin: int, qmax: int, calibrator: str = "percentile"):
        super().__init__()
        self.qmin, self.qmax = qmin, qmax
        get_calibrator(calibrator)  # unknown names fail here, not after calibration
        self.calibrator = calibrator
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.observing = False
        self.enabled = True  # off: values pass unchanged (sensitivity scores one layer at a time)
        self._samples: list[torch.Tensor] = []
        self._per_batch = _BATCH_SAMPLE
        self._lo = float("inf")
        self._hi = float("-inf")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x.detach())
            return x
        if not self.enabled:
            return x
        return torch.fake_quantize_per_tensor_affine(
            x, self.scale, self.zero_point, self.qmin, self.qmax
        )

    def _observe(self, x: torch.Tensor) -> None:
        flat = x.float().flatten()
        self._lo = min(self._lo, flat.min().item())
        self._hi = max(self._hi, flat.max().item())
        self._samples.append(_sample(flat, self._per_batch, len(self._samples)).cpu())
        while sum(len(c) for c in self._samples) > 4 * _RESERVOIR:  # bounded memory, and every
            self._per_batch //= 2  # batch, earlier or later, keeps the same share
            self._samples = [_sample(c, self._per_batch, i) for i, c in enumerate(self._samples)]

    def finalize(self) -> None:
        """Fix scale and zero point from the range the calibrator finds in what was observed."""
        if not self._samples:
            raise RuntimeError("activation quantizer saw no data during calibration")
        values = torch.cat(self._samples)
        values = _sample(values, _RESERVOIR, 0)  # an even sample over all batches
        find_range = get_calibrator(self.calibrator).find_range
        lo, hi = find_range(values, self._lo, self._hi, self.qmin, self.qmax)
        scale, zp = qparams(lo, hi, self.qmin, self.qmax)
        self.scale.fill_(scale)
        self.zero_point.fill_(zp)
        self.observing = False
        self._samples.clear()
        self._per_batch = _BATCH_SAMPLE

    def extra_repr(self) -> str:
        scale, zp = self.scale.item(), self.zero_point.item()
        return f"qmin={self.qmin}, qmax={self.qmax}, scale={scale:.4g}, zero_point={zp}"


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 weight fake-quant in [-qmax, qmax], used as a
    parametrization.

    The scale follows the weights during training; ``freeze`` stores it in a buffer so that the
    ONNX exporter sees constants and emits plain QuantizeLinear/DequantizeLinear.
    """

    def __init__(self, out_channels: int, qmax: int = 127):
        super().__init__()
        self.qmax = qmax
        self.register_buffer("scale", torch.ones(out_channels))
        self.register_buffer("zero_point", torch.zeros(out_channels, dtype=torch.int32))
        self.frozen = False
        self.enabled = True  # off: the float weights pass unchanged

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        if not self.frozen:
            amax = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8)
            self.scale.copy_(amax / self.qmax)
        # [-128, 127] is the range the ONNX exporter accepts; |w| / scale <= qmax by construction,
        # so the weights land in [-qmax, qmax] (TensorRT requires qmax <= 127).
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero_point, 0, -128, 127)

    def freeze(self) -> None:
        self.frozen = True


class BiasFakeQuant(nn.Module):
    """A bias rounded as the runtime stores it: int32 at input scale x weight scale (per output
    channel), used as a parametrization. Straight-through gradient; off while the input quantizer
    observes (its scale is not known yet) or while either quantizer is switched off."""

    def __init__(self, act: ActFakeQuant, weight: WeightFakeQuant):
        super().__init__()
        self._quantizers = (act, weight)  # a tuple: they are the model's modules, not this one's

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        act, weight = self._quantizers
        if act.observing or not (act.enabled and weight.enabled):
            return b
        scale = act.scale * weight.scale
        return b + (torch.round(b / scale) * scale - b).detach()
