"""Activation-range calibrators: from what a quantizer observed to the range it quantizes.

During calibration an :class:`~edgekd.quant.fakequant.ActFakeQuant` keeps the exact minimum and
maximum of its input and a random sample of the values (at most 2^20 of them). A calibrator turns
these into the ``(lo, hi)`` range to quantize; :func:`qparams` turns the range into the scale and
zero point of the scheme's integer type.

- ``max``: the observed minimum and maximum.
- ``percentile``: the 0.01th and 99.99th percentiles of the sample, clipped to the observed range.
- ``entropy``: TensorRT's threshold search on a 2048-bin histogram of ``|x|``: the clip value
  whose histogram quantized to the integer type's levels stays closest, in KL divergence, to the
  histogram with the clipped tail folded into its last bin. As in NVIDIA's pytorch-quantization,
  the first bin (the zeros a ReLU makes) counts as much as the second. Symmetric types search a
  clip value for ``|x|``; asymmetric ones (uint8) keep the minimum and search the top of the
  range from it, so that signed data (a normalised image's background) is not clipped at its
  most common value.
- ``mse``: the observed range shrunk by the factor (1/128 ... 1) whose quantize→dequantize round
  trip has the least mean squared error on the sample. The clipped values' error counts too, so
  it cuts the range short only where that costs less than a coarser grid: a few outliers among
  100k values are kept, where percentile and entropy drop them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edgekd.errors import BadInput

PERCENTILE = 99.99
HISTOGRAM_BINS = 2048  # TensorRT's entropy calibrator
MSE_CANDIDATES = 128  # ranges tried: the observed one times 1/128, 2/128, ..., 1
MSE_SAMPLE = 1 << 17  # values the error is measured on (a random subset of a larger sample)

# (sample of the values, observed min, observed max, qmin, qmax) -> (lo, hi)
RangeFinder = Callable[[torch.Tensor, float, float, int, int], tuple[float, float]]


@dataclass(frozen=True)
class Calibrator:
    """A way to find an activation range, and how records name it."""

    label: str
    find_range: RangeFinder


def qparams(lo: float, hi: float, qmin: int, qmax: int) -> tuple[float, int]:
    """Scale and zero point that put ``[lo, hi]`` (widened to hold 0) onto ``[qmin, qmax]``.

    Symmetric (zero point 0, scale amax / qmax) when ``qmin < 0``, else asymmetric.
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if qmin < 0:
        return max(abs(lo), abs(hi), 1e-8) / qmax, 0
    scale = max(hi - lo, 1e-8) / (qmax - qmin)
    zp = int(round(qmin - lo / scale))
    return scale, min(max(zp, qmin), qmax)


def _max(values: torch.Tensor, lo: float, hi: float, qmin: int, qmax: int) -> tuple[float, float]:
    return lo, hi


def _percentile(
    values: torch.Tensor, lo: float, hi: float, qmin: int, qmax: int
) -> tuple[float, float]:
    q = PERCENTILE / 100
    return max(lo, torch.quantile(values, 1 - q).item()), min(hi, torch.quantile(values, q).item())


def _smooth(h: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """``h`` with ``eps`` moved onto its empty bins from the others, so that KL stays finite (the
    rule of MXNet's and ONNX Runtime's entropy calibrators)."""
    empty = h == 0
    filled = h.size - empty.sum()
    return h + np.where(empty, eps, -eps * empty.sum() / max(filled, 1))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two unnormalised histograms; infinite where q misses mass of p."""
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    if (q[mask] <= 0).any():
        return float("inf")
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


def _expanded(bins: np.ndarray, filled: np.ndarray, levels: int) -> np.ndarray:
    """``bins`` merged into ``levels`` levels of (nearly) equal width, each level's mass spread
    back evenly over its ``filled`` bins."""
    level = np.arange(len(bins)) * levels // len(bins)
    mass = np.bincount(level, weights=bins, minlength=levels)
    count = np.bincount(level, weights=filled, minlength=levels)
    return np.where(filled, mass[level] / np.maximum(count[level], 1), 0.0)


def entropy_bins(hist: np.ndarray, levels: int) -> int:
    """How many leading bins of ``hist`` to keep: the count ``i >= levels`` with the least
    KL(P || Q), where P is the first ``i`` bins with the rest folded into the last, and Q the
    same ``i`` bins (without the rest) merged into ``levels`` levels and expanded back."""
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i]: the mass from bin i on
    best, best_kl = len(hist), float("inf")
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        if i < len(hist):
            p[-1] += tail[i]
        q = _expanded(hist[:i], p > 0, levels)
        kl = _kl(_smooth(p), _smooth(q)) if q.any() else float("inf")
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def _entropy(
    values: torch.Tensor, lo: float, hi: float, qmin: int, qmax: int
) -> tuple[float, float]:
    if qmin >= 0:  # asymmetric: clip only the top of [lo, hi]; all 256 levels over it
        lo = min(lo, 0.0)
        width = hi - lo
        if width <= 0:
            return lo, hi
        t = width * _entropy_fraction(values.float() - lo, width, qmax - qmin + 1)
        return lo, lo + t
    amax = max(abs(lo), abs(hi))  # symmetric: a clip value for |x|, 128 levels a sign
    if amax == 0:
        return lo, hi
    t = amax * _entropy_fraction(values.float().abs(), amax, (qmax - qmin + 1) // 2)
    return max(lo, -t), min(hi, t)


def _entropy_fraction(values: torch.Tensor, top: float, levels: int) -> float:
    """The share of ``[0, top]`` that the KL search keeps for non-negative ``values``."""
    hist = torch.histc(values, HISTOGRAM_BINS, 0, top).double().numpy()
    hist[0] = hist[1]  # a spike at the bottom (ReLU zeros, an image's background) must not
    return entropy_bins(hist, levels) / HISTOGRAM_BINS  # decide the clip


def quantization_mse(values: torch.Tensor, lo: float, hi: float, qmin: int, qmax: int) -> float:
    """Mean squared error of quantizing ``values`` to the range ``[lo, hi]`` and back."""
    scale, zp = qparams(lo, hi, qmin, qmax)
    deq = torch.fake_quantize_per_tensor_affine(values, scale, zp, qmin, qmax)
    return (deq - values).square().mean().item()


def _mse(values: torch.Tensor, lo: float, hi: float, qmin: int, qmax: int) -> tuple[float, float]:
    values = values.float()
    if values.numel() > MSE_SAMPLE:
        g = torch.Generator().manual_seed(0)
        values = values[torch.randperm(values.numel(), generator=g)[:MSE_SAMPLE]]
    n = MSE_CANDIDATES
    ranges = [(lo * k / n, hi * k / n) for k in range(1, n + 1)]
    errors = [quantization_mse(values, a, b, qmin, qmax) for a, b in ranges]
    return ranges[int(np.argmin(errors))]


CALIBRATORS: dict[str, Calibrator] = {
    "max": Calibrator("max", _max),
    "percentile": Calibrator(f"percentile {PERCENTILE:g}", _percentile),
    "entropy": Calibrator("entropy", _entropy),
    "mse": Calibrator("mse", _mse),
}


def get_calibrator(name: str) -> Calibrator:
    """The calibrator called ``name``."""
    try:
        return CALIBRATORS[name]
    except KeyError:
        raise BadInput(f"unknown calibrator {name!r}; valid: {', '.join(CALIBRATORS)}") from None
