"""Predicting many rows with a model whose batch axis may be fixed or bounded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PREDICT_BATCH = 256  # rows per batch when predicting with a dynamic batch axis


def predict(
    infer: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    batch: int = PREDICT_BATCH,
    fixed_batch: int | None = None,
    max_batch: int | None = None,
) -> np.ndarray:
    """Outputs of ``infer`` for every row of ``x``.

    A model with a fixed batch gets batches of exactly that size, the last one padded with zeros
    (the padding's rows dropped); otherwise batches of ``batch`` rows, at most ``max_batch``.
    """
    step = fixed_batch or min(batch, max_batch or batch)
    pad = (-len(x)) % step if fixed_batch else 0
    padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    outputs = [infer(padded[i : i + step]) for i in range(0, len(padded), step)]
    return np.concatenate(outputs)[: len(x)]
