"""Quantizer placement on the torchvision/timm corpus: what each runtime fuses, BN folded, parity.

Models are randomly initialised, with BatchNorm statistics estimated on random data first (so
that folding them matters), on 3x32x32 inputs.
"""

from __future__ import annotations

import collections
from pathlib import Path

import corpus
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgekd.export.lint import lint_tensorrt
from edgekd.export.onnx_export import export_onnx
from edgekd.models.batchnorm import reestimate_bn
from edgekd.quant.drift import layer_points
from edgekd.quant.prepare import (
    calibrate,
    freeze,
    placement_summary,
    prepare_qat,
    trace,
)
from edgekd.quant.scheme import get_scheme

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.zoo]
MODELS = [n for n in corpus.available() if n not in ("resnet50", "mobilenet_v3_large")]
needs_zoo = pytest.mark.skipif(not corpus.has("torchvision"), reason="torchvision not installed")


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = corpus.build(name)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    reestimate_bn(model, batches)
    return model.eval()


def _export(name: str, scheme: str, tmp_path: Path) -> tuple[nn.Module, onnx.ModelProto, Path]:
    q = prepare_qat(_model(name), get_scheme(scheme))
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calibrate(q, x.split(8))
    freeze(q)
    path = tmp_path / f"{name}_{scheme}.onnx"
    return q.eval(), export_onnx(q.eval(), x[:2], path, scheme=get_scheme(scheme)), path


def _optimized(path: Path) -> tuple[ort.InferenceSession, collections.Counter]:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(
        n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node
    )
    return session, ops


def _quantized_layers(q: nn.Module) -> int:
    return sum(1 for m in q.modules() if parametrize.is_parametrized(m, "weight"))


@pytest.mark.parametrize("name", MODELS)
def test_tensorrt_export_lints_clean(name: str, tmp_path: Path) -> None:
    if name != "convnet" and not corpus.has("torchvision"):
        pytest.skip("torchvision not installed")
    _, proto, _ = _export(name, "tensorrt", tmp_path)
    assert [str(v) for v in lint_tensorrt(proto)] == []


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_export_fuses_every_conv_and_folds_bn(name: str, tmp_path: Path) -> None:
    """Every quantized Conv/Gemm runs as QLinearConv/QGemm after ONNX Runtime's optimizations;
    convnext_tiny's Linear layers run on NHWC tensors (MatMul: MatMulIntegerToFloat) instead."""
    if name != "convnet" and not corpus.has("torchvision"):
        pytest.skip("torchvision not installed")
    q, proto, path = _export(name, "onnxruntime", tmp_path)
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    _, ops = _optimized(path)
    integer = ops["QLinearConv"] + ops["QGemm"] + ops["MatMulIntegerToFloat"]
    assert integer == _quantized_layers(q)
    assert ops["Conv"] + ops["FusedConv"] + ops["Gemm"] == 0


@needs_zoo
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_relu6_convs_have_one_quantizer_each(name: str, tmp_path: Path) -> None:
    """ReLU6 is fused: one QuantizeLinear per conv output plus the graph input, no Clip left."""
    if name not in MODELS:
        pytest.skip("timm not installed")
    q, proto, _ = _export(name, "onnxruntime", tmp_path)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["Clip"] == 0
    # the graph input, each conv output, and each residual Add output feeding the next block
    assert ops["QuantizeLinear"] <= _quantized_layers(q) + 1 + ops["Add"]


@needs_zoo
@pytest.mark.parametrize("scheme", ["onnxruntime", "tensorrt"])
def test_parity_without_fusion_is_exact_and_fused_stays_close(scheme: str, tmp_path: Path) -> None:
    """The fake-quant student computes what the Q/DQ graph says: to float rounding with ONNX
    Runtime's QDQ fusion off (int32 biases aside), and within a bound with the integer kernels
    (a value that lands across a rounding boundary moves by a quantization step, and a random
    network amplifies that: these bounds are for resnet18, the least chaotic of the corpus)."""
    q, _, path = _export("resnet18", scheme, tmp_path)
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = q(x).numpy()
    spread = float(ref.max() - ref.min())
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    plain = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = plain.run(None, {"input": x.numpy()})[0]
    if scheme == "tensorrt":  # float biases: the same arithmetic, but for a rare value that a
        # different summation order puts across a rounding boundary
        per_sample = np.abs(out - ref).max(1)
        assert np.mean(per_sample < 1e-4 * spread) >= 0.9
    fused, _ = _optimized(path)
    out = fused.run(None, {"input": x.numpy()})[0]
    assert np.abs(out - ref).max() < 0.1 * spread
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


@needs_zoo
def test_timm_batchnorm_act_is_folded(tmp_path: Path) -> None:
    if "efficientnet_lite0" not in MODELS:
        pytest.skip("timm not installed")
    model = _model("efficientnet_lite0")
    q = prepare_qat(model, get_scheme("tensorrt"))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in q.modules())
    folded = trace(model)  # what prepare_qat quantizes: BN folded, still float
    assert "batch_norm" not in str(folded.graph)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-3, atol=1e-3)


def _layer_names(q: nn.Module) -> list[str]:
    return [n for n, m in q.named_modules() if parametrize.is_parametrized(m, "weight")]


@needs_zoo
def test_every_activation_is_out_of_place() -> None:
    q = prepare_qat(_model("mobilenet_v2"), get_scheme("onnxruntime"))
    assert not [n for n, m in q.named_modules() if getattr(m, "inplace", False)]


@needs_zoo
def test_drift_matches_every_layer_of_a_nested_model(tmp_path: Path) -> None:
    q, proto, _ = _export("mobilenet_v2", "onnxruntime", tmp_path)
    points, missing = layer_points(q, proto)
    assert len(points) == _quantized_layers(q) == 53 and missing == []
    assert [p.module for p in points] == _layer_names(q)


@needs_zoo
def test_placement_summary_says_what_stays_float() -> None:
    summary = placement_summary(prepare_qat(_model("mobilenet_v3_small"), get_scheme("tensorrt")))
    assert summary["Conv2d"]["quantized_inputs"] == summary["Conv2d"]["count"] == 52
    assert summary["Hardsigmoid"]["quantized_output"] == 0  # SE gates stay float for TensorRT


def test_reestimate_bn_replaces_stale_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.Dropout(0.5))
    model.eval()
    x = 3 + 2 * torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        conv_out = model[0](x)
    assert reestimate_bn(model, x.split(16)) == 4
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    # the equal-weight average of the 4 batches' unbiased variances
    var = torch.stack([c.var((0, 2, 3)) for c in conv_out.split(16)]).mean(0)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.01 and not model.training


def test_reestimate_bn_without_batches_keeps_the_statistics() -> None:
    bn = nn.BatchNorm2d(2)
    bn.running_mean.fill_(5.0)
    assert reestimate_bn(nn.Sequential(bn), []) == 0
    assert bn.running_mean.tolist() == [5.0, 5.0]
