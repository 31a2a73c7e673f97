"""Confidence intervals for comparing two models on the same validation samples.

The comparison is paired: both models are scored on every sample, and a bootstrap resample
draws samples (with both models' scores together), so that what the two models get right alike
cancels out and only their disagreements make the interval wide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
CHUNK_ELEMENTS = 2_000_000  # resampled indices drawn at once: 16 MB of int64, whatever the n


@dataclass(frozen=True)
class Interval:
    """A point estimate of the mean difference ``a - b`` and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    samples: int
    seed: int


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Mean of ``a - b`` over paired per-sample scores, with a percentile bootstrap interval:
    ``resamples`` draws of n samples with replacement (numpy's PCG64 seeded with ``seed``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(
            f"paired scores must be two equal, non-empty 1-d arrays: {a.shape}, {b.shape}"
        )
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"resamples {resamples} must be >= 1 and confidence {confidence} in (0, 1)"
        )
    d = a - b
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start : start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(d.mean()), float(low), float(high), confidence, resamples, n, seed)


def accuracy_gain(
    hits: np.ndarray,
    reference_hits: np.ndarray,
    *,
    names: tuple[str, str] = ("model", "reference"),
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Points of top-1 accuracy a model gains over a reference on the same samples (per-sample
    hits), with its paired bootstrap interval and the discordant counts behind it; ``names``
    label the two in the keys (``<name>_accuracy``, ``only_<name>_correct``)."""
    hit, ref = np.asarray(hits, dtype=bool), np.asarray(reference_hits, dtype=bool)
    ci = paired_bootstrap(hit, ref, resamples=resamples, confidence=confidence, seed=seed)
    model, reference = names
    return {
        "gain_pt": 100 * ci.estimate,
        "ci_pt": [100 * ci.low, 100 * ci.high],
        f"{model}_accuracy": float(hit.mean()),
        f"{reference}_accuracy": float(ref.mean()),
        f"only_{model}_correct": int((hit & ~ref).sum()),
        f"only_{reference}_correct": int((ref & ~hit).sum()),
        **{k: v for k, v in asdict(ci).items() if k not in ("estimate", "low", "high")},
    }
