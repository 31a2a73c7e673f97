"""Several teachers as one: their soft targets averaged (Bucilă et al. 2006; Hinton et al. 2015)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.errors import BadInput


def ensemble_logits(
    logits: list[np.ndarray | torch.Tensor], weights: list[float] | None, temperature: float
) -> torch.Tensor:
    """Logits whose ``softmax(./T)`` is the weighted mean of the teachers' ``softmax(l_i / T)``.

    That is ``T * log(sum_i w_i softmax(l_i / T))``, with the weights normalised to sum to 1
    (equal when None). A single teacher's logits come back unchanged, as float32.
    """
    if not logits:
        raise BadInput("an ensemble needs at least one teacher")
    if not temperature > 0:
        raise BadInput(f"temperature must be positive, got {temperature}")
    ts = [_float32(lg) for lg in logits]
    w = _normalised(weights, len(ts))
    classes = [t.shape[-1] for t in ts]
    if len(set(classes)) > 1:
        counts = ", ".join(f"teacher {i + 1} has {k}" for i, k in enumerate(classes))
        raise BadInput(f"the teachers disagree on the number of classes: {counts}")
    rows = [t.shape[0] for t in ts]
    if len(set(rows)) > 1:
        raise BadInput(f"the teachers' outputs cover different numbers of samples: {rows}")
    if len(ts) == 1:
        return ts[0]
    log_mix = None  # log sum_i w_i p_i, accumulated teacher by teacher to bound memory
    for t, wi in zip(ts, w, strict=True):
        if wi == 0:
            continue
        term = F.log_softmax(t / temperature, dim=-1) + math.log(wi)
        log_mix = term if log_mix is None else torch.logaddexp(log_mix, term)
    return temperature * log_mix


def _float32(logits: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(logits, torch.Tensor):
        return logits.float()
    return torch.from_numpy(np.array(logits, dtype=np.float32))  # a copy: memmaps are read-only


def _normalised(weights: list[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise BadInput(f"{len(weights)} ensemble weight(s) given for {n} teacher(s)")
    if not all(math.isfinite(v) and v >= 0 for v in weights) or sum(weights) <= 0:
        raise BadInput(f"ensemble weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights)
    return [v / total for v in weights]


def parse_teacher(text: str) -> tuple[str, str | None]:
    """``"model.py:Net@weights.pt"`` -> ``("model.py:Net", "weights.pt")``; ``"t.onnx"`` -> ``("t.onnx", None)``.

    The last ``@`` separates the weights, unless ``text`` is itself an existing file.
    """
    if not text.strip():
        raise BadInput("a teacher spec is empty; expected SPEC or SPEC@WEIGHTS")
    if "@" not in text or Path(text).exists():
        return text, None
    spec, _, weights = text.rpartition("@")
    if not spec or not weights:
        raise BadInput(f"{text!r}: expected a teacher as SPEC or SPEC@WEIGHTS")
    return spec, weights
