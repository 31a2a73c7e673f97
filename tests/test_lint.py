"""The TensorRT Q/DQ linter: each rule flagged on a model that breaks only it, clean models pass."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BadInput
from edgekd.export.lint import lint_tensorrt, load_onnx, qdq_counts
from edgekd.export.onnx_export import export_onnx, to_onnx
from edgekd.models.students import StudentSpec, build_student
from edgekd.quant.prepare import calibrate, freeze, prepare_qat
from edgekd.quant.scheme import SCHEMES

TRT_TARGET = "jetson-orin-nano-8gb"
S = 0.05  # activation scale


class _Builder:
    """A small ONNX graph with int8 symmetric Q/DQ, as TensorRT wants it."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def qdq(self, x: str, n: str, scalar: bool = False) -> str:
        shape = () if scalar else (1,)
        scale = self.init(f"{n}_scale", np.full(shape, S, np.float32))
        zp = self.init(f"{n}_zp", np.zeros(shape, np.int8))
        self.nodes.append(
            helper.make_node("QuantizeLinear", [x, scale, zp], [f"{n}_int8"], n + "_q")
        )
        self.nodes.append(
            helper.make_node("DequantizeLinear", [f"{n}_int8", scale, zp], [f"{n}_dq"], n + "_dq")
        )
        return f"{n}_dq"

    def weight(self, n: str, shape: tuple[int, ...], axis: int | None = 0) -> str:
        """int8 weight in [-127, 127] behind a DequantizeLinear, per channel on ``axis``."""
        w = self.init(f"{n}_w_int8", self.rng.integers(-127, 128, shape).astype(np.int8))
        size = () if axis is None else (shape[axis],)
        scale = self.init(f"{n}_w_scale", np.full(size, 0.01, np.float32))
        zp = self.init(f"{n}_w_zp", np.zeros(size, np.int8))
        kwargs = {} if axis is None else {"axis": axis}
        self.nodes.append(
            helper.make_node("DequantizeLinear", [w, scale, zp], [f"{n}_w"], f"{n}_w_dq", **kwargs)
        )
        return f"{n}_w"

    def node(self, op: str, inputs: list[str], n: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [f"{n}_out"], n, **attrs))
        return f"{n}_out"

    def model(self, x: tuple[str, list[int]], y: tuple[str, list[int]], opset: int = 17):
        graph = helper.make_graph(
            self.nodes,
            "lint_test",
            [helper.make_tensor_value_info(x[0], TensorProto.FLOAT, x[1])],
            [helper.make_tensor_value_info(y[0], TensorProto.FLOAT, y[1])],
            self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _residual_model() -> onnx.ModelProto:
    """conv1 -> relu -> {Q/DQ "a" -> conv2, Q/DQ "b"} -> Add -> relu -> pool -> Q/DQ -> Gemm."""
    b = _Builder()
    x = b.qdq("x", "in")
    c1 = b.node(
        "Conv",
        [x, b.weight("conv1", (4, 4, 3, 3)), b.init("b1", np.zeros(4, np.float32))],
        "conv1",
        pads=[1] * 4,
    )
    r1 = b.node("Relu", [c1], "relu1")
    c2 = b.node("Conv", [b.qdq(r1, "a"), b.weight("conv2", (4, 4, 3, 3))], "conv2", pads=[1] * 4)
    r2 = b.node("Relu", [b.node("Add", [c2, b.qdq(r1, "b")], "add")], "relu2")
    flat = b.node("Flatten", [b.node("GlobalAveragePool", [r2], "pool")], "flatten")
    fc_bias = b.init("fc_b", np.zeros(10, np.float32))
    b.node("Gemm", [b.qdq(flat, "fc_in"), b.weight("fc", (10, 4)), fc_bias], "fc", transB=1)
    return b.model(("x", [1, 4, 8, 8]), ("fc_out", [1, 10]))


def _single_channel_model(opset: int) -> onnx.ModelProto:
    """One Conv with one output channel: per-tensor Q/DQ everywhere, valid at opset 10+."""
    b = _Builder()
    w = b.weight("conv", (1, 1, 3, 3), axis=None)
    b.node("Conv", [b.qdq("x", "in", scalar=True), w], "conv")
    return b.model(("x", [1, 1, 4, 4]), ("conv_out", [1, 1, 2, 2]), opset=opset)


# --- graph edits that plant one violation each ------------------------------------------------


def _get(model: onnx.ModelProto, name: str):
    for collection in (model.graph.node, model.graph.initializer):
        for item in collection:
            if item.name == name:
                return item
    raise KeyError(name)


def _set(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    _get(model, name).CopyFrom(numpy_helper.from_array(np.asarray(array), name))


def _set_attr(model: onnx.ModelProto, node: str, **attrs) -> None:
    n = _get(model, node)
    for key, value in attrs.items():
        for a in [a for a in n.attribute if a.name == key]:
            n.attribute.remove(a)
        n.attribute.append(helper.make_attribute(key, value))


def _bypass(model: onnx.ModelProto, pair: str, source: str) -> None:
    """Drop the Q/DQ pair ``pair`` and feed its consumers ``source`` instead."""
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == f"{pair}_dq":
                n.input[i] = source
    for suffix in ("_q", "_dq"):
        model.graph.node.remove(_get(model, pair + suffix))


def _int32_bias(model: onnx.ModelProto) -> None:
    """conv1's float bias replaced by int32 behind a DequantizeLinear (as edgekd exports it)."""
    _set(model, "b1", np.arange(4, dtype=np.int32))
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.full(4, 5e-4, np.float32), "b1_scale"),
            numpy_helper.from_array(np.zeros(4, np.int32), "b1_zp"),
        ]
    )
    dq = helper.make_node(
        "DequantizeLinear", ["b1", "b1_scale", "b1_zp"], ["b1_dq"], "b1_dq", axis=0
    )
    model.graph.node.insert(0, dq)
    _get(model, "conv1").input[2] = "b1_dq"


