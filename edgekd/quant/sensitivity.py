"""Per-layer quantization sensitivity and the choice of layers to keep in float.

Each quantizable layer is quantized alone (the rest stay float), calibrated, and scored by the KL
divergence of its outputs from the teacher's and by its accuracy: the layers whose quantization
costs most are the ones worth keeping in float (FP16 on TensorRT, fp32 on ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import BadInput
from edgekd.quant.prepare import calibrate, layer_quantizers, prepare_qat
from edgekd.quant.scheme import QuantScheme

AUTO_TOLERANCE_PT = 0.3  # --keep-float auto: PTQ within this many points of the float student


@dataclass
class Probe:
    """Inputs on which layers are scored: calibration batches, and scored samples with labels and
    the teacher's logits."""

    calib: torch.Tensor
    x: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor


@dataclass
class Score:
    """One model variant scored against the teacher and the labels."""

    kl: float  # mean KL(teacher || model) at T=1, nats
    accuracy: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def score(model: nn.Module, probe: Probe, batch: int = 256) -> Score:
    model.eval()
    logits = torch.cat([model(probe.x[i : i + batch]) for i in range(0, len(probe.x), batch)])
    kl = F.kl_div(
        F.log_softmax(logits, 1), F.log_softmax(probe.teacher_logits, 1), log_target=True,
        reduction="batchmean",
    )  # fmt: skip
    acc = (logits.argmax(1) == probe.labels).float().mean()
    return Score(float(kl), float(acc))


def ptq(
    student: nn.Module, scheme: QuantScheme, calibrator: str, probe: Probe, keep_float: set[str]
) -> nn.Module:
    """``student`` quantized after training (no QAT), with ``keep_float`` layers left in float."""
    qmodel = prepare_qat(student, scheme, calibrator, keep_float=keep_float)
    calibrate(qmodel, probe.calib.split(128))
    return qmodel


def layer_sensitivity(
    student: nn.Module, scheme: QuantScheme, calibrator: str, probe: Probe
) -> list[dict]:
    """Every quantizable layer quantized alone, most sensitive (highest KL) first.

    One fake-quant model is traced and calibrated (calibration sees float values everywhere, so
    each quantizer gets the range it would get alone); then each layer's own quantizers are
    switched on in turn, the other layers' off. Quantizers that belong to no layer (residual
    Adds, qnn's every op) stay on, as in every PTQ model of the scheme.
    """
    qmodel = ptq(student, scheme, calibrator, probe, set())
    own = layer_quantizers(qmodel, scheme)
    rows = []
    for layer, quantizers in own.items():
        for q in (q for qs in own.values() for q in qs):
            q.enabled = False
        for q in quantizers:
            q.enabled = True
        rows.append({"layer": layer, **score(qmodel, probe).to_dict()})
    return sorted(rows, key=lambda r: -r["kl"])


def parse_keep_float(text: str | None) -> int | str:
    """``--keep-float``: a layer count, or "auto"; absent means 0."""
    if text is None or text == "auto":
        return text or 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise BadInput(f"--keep-float {text!r}: expected a layer count (0 or more) or 'auto'")
    return n


def check_keep_float(keep: int | str, layers: list[str]) -> None:
    if isinstance(keep, int) and keep > len(layers):
        raise BadInput(
            f"--keep-float {keep}: the student has only {len(layers)} quantizable layer(s) "
            f"({', '.join(layers)}); keep at most {len(layers)}, or use --target with a float "
            "precision to skip INT8"
        )


def choose_keep_float(
    keep: int | str,
    student: nn.Module,
    scheme: QuantScheme,
    calibrator: str,
    probe: Probe,
    ranking: list[dict],
) -> dict:
    """The layers to keep in float: the ``keep`` most sensitive, or with "auto" the fewest of the
    most sensitive that bring the PTQ model within AUTO_TOLERANCE_PT of the float student (at most
    half the layers; INT8 must still carry most of the model). Where no count within that bound
    gets there, the count that did best."""
    order = [r["layer"] for r in ranking]
    if isinstance(keep, int):
        return {"mode": str(keep), "layers": order[:keep], "trail": []}
    floor = score(student, probe).accuracy - AUTO_TOLERANCE_PT / 100
    trail = []
    for n in range(len(order) // 2 + 1):
        s = score(ptq(student, scheme, calibrator, probe, set(order[:n])), probe)
        trail.append({"kept": n, **s.to_dict()})
        if s.accuracy >= floor:
            break
    best = max(trail, key=lambda t: t["accuracy"])  # the first, fewest layers, among equals
    return {
        "mode": "auto",
        "rule": f"fewest most-sensitive layers with PTQ accuracy within {AUTO_TOLERANCE_PT} pt "
        "of the float student on the probe set, at most half the layers",
        "reached": best["accuracy"] >= floor,
        "layers": order[: best["kept"]],
        "trail": trail,
    }
