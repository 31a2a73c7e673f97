"""Fake-quant placement per scheme, calibration, Q/DQ export and ONNX Runtime parity."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.models.students import StudentSpec, build_student
from edgekd.quant.fakequant import ActFakeQuant
from edgekd.quant.prepare import act_quantizers, calibrate, freeze, prepare_qat
from edgekd.quant.scheme import SCHEMES, get_scheme
from edgekd.runners.ort_runner import OrtRunner


def _student() -> nn.Module:
    torch.manual_seed(0)
    model = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10)
    for m in model.modules():  # non-trivial BN statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _quantized(scheme: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    model = _student()
    x = torch.randn(64, 1, 16, 16)
    q = prepare_qat(model, SCHEMES[scheme])
    calibrate(q, [x[:32], x[32:]])
    freeze(q)
    return model, q.eval(), x


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _optimized_ops(path: Path, tmp_path: Path) -> collections.Counter:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(opts.optimized_model_filepath))


def test_bn_folding_keeps_the_function() -> None:
    model, q, x = _quantized("onnxruntime")
    for m in q.modules():
        assert not isinstance(m, nn.BatchNorm2d)
    with torch.no_grad():
        ref, out = model(x), q(x)
    # quantized vs float: close, but not identical (the fake-quant is active)
    assert 0 < (ref - out).abs().max() < 0.25 * ref.abs().max()
    assert all(p.requires_grad for p in q.parameters())


def test_placement_onnxruntime_scheme_quantizes_conv_outputs() -> None:
    _, q, _ = _quantized("onnxruntime")
    quants = act_quantizers(q)
    # input + one after each of the 6 conv-relu + one before the classifier
    assert len(quants) == 8
    assert all(a.qmin == 0 and a.qmax == 255 for a in quants)
    # after ReLU the range starts at 0: the zero point is 0, so ORT can drop the ReLU
    assert [a.zero_point.item() for a in quants[1:7]] == [0] * 6


def test_placement_tensorrt_scheme_quantizes_conv_inputs_symmetrically() -> None:
    _, q, _ = _quantized("tensorrt")
    quants = act_quantizers(q)
    assert len(quants) == 7  # the inputs of 6 convs and of the classifier
    assert all(a.qmin == -128 and a.zero_point.item() == 0 for a in quants)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_qdq_export_is_valid_and_matches_pytorch(scheme: str, tmp_path: Path) -> None:
    _, q, x = _quantized(scheme)
    path = tmp_path / "int8.onnx"
    proto = export_onnx(q, x[:1], path, scheme=SCHEMES[scheme])
    onnx.checker.check_model(onnx.load(path), full_check=True)
    ops = _ops(proto)
    assert ops["Conv"] == 6 and ops["Gemm"] == 1
    assert ops["Identity"] == 0
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            producers = {o: n for n in proto.graph.node for o in n.output}
            w_dq = producers[node.input[1]]
            assert w_dq.op_type == "DequantizeLinear"
            w = inits[w_dq.input[0]]
            assert w.dtype == np.int8 and np.abs(w).max() <= 127  # TensorRT's weight range
            if SCHEMES[scheme].int32_bias:  # ORT: int32 behind a DequantizeLinear
                b_dq = producers[node.input[2]]
                assert b_dq.op_type == "DequantizeLinear"
                assert inits[b_dq.input[0]].dtype == np.int32
            else:  # TensorRT: float, it quantizes biases itself
                assert inits[node.input[2]].dtype == np.float32
    with torch.no_grad():
        ref = q(x).numpy()
    if SCHEMES[scheme].static_shapes:  # QNN: batch fixed at 1, the runner feeds row by row
        with OrtRunner(path) as runner:
            assert runner.fixed_batch == 1
            out = runner.predict(x.numpy())
    else:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = sess.run(None, {"input": x.numpy()})[0]
    assert out.shape == (64, 10)
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_onnxruntime_scheme_fuses_into_integer_kernels(tmp_path: Path) -> None:
    _, q, x = _quantized("onnxruntime")
    path = tmp_path / "int8.onnx"
    export_onnx(q, x[:1], path, scheme=SCHEMES["onnxruntime"])
    ops = _optimized_ops(path, tmp_path)
    assert ops["QLinearConv"] == 6 and ops["QGemm"] == 1, ops
    assert ops["Conv"] == ops["FusedConv"] == 0, ops


def test_int8_file_is_smaller_than_fp32(tmp_path: Path) -> None:
    model, q, x = _quantized("onnxruntime")
    export_onnx(model, x[:1], tmp_path / "fp32.onnx")
    export_onnx(q, x[:1], tmp_path / "int8.onnx", scheme=SCHEMES["onnxruntime"])
    assert (tmp_path / "int8.onnx").stat().st_size < 0.5 * (tmp_path / "fp32.onnx").stat().st_size


def test_metadata_is_written(tmp_path: Path) -> None:
    model = _student()
    proto = export_onnx(
        model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", metadata={"mean": "0.5"}
    )
    assert {p.key: p.value for p in proto.metadata_props}["mean"] == "0.5"


def test_activation_calibration_percentile_clips_outliers() -> None:
    q = ActFakeQuant(0, 255)
    q.observing = True
    x = torch.rand(100_000)
    x[0] = 1000.0  # one outlier
    q(x)
    q.finalize()
    assert q.scale.item() < 2.0 / 255  # the range follows the bulk, not the outlier
    assert q.zero_point.item() == 0


def test_calibration_without_data_is_an_error() -> None:
    q = ActFakeQuant(-128, 127)
    with pytest.raises(RuntimeError, match="saw no data"):
        q.finalize()


def test_untraceable_student_is_bad_input() -> None:
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.conv(x)
            return -self.conv(x)

    with pytest.raises(BadInput, match="cannot be traced"):
        prepare_qat(Branchy(), SCHEMES["tensorrt"])


def test_unknown_scheme() -> None:
    with pytest.raises(BadInput, match="known: onnxruntime, qnn, tensorrt"):
        get_scheme("qnnpack")


@pytest.mark.parametrize("scheme", ["onnxruntime", "qnn"])
def test_biases_are_trained_as_the_runtime_stores_them(scheme: str, tmp_path: Path) -> None:
    """Schemes with int32 biases round each bias to input scale x weight scale in the fake-quant
    model too: the exported int32 values times their scale give back the PyTorch biases, and
    ONNX Runtime without its fusions computes what PyTorch does."""
    x = torch.randn(64, 1, 16, 16)
    q = prepare_qat(_student(), SCHEMES[scheme])
    calibrate(q, [x[:32], x[32:]])
    biased = [m for m in q.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None]
    assert biased and all(type(m.parametrizations.bias[0]).__name__ == "BiasFakeQuant"
                          for m in biased)  # fmt: skip
    freeze(q)
    q.eval()
    path = tmp_path / "m.onnx"
    proto = export_onnx(q, x[:1], path, scheme=get_scheme(scheme))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    stored = [
        (inits[n.input[0]].astype(np.float64) * inits[n.input[1]]).astype(np.float32)
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int32
    ]
    assert len(stored) == len(biased)
    torch_biases = sorted(float(b) for m in biased for b in m.bias.detach().flatten())
    onnx_biases = sorted(float(b) for s in stored for b in s.flatten())
    np.testing.assert_allclose(onnx_biases, torch_biases, rtol=1e-5, atol=1e-7)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    xi = x[:1] if get_scheme(scheme).static_shapes else x
    out = session.run(None, {"input": xi.numpy()})[0]
    with torch.no_grad():
        ref = q(xi).numpy()
    assert np.abs(out - ref).max() <= 1e-4 * (ref.max() - ref.min())