def _float_weight(model: onnx.ModelProto) -> None:
    _set(model, "conv2_w_int8", np.ones((4, 4, 3, 3), np.float32))
    _get(model, "conv2").input[1] = "conv2_w_int8"
    model.graph.node.remove(_get(model, "conv2_w_dq"))


def _per_channel_activation(model: onnx.ModelProto) -> None:
    _set(model, "a_scale", np.full(4, S, np.float32))
    _set(model, "a_zp", np.zeros(4, np.int8))
    for node in ("a_q", "a_dq"):
        _set_attr(model, node, axis=1)


def _weight_128(model: onnx.ModelProto) -> None:
    w = numpy_helper.to_array(_get(model, "conv2_w_int8")).copy()
    w[1, 2, 0, 0] = -128
    _set(model, "conv2_w_int8", w)


def _no_zero_point(model: onnx.ModelProto) -> None:
    for node in ("a_q", "a_dq"):
        del _get(model, node).input[2]


PLANTED: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "uint8 zero point": (lambda m: _set(m, "b_zp", np.zeros(1, np.uint8)), "activation-type"),
    "non-zero activation zero point": (
        lambda m: _set(m, "a_zp", np.full(1, 3, np.int8)),
        "zero-point",
    ),
    "non-zero weight zero point": (
        lambda m: _set(m, "conv2_w_zp", np.array([0, 0, 1, 0], np.int8)),
        "zero-point",
    ),
    "non-positive scale": (lambda m: _set(m, "a_scale", np.full(1, -S, np.float32)), "scale"),
    "per-tensor weight scale": (
        lambda m: (
            _set(m, "conv2_w_scale", np.full(1, 0.01, np.float32)),
            _set(m, "conv2_w_zp", np.zeros(1, np.int8)),
        ),
        "weight-per-channel",
    ),
    "weight axis 1 on a Conv": (lambda m: _set_attr(m, "conv2_w_dq", axis=1), "weight-axis"),
    "weight value -128": (_weight_128, "weight-range"),
    "float weight": (_float_weight, "weight-not-quantized"),
    "int32 bias": (_int32_bias, "bias-type"),
    "uint8 weight": (
        lambda m: (
            _set(m, "conv2_w_int8", np.ones((4, 4, 3, 3), np.uint8)),
            _set(m, "conv2_w_zp", np.zeros(4, np.uint8)),
        ),
        "weight-type",
    ),
    "QuantizeLinear without zero point (uint8)": (_no_zero_point, "activation-type"),
    "per-channel activation scale": (_per_channel_activation, "activation-per-tensor"),
    "conv input not from DQ": (lambda m: _bypass(m, "in", "x"), "conv-input-not-quantized"),
    "gemm input not from DQ": (
        lambda m: _bypass(m, "fc_in", "flatten_out"),
        "conv-input-not-quantized",
    ),
    "residual Add with an unquantized branch": (
        lambda m: _bypass(m, "b", "relu1_out"),
        "residual-add-not-quantized",
    ),
}


