"""Export PyTorch models (float or fake-quant) to ONNX, with a dynamic batch axis unless the scheme
needs static shapes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edgekd.atomic import write_bytes
from edgekd.export.qdq import finalize_qdq
from edgekd.quant.scheme import QuantScheme

OPSET = 17
INPUT, OUTPUT = "input", "logits"


def to_onnx(model: nn.Module, sample: torch.Tensor, static: bool = False) -> onnx.ModelProto:
    """Trace ``model`` on ``sample`` (batch >= 1) into an ONNX model with a dynamic batch axis, or
    with ``static`` the sample's batch fixed."""
    model = model.eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constants are expected here
        torch.onnx.export(
            model,
            (sample,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes=None if static else {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def export_onnx(
    model: nn.Module,
    sample: torch.Tensor,
    path: str | Path,
    *,
    scheme: QuantScheme | None = None,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Export ``model`` to ``path`` atomically; a fake-quant model's ``scheme`` finalises its Q/DQ
    (and fixes the batch at 1 for schemes that need static shapes)."""
    static = scheme is not None and scheme.static_shapes
    proto = to_onnx(model, sample[:1] if static else sample, static=static)
    if scheme is not None:
        proto = finalize_qdq(proto, int32_bias=scheme.int32_bias)
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edgekd"
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(path, proto.SerializeToString())
    return proto
