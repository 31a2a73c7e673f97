"""The QNN scheme, per-layer sensitivity, --keep-float, and layers no scheme quantizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.export.tensorrt import for_target
from edgekd.models.students import StudentSpec, build_student
from edgekd.pipeline import compress
from edgekd.quant.prepare import (
    calibrate,
    freeze,
    prepare_qat,
    quantizable_layers,
    unquantizable_layers,
)
from edgekd.quant.scheme import get_scheme
from edgekd.quant.sensitivity import (
    Probe,
    check_keep_float,
    choose_keep_float,
    layer_sensitivity,
    parse_keep_float,
    score,
)
from edgekd.runners.ort_runner import OrtRunner
from edgekd.targets import load_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LAYERS = ["features.0.0", "features.1.0", "features.3.0", "features.4.0", "features.6.0"]


def _student() -> nn.Module:
    torch.manual_seed(0)
    return build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()


def _qdq_model(scheme: str, tmp_path: Path, **kw) -> tuple[nn.Module, onnx.ModelProto, Path]:
    q = prepare_qat(_student(), get_scheme(scheme), **kw)
    x = torch.randn(64, 1, 16, 16)
    calibrate(q, [x])
    freeze(q)
    path = tmp_path / f"{scheme}.onnx"
    return q.eval(), export_onnx(q.eval(), x[:8], path, scheme=get_scheme(scheme)), path


def test_layers_are_named_as_in_the_student() -> None:
    assert quantizable_layers(_student()) == [*LAYERS, "features.7.0", "classifier"]


def test_qnn_scheme_quantizes_every_op_and_fixes_the_batch(tmp_path: Path) -> None:
    q, proto, path = _qdq_model("qnn", tmp_path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 16, 16]
    users = {i: n for n in proto.graph.node for i in n.input}
    pool = next(n for n in proto.graph.node if n.op_type == "GlobalAveragePool")
    assert users[pool.output[0]].op_type == "QuantizeLinear"  # the NPU runs the pool in uint8
    _, ort_proto, _ = _qdq_model("onnxruntime", tmp_path)
    pool = next(n for n in ort_proto.graph.node if n.op_type == "GlobalAveragePool")
    assert ort_proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ort_users = {i: n for n in ort_proto.graph.node for i in n.input}
    assert ort_users[pool.output[0]].op_type != "QuantizeLinear"
    x = torch.randn(10, 1, 16, 16)
    with OrtRunner(path) as runner:  # a static batch of 1: predict goes one sample at a time
        assert runner.fixed_batch == 1
        out = runner.predict(x.numpy())
    with torch.no_grad():
        ref = q(x).numpy()
    assert out.shape == (10, 10)
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_qnn_is_refused_for_a_tensorrt_target(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "targets" / "jetson-orin-nano-8gb.toml").read_text()
    path = tmp_path / "t.toml"
    path.write_text(text.replace('quant_scheme = "tensorrt"', 'quant_scheme = "qnn"'))
    with pytest.raises(BadInput, match="quant_scheme"):
        load_target(path)
    assert load_target("android-snapdragon-8gen3").quant_scheme == "qnn"


def test_keep_float_leaves_a_layer_unquantized(tmp_path: Path) -> None:
    q, proto, _ = _qdq_model("onnxruntime", tmp_path, keep_float={"features.3.0"})
    kept = q.get_submodule("features.3.0")
    assert not parametrize.is_parametrized(kept, "weight")
    assert parametrize.is_parametrized(q.get_submodule("features.4.0"), "weight")
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    inits = {t.name for t in proto.graph.initializer}
    weight_from_dq = [producers.get(c.input[1]) == "DequantizeLinear" for c in convs]
    assert weight_from_dq.count(False) == 1  # exactly one conv keeps float weights
    float_conv = convs[weight_from_dq.index(False)]
    assert float_conv.input[1] in inits and "features.3" in float_conv.name


def test_keep_float_names_must_exist() -> None:
    with pytest.raises(BadInput, match="features.9.0"):
        prepare_qat(_student(), get_scheme("tensorrt"), keep_float={"features.9.0"})


def test_layers_no_scheme_quantizes_are_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ConvTranspose2d(4, 4, 2), nn.Flatten())
    assert unquantizable_layers(model) == ["1 (ConvTranspose2d)"]
    assert unquantizable_layers(_student()) == []


@pytest.mark.parametrize(
    "text, expect", [(None, 0), ("0", 0), ("3", 3), ("auto", "auto")]
)  # fmt: skip
def test_parse_keep_float(text, expect) -> None:
    assert parse_keep_float(text) == expect


@pytest.mark.parametrize("text", ["-1", "two", "1.5", ""])
def test_parse_keep_float_rejects(text) -> None:
    with pytest.raises(BadInput, match="--keep-float"):
        parse_keep_float(text)


def test_keep_float_beyond_the_layer_count() -> None:
    with pytest.raises(BadInput, match="only 7 quantizable layer"):
        check_keep_float(8, quantizable_layers(_student()))
    check_keep_float(7, quantizable_layers(_student()))


def _planted() -> tuple[nn.Module, Probe]:
    """A student whose features.3.0 output has one channel scaled 1000x (and the next layer's
    matching input weights scaled down, so the function is the same): a per-tensor quantizer on
    that tensor crushes the other channels."""
    model = _student()
    torch.manual_seed(1)
    x = torch.randn(256, 1, 16, 16)
    with torch.no_grad():  # BN statistics of the data, so the logits depend on the input
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
        model.train()(x)
        model.eval()
    nxt, bn = model.get_submodule("features.4.0"), model.get_submodule("features.3.1")
    with torch.no_grad():  # ReLU is positively homogeneous: scale BN's affine of channel 0
        bn.weight[0] *= 1000
        bn.bias[0] *= 1000
        nxt.weight[:, 0] /= 1000
    with torch.no_grad():
        teacher = model(x)
    return model, Probe(x[:128], x, teacher.argmax(1), teacher)


def test_sensitivity_names_the_planted_layer_first() -> None:
    model, probe = _planted()
    ranking = layer_sensitivity(model, get_scheme("tensorrt"), "max", probe)
    assert [r["layer"] for r in ranking][0] == "features.4.0"  # its input is the planted tensor
    assert sorted(r["layer"] for r in ranking) == sorted(quantizable_layers(model))
    kls = [r["kl"] for r in ranking]
    assert kls == sorted(kls, reverse=True) and kls[0] > 10 * kls[-1]
    assert score(model, probe).kl < 1e-6  # the float model is its own teacher here


def test_keep_float_counts_and_auto() -> None:
    model, probe = _planted()
    scheme = get_scheme("tensorrt")
    ranking = layer_sensitivity(model, scheme, "max", probe)
    two = choose_keep_float(2, model, scheme, "max", probe, ranking)
    assert two["layers"] == [r["layer"] for r in ranking[:2]]
    auto = choose_keep_float("auto", model, scheme, "max", probe, ranking)
    assert auto["mode"] == "auto" and "features.4.0" in auto["layers"]
    assert len(auto["layers"]) <= len(ranking) // 2
    trail = {t["kept"]: t["accuracy"] for t in auto["trail"]}
    assert trail[0] < 0.9 and trail[len(auto["layers"])] == max(trail.values())
    assert auto["reached"] == (trail[len(auto["layers"])] >= 1.0 - 0.003)  # float: 100 %


def test_tensorrt_build_uses_fp16_for_kept_float_layers() -> None:
    target = load_target("jetson-orin-nano-8gb")
    assert for_target(target).strongly_typed
    cfg = for_target(target, kept_float=True)
    assert not cfg.strongly_typed and cfg.fp16 and cfg.int8


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory, digits_options) -> tuple[Path, dict]:
    cfg = CompressConfig(**digits_options, epochs=2, qat_epochs=1, keep_float="1")
    out = tmp_path_factory.mktemp("runs") / "kept"
    return out, compress(cfg, out)


def test_compress_keeps_the_most_sensitive_layer_in_float(kept_run) -> None:
    out, report = kept_run
    record = json.loads((out / "logs" / "quantize.json").read_text())
    ranking = record["sensitivity"]["layers"]
    assert record["keep_float"]["layers"] == [ranking[0]["layer"]]
    assert record["unquantizable"] == []
    proto = onnx.load(out / "student_int8.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["kept_float"] == ranking[0]["layer"]
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    float_weights = [
        n.name
        for n in proto.graph.node
        if n.op_type in ("Conv", "Gemm") and producers.get(n.input[1]) != "DequantizeLinear"
    ]
    assert len(float_weights) == 1 and ranking[0]["layer"].split(".")[0] in float_weights[0]
    assert report["export"]["student_int8"]["top1_agreement"] >= 0.98
    assert report["quantization"]["keep_float"]["layers"] == [ranking[0]["layer"]]
    md = (out / "report.md").read_text()
    assert f"Kept in float (1): {ranking[0]['layer']}." in md
    assert f"Most sensitive layers, each quantized alone: {ranking[0]['layer']} (KL" in md


def test_keep_float_larger_than_the_student_fails_before_the_run(digits_options, tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(
        BadInput, match=r"--keep-float 99: the student has only \d quantizable layer"
    ):
        compress(CompressConfig(**digits_options, keep_float="99"), out)
    assert not out.exists()


def test_keep_float_garbage_exits_2(digits_options, tmp_path) -> None:
    o = digits_options
    args = ["compress", "--teacher", o["teacher"], "--weights", o["weights"], "--data", o["data"]]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*args, "--keep-float", "most", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "edgekd: error: --keep-float 'most': expected a layer count (0 or more) or 'auto'"
    )
    assert not out.exists()


class _ShapeArithmetic(nn.Module):
    """Arithmetic on shapes (``x.size(1) * 2``) beside arithmetic on tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.conv(x)
        width = y.size(1) * 2
        y = torch.cat([y, y * 0.5], dim=1)  # a tensor mul: quantized under qnn
        return self.fc(y.mean((2, 3)).reshape(-1, width))


def test_qnn_leaves_shape_arithmetic_alone() -> None:
    """Under qnn every op that makes new tensor values is quantized, but not ``size(1) * 2``
    (a quantizer there used to crash calibration)."""
    qmodel = prepare_qat(_ShapeArithmetic().eval(), get_scheme("qnn"))
    calibrate(qmodel, [torch.randn(4, 1, 8, 8)])
    inputs = {n.args[0].name for n in qmodel.graph.nodes if n.op == "call_module"
              and n.target.startswith("act_quant")}  # fmt: skip
    assert {"mul_1", "cat", "mean"} <= inputs  # y * 0.5, the concat, the pooling mean
    assert "mul" not in inputs  # size(1) * 2
    assert qmodel(torch.randn(2, 1, 8, 8)).shape == (2, 10)
