"""Preflight: what would fail after training fails in plan, on the untrained models, as one line
naming the module; a roofline that cannot be counted is reported unavailable, never fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import corpus
import onnx
import pytest
import torch
from onnx import helper
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.models.profile import profile
from edgekd.preflight import preflight
from edgekd.quant.scheme import get_scheme
from edgekd.roofline import graph_cost, load_cost, try_roofline
from edgekd.targets import load_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# User-style models, as published CNNs write them; 1x8x8 digits in, 10 classes out.
MODELS = textwrap.dedent(
    '''
    import torch
    from torch import nn
    import torch.nn.functional as F


    class ViewTeacher(nn.Module):
        """Flattens with x.view(x.size(0), -1), the commonest idiom in published CNNs."""

        def __init__(self, flatten: bool = False):
            super().__init__()
            self.flatten = flatten
            self.features = nn.Sequential(
                nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.fc_layers = nn.Sequential(nn.Linear(128 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

        def forward(self, x):
            x = self.features(x)
            x = torch.flatten(x, 1) if self.flatten else x.view(x.size(0), -1)
            return self.fc_layers(x)


    class ChannelShuffle(nn.Module):
        """ShuffleNet's shuffle: view with a channel count computed from x.size()."""

        def forward(self, x):
            b, c, h, w = x.size()
            return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


    class Gate(nn.Module):
        """Data-dependent control flow: torch.fx cannot trace it."""

        def forward(self, x):
            if x.mean() > 0:
                return x
            return -x


    class CumMax(nn.Module):
        """An op the ONNX exporter rejects (aten::cummax)."""

        def forward(self, x):
            return torch.cummax(x, dim=-1)[0]


    class MyConv(nn.Module):
        """A hand-rolled convolution: weights, but no nn.Conv2d for a scheme to quantize."""

        def __init__(self, cin, cout):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.1)

        def forward(self, x):
            return F.conv2d(x, self.weight, padding=1)


    class Student(nn.Module):
        def __init__(self, middle: nn.Module | None = None, conv=nn.Conv2d, head=nn.Linear):
            super().__init__()
            self.conv = conv(1, 8, 3, padding=1) if conv is nn.Conv2d else conv(1, 8)
            self.middle = middle or nn.Identity()
            self.head = head(8, 10)

        def forward(self, x):
            return self.head(self.middle(torch.relu(self.conv(x))).mean((2, 3)))


    class Bilinear(nn.Module):
        """A head with weights that no scheme quantizes."""

        def __init__(self, cin, classes):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(classes, cin) * 0.1)

        def forward(self, x):
            return x @ self.weight.t()


    def view_teacher():
        return ViewTeacher()


    def flatten_teacher():
        return ViewTeacher(flatten=True)


    def shuffle_student():
        return Student(middle=ChannelShuffle())


    def gated_student():
        return Student(middle=nn.Sequential(nn.ReLU(), Gate()))


    def cummax_student():
        return Student(middle=CumMax())


    def hand_rolled_student():
        return Student(conv=MyConv, head=Bilinear)


    class CumMaxTeacher(ViewTeacher):
        def __init__(self):
            super().__init__(flatten=True)
            self.features.append(CumMax())


    def cummax_teacher():
        return CumMaxTeacher()
    '''
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user-models") / "user_models.py"
    path.write_text(MODELS)
    return path


def build(models: Path, factory: str) -> nn.Module:
    scope: dict = {}
    exec(compile(models.read_text(), str(models), "exec"), scope)
    return scope[factory]()


# --- roofline: shapes the graph computes from its input's shape -------------------------------


@pytest.mark.parametrize("factory", ["view_teacher", "shuffle_student"])
def test_roofline_counts_shapes_computed_in_the_graph(models, tmp_path, factory) -> None:
    model = build(models, factory).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, torch.zeros(1, 1, 8, 8), path)  # a dynamic batch axis, as exported
    prof = profile(model, (1, 8, 8))
    cost = load_cost(path)
    assert cost.macs == prof.macs and cost.activation_elems == prof.activation_elems
    if factory == "view_teacher":
        flat = tmp_path / "flat.onnx"
        export_onnx(build(models, "flatten_teacher").eval(), torch.zeros(1, 1, 8, 8), flat)
        assert load_cost(flat).macs == cost.macs


def test_roofline_with_an_op_of_a_custom_domain(models, tmp_path, monkeypatch) -> None:
    """An op ONNX Runtime's symbolic inference has no rule for: ONNX's inference with data
    propagation counts the layers around it, a layer behind it is reported unavailable, and
    nothing is left in the working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = tmp_path / "view.onnx"
    proto = export_onnx(build(models, "view_teacher").eval(), torch.zeros(1, 1, 8, 8), path)
    side = onnx.ModelProto.FromString(proto.SerializeToString())
    side.graph.node.append(helper.make_node("Probe", ["input"], ["probe"], domain="com.example"))
    side.graph.output.append(helper.make_tensor_value_info("probe", onnx.TensorProto.FLOAT, None))
    side.opset_import.append(helper.make_opsetid("com.example", 1))
    assert graph_cost(side).macs == load_cost(path).macs
    behind = onnx.ModelProto.FromString(side.SerializeToString())
    first = behind.graph.node[0]
    assert first.op_type == "Conv" and first.input[0] == "input"
    first.input[0] = "probe"
    onnx.save(behind, tmp_path / "behind.onnx")
    est, why = try_roofline(tmp_path / "behind.onnx", load_target("host-cpu"))
    assert est is None and "could not be counted" in why and "shapes unknown" in why
    assert not list(cwd.iterdir())


# --- preflight on the corpus -------------------------------------------------------------------

TARGETS = {
    "onnxruntime": "host-cpu",
    "tensorrt": "jetson-orin-nano-8gb",
    "qnn": "android-snapdragon-8gen3",
}


@pytest.mark.zoo
@pytest.mark.skipif(not corpus.has("torchvision"), reason="needs a working torchvision")
@pytest.mark.parametrize("scheme", sorted(TARGETS))
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_lite0"])
def test_preflight_passes_on_corpus_models(name, scheme) -> None:
    if name in corpus.TIMM and not corpus.has("timm"):
        pytest.skip("needs timm")
    torch.manual_seed(0)
    target = load_target(TARGETS[scheme])
    teacher = corpus.build("convnet").eval()
    record = preflight(teacher, corpus.build(name), torch.randn(2, 3, 32, 32), target,
                       get_scheme(scheme))  # fmt: skip
    checks = [c["check"] for c in record["checks"]]
    assert checks[:2] == ["student: torch.fx trace", f"student: fake-quant for {scheme}, "
                          "calibrated on 2 samples"]  # fmt: skip
    assert f"student: ONNX export (fake-quant, {scheme})" in checks and checks[-1] == "roofline"
    assert set(record["roofline"]) == {"teacher", "student_fp32", "student_int8"}
    assert all(record["roofline"].values()), record.get("roofline_unavailable")
    assert record["roofline"]["student_int8"]["precision"] == "int8"
    if scheme == "tensorrt":  # violations are warned about, named, never fatal
        lint = record["tensorrt_lint"]
        warned = [w for w in record["warnings"] if "TensorRT Q/DQ rule" in w]
        assert len(warned) == bool(lint)
        assert all(v.split(": ")[1] in warned[0] for v in lint[:3])
    else:
        assert "tensorrt_lint" not in record


@pytest.mark.parametrize("target", ["iphone-a17", "android-snapdragon-8gen3"])
def test_preflight_on_mobile_targets_converts_to_ort_format(models, target) -> None:
    t = load_target(target)
    record = preflight(build(models, "flatten_teacher"), build(models, "shuffle_student"),
                       torch.randn(2, 1, 8, 8), t, get_scheme(t.quant_scheme))  # fmt: skip
    assert "student: ORT format conversion" in [c["check"] for c in record["checks"]]


def test_feature_taps_are_found_in_the_fake_quant_student(models) -> None:
    args = (build(models, "flatten_teacher"), build(models, "shuffle_student"),
            torch.randn(2, 1, 8, 8), load_target("host-cpu"), get_scheme("onnxruntime"))  # fmt: skip
    record = preflight(*args, taps=["conv", "head"])
    assert "student: feature taps on the fake-quant model" in [c["check"] for c in record["checks"]]
    # the channel shuffle has no layers: fx traces through it, so QAT's model has no such module
    with pytest.raises(BadInput, match="the student's module 'middle', tapped .*--pair"):
        preflight(*args, taps=["middle"])


# --- end to end: the view teacher trains, exports and validates --------------------------------


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None})


def options(digits_options: dict, out: Path, **override: object) -> list[str]:
    opts: dict[str, object] = {
        "teacher": digits_options["teacher"],
        "weights": digits_options["weights"],
        "data": digits_options["data"],
        "target": digits_options["target"],
        "mean": "0.3",
        "std": "0.4",
        "epochs": 1,
        "qat-epochs": 0,
        "max-accuracy-drop": 100,
        "out": out,
    }
    opts.update({k.replace("_", "-"): v for k, v in override.items()})
    args = [s for k, v in opts.items() if v is not None for s in (f"--{k}", str(v))]
    return [*args, "--allow-slower-int8"]


def test_view_teacher_compresses_end_to_end(models, digits_options, tmp_path) -> None:
    out = tmp_path / "run"
    args = options(digits_options, out, teacher=f"{models}:view_teacher", weights=None)
    result = cli("compress", *args)
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((out / "report.json").read_text())
    roofs = report["estimate"]["roofline"]
    assert set(roofs) == {"teacher", "student_fp32", "student_int8"} and all(roofs.values())
    assert roofs["teacher"]["macs"] == profile(build(models, "view_teacher"), (1, 8, 8)).macs
    pre = json.loads((out / "logs" / "sizing.json").read_text())["preflight"]
    assert pre["roofline"]["teacher"]["macs"] == roofs["teacher"]["macs"]
    assert [c["check"] for c in pre["checks"]][:2] == [
        "student: torch.fx trace", "student: fake-quant for onnxruntime, calibrated on 2 samples",
    ]  # fmt: skip
    assert report["student"]["sizing"]["preflight"]["seconds"] > 0


# --- bad input: one line naming the module, exit 2, before training, nothing in --out ----------

BAD = {
    "untraceable student": (
        {"student": "gated_student"},
        ["the student's module 'middle.1' (Gate)", "torch.fx", "user_models.py:", "--student"],
    ),
    "no quantizable layer": (
        {"student": "hand_rolled_student"},
        [
            "no layer the onnxruntime scheme quantizes",
            "conv (MyConv)",
            "head (Bilinear)",
            "--student",
            "without INT8",
        ],
    ),  # fmt: skip
    "student op ONNX rejects": (
        {"student": "cummax_student"},
        ["the student's module 'middle' (CumMax)", "aten::cummax", "--student"],
    ),
    "teacher op ONNX rejects": (
        {"teacher": "cummax_teacher", "weights": None},
        ["the teacher's module 'features.7' (CumMax)", "aten::cummax", "--teacher"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_fails_in_plan_with_one_line(models, digits_options, tmp_path, case) -> None:
    override, needles = BAD[case]
    override = {k: f"{models}:{v}" if v else v for k, v in override.items()}
    out = tmp_path / "run"
    result = cli("compress", *options(digits_options, out, **override))
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()


def test_failed_export_stays_one_line_in_the_real_process(models, digits_options, tmp_path) -> None:
    """The TorchScript exporter dumps its IR graph on file descriptor 2 when an op fails."""
    out = tmp_path / "run"
    args = options(digits_options, out, student=f"{models}:cummax_student")
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    env.update(EDGEKD_QUIET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd", "compress", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "aten::cummax" in lines[0] and "'middle'" in lines[0], proc.stderr
    assert not out.exists()