def test_clean_model_passes_and_runs() -> None:
    model = _residual_model()
    onnx.checker.check_model(model, full_check=True)
    assert lint_tensorrt(model) == []
    assert qdq_counts(model) == (4, 3)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    assert sess.run(None, {"x": x})[0].shape == (1, 10)


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_each_planted_violation_is_flagged_alone(case: str) -> None:
    plant, rule = PLANTED[case]
    model = _residual_model()
    plant(model)
    onnx.checker.check_model(model, full_check=True)  # a real model, only TensorRT would refuse
    violations = lint_tensorrt(model)
    assert violations and {v.rule for v in violations} == {rule}, violations
    assert all(v.node and v.message and "\n" not in v.message for v in violations)


def test_opset_11() -> None:
    assert lint_tensorrt(_single_channel_model(13)) == []  # one channel: per tensor is per channel
    model = _single_channel_model(11)
    onnx.checker.check_model(model, full_check=True)
    assert [v.rule for v in lint_tensorrt(model)] == ["opset"]


def test_float_model_is_one_violation() -> None:
    b = _Builder()
    for i in range(5):
        w = b.init(f"w{i}", np.ones((4, 4, 3, 3), np.float32))
        b.node("Conv", [f"conv{i - 1}_out" if i else "x", w], f"conv{i}", pads=[1] * 4)
    model = b.model(("x", [1, 4, 8, 8]), ("conv4_out", [1, 4, 8, 8]), opset=11)
    assert [v.rule for v in lint_tensorrt(model)] == ["opset", "not-quantized"]


LAYERS = {  # op, attributes, input shape, weight shape, TensorRT's weight axis, output shape
    "Conv": ({}, [1, 4, 3, 3], (6, 4, 1, 1), 0, [1, 6, 3, 3]),
    "ConvTranspose": ({}, [1, 4, 3, 3], (4, 6, 1, 1), 0, [1, 6, 3, 3]),
    "Gemm-transB": ({"transB": 1}, [2, 4], (6, 4), 0, [2, 6]),
    "Gemm": ({}, [2, 4], (4, 6), 1, [2, 6]),
    "MatMul": ({}, [2, 4], (4, 6), 1, [2, 6]),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("right_axis", [True, False])
def test_weight_axis_per_layer_type(layer: str, right_axis: bool) -> None:
    attrs, x_shape, w_shape, axis, y_shape = LAYERS[layer]
    b = _Builder()
    w = b.weight("w", w_shape, axis=axis if right_axis else 1 - axis)
    b.node(layer.split("-")[0], [b.qdq("x", "in"), w], "layer", **attrs)
    model = b.model(("x", x_shape), ("layer_out", y_shape))
    onnx.checker.check_model(model, full_check=True)
    assert [v.rule for v in lint_tensorrt(model)] == ([] if right_axis else ["weight-axis"])


def test_activation_matmul_needs_both_inputs_quantized() -> None:
    b = _Builder()
    b.node("MatMul", [b.qdq("x", "in"), "x"], "mm")
    model = b.model(("x", [4, 4]), ("mm_out", [4, 4]))
    violations = lint_tensorrt(model)
    assert [(v.rule, v.node) for v in violations] == [("conv-input-not-quantized", "mm")]
    assert "input 1" in violations[0].message


def test_residual_add_with_quantized_conv_branch_too_is_clean() -> None:
    model = _residual_model()
    # Add(conv2 -> Q/DQ, Q/DQ): both inputs quantized is accepted
    _get(model, "add").input[0] = "a_dq"
    assert lint_tensorrt(model) == []


# --- edgekd's own exports ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, onnx.ModelProto]:
    torch.manual_seed(0)
    student = build_student(StudentSpec("convnet", 0.5, 1.0), 1, 10).eval()
    x = torch.randn(16, 1, 16, 16)
    out = {}
    for scheme in ("tensorrt", "onnxruntime"):
        q = prepare_qat(student, SCHEMES[scheme])
        calibrate(q, [x])
        freeze(q)
        path = tmp_path_factory.mktemp("exports") / f"{scheme}.onnx"
        export_onnx(q.eval(), x[:1], path, scheme=SCHEMES[scheme])
        out[scheme] = load_onnx(path)
        out[f"{scheme}-raw"] = to_onnx(q.eval(), x[:1])  # torch's Q/DQ, before finalize_qdq
    return out


def _float_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every int32 bias DequantizeLinear folded back into a float initializer."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        q = inits.get(node.input[0])
        if q is not None and q.dtype == np.int32:
            bias = (q * inits[node.input[1]]).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(bias, node.output[0]))
            model.graph.node.remove(node)
    return model


def test_edgekd_tensorrt_export_is_clean(exports) -> None:
    assert lint_tensorrt(exports["tensorrt"]) == []


def test_edgekd_tensorrt_export_is_clean_but_for_int32_biases(exports) -> None:
    model = exports["tensorrt"]
    assert {v.rule for v in lint_tensorrt(model)} <= {"bias-type"}
    fixed = _float_biases(model)
    onnx.checker.check_model(fixed, full_check=True)
    assert lint_tensorrt(fixed) == []
    assert qdq_counts(fixed) == (7, 7)  # 6 Conv + the classifier's Gemm


def test_torch_qdq_export_of_the_tensorrt_scheme_is_clean(exports) -> None:
    """Weights as float -> QuantizeLinear -> DequantizeLinear, biases float: what TensorRT takes."""
    model = exports["tensorrt-raw"]
    assert lint_tensorrt(model) == []
    assert qdq_counts(model) == (14, 7)  # 7 activation and 7 weight pairs


def test_onnxruntime_scheme_export_fails_the_tensorrt_rules(exports) -> None:
    violations = lint_tensorrt(_float_biases(exports["onnxruntime"]))
    rules = [v.rule for v in violations]
    assert rules.count("activation-type") == 8  # every uint8 activation Q/DQ pair, once
    assert set(rules) <= {"activation-type", "zero-point"}


# --- loading and the command line -------------------------------------------------------------


def test_load_onnx_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xff not a protobuf \xfe" * 10)
    with pytest.raises(BadInput, match="not an ONNX model"):
        load_onnx(junk)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(BadInput, match="not an ONNX model"):
        load_onnx(tmp_path / "empty.onnx")
    with pytest.raises(BadInput, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


def _cli(*args: object):
    return CliRunner().invoke(app, ["lint", *map(str, args)], env={"EDGEKD_DEBUG": None})


def _one_error_line(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def test_cli_clean_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "clean.onnx"
    onnx.save(_residual_model(), path)
    result = _cli(path, "--target", TRT_TARGET)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout == "clean: 4 Q/DQ pairs, 3 quantized Conv/Gemm\n"


def test_cli_violations_exit_3(tmp_path: Path) -> None:
    model = _residual_model()
    _bypass(model, "b", "relu1_out")
    _weight_128(model)
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    result = _cli(path, "--target", TRT_TARGET)
    _one_error_line(result, 3, "2 TensorRT Q/DQ rule violation(s)")
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["weight-range", "residual-add-not-quantized"]
    assert lines[1].startswith("residual-add-not-quantized: add: ")

    result = _cli(path, "--target", TRT_TARGET, "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["model"] == str(path) and report["target"] == TRT_TARGET
    assert [v["rule"] for v in report["violations"]] == [
        "weight-range",
        "residual-add-not-quantized",
    ]
    assert set(report["violations"][0]) == {"rule", "node", "message"}


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello, I am not a model\n")
    _one_error_line(_cli(junk, "--target", TRT_TARGET), 2, "junk.onnx", "not an ONNX model")
    _one_error_line(_cli(tmp_path / "none.onnx", "--target", TRT_TARGET), 2, "no such file")
    _one_error_line(_cli(junk, "--target", "no-such-device"), 2, "unknown target")
    path = tmp_path / "clean.onnx"
    onnx.save(_residual_model(), path)
    _one_error_line(_cli(path, "--target", "host-cpu"), 2, "onnxruntime", "only the TensorRT rules")
    _one_error_line(_cli(path, "--target", "jetson-nano"), 2, "FP16")
