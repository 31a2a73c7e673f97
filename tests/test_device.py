"""edgekd.device: the one device kernel, shipped as a zipapp and called by the host alike."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgekd.device
from edgekd.device import cli as device_cli
from edgekd.device import trt as device_trt
from edgekd.device.errors import Missing, Unusable
from edgekd.device.ort import OrtSession, session_options
from edgekd.errors import BadInput
from edgekd.export.tensorrt import build_python, config_for_model
from edgekd.models.teacher import OnnxTeacher
from edgekd.quant.drift import _session
from edgekd.runners.bundle import NAME, PACKAGE, build_bundle
from edgekd.runners.ort_runner import OrtRunner
from edgekd.runners.remote import SshSession, SshTarget, remote_runner
from edgekd.runners.trt_runner import TrtRunner
from edgekd.targets import load_target
from edgekd.validate import make_runner

DEVICE = Path(edgekd.device.__file__).parent
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
RUNTIMES = {"numpy", "onnxruntime", "tensorrt"}
# Run the bundle with edgekd and torch unimportable, as on a device that has neither.
CLEAN = (
    "import runpy, sys\n"
    "sys.modules['edgekd'] = sys.modules['torch'] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _model(path: Path, batch: int | str) -> Path:
    """A 1x4x4 -> 3 classifier (Flatten, Gemm) with a fixed or a dynamic batch."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("Gemm", ["f", "w", "b"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    return x.reshape(len(x), -1) @ inits["w"] + inits["b"]


def _bundle_run(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-I", "-c", CLEAN, str(bundle), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle"))


def test_bundle_is_the_device_package(bundle: Path) -> None:
    assert bundle.name == NAME
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
    modules = {f"{PACKAGE}/{p.name}" for p in DEVICE.glob("*.py")}
    assert names == {"__main__.py", f"{PACKAGE}/", *modules}, names


def test_bundle_measures_a_model_without_edgekd(bundle: Path, tmp_path: Path) -> None:
    """The zipapp, in an isolated interpreter where edgekd and torch cannot be imported, predicts
    every row of a fixed-batch model (padded batches) and times single queries."""
    model = _model(tmp_path / "m.onnx", 4)
    x = np.random.default_rng(1).standard_normal((10, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    done = _bundle_run(
        bundle, "run", str(model), "--input", str(tmp_path / "x.npy"),
        "--result", str(tmp_path / "r.json"), "--logits", str(tmp_path / "l.npy"),
        "--latency", "--batch", "4", "--min-queries", "64", "--threads", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["runtime"] == "onnxruntime" and result["provider"] == "CPUExecutionProvider"
    assert result["latency"]["n"] == len(result["times_ms"]) >= 64
    assert result["where"].startswith("measured: onnxruntime ")
    assert result["environment"]["onnxruntime"] and "torch" not in result["environment"]
    logits = np.load(tmp_path / "l.npy")
    np.testing.assert_allclose(logits, _reference(model, x), rtol=1e-5, atol=1e-5)
    with OrtRunner(model, threads=1) as host:  # the host gives the very same numbers
        np.testing.assert_array_equal(host.predict(x), logits)


def test_bundle_fingerprint_runs_as_shipped(bundle: Path) -> None:
    """``python3 edgekd_device.pyz fingerprint``, exactly as the device runs it."""
    done = subprocess.run(
        [sys.executable, "-I", str(bundle), "fingerprint"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)
    assert env["cores"] >= 1 and env["numpy"] == np.__version__


def test_bundle_refuses_without_silent_fallback(bundle: Path, tmp_path: Path) -> None:
    """A provider this ONNX Runtime lacks, or a TensorRT run where tensorrt is absent: exit 3
    with one line, not a run on something else."""
    model = _model(tmp_path / "m.onnx", 1)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    common = ["run", str(model), "--input", str(tmp_path / "x.npy"), "--result", "r.json"]
    done = _bundle_run(bundle, *common, "--providers", "NoSuchExecutionProvider")
    assert done.returncode == 3, done.stderr
    assert "none of the execution providers NoSuchExecutionProvider" in done.stderr
    if not HAS_TENSORRT:
        done = _bundle_run(bundle, *common, "--runtime", "tensorrt")
        assert done.returncode == 3 and "tensorrt is not installed" in done.stderr, done.stderr
    assert not (tmp_path / "r.json").exists()


def test_device_imports_only_stdlib_numpy_and_runtimes() -> None:
    """Every module of edgekd/device parses as Python 3.8 (JetPack 5) and imports only the
    standard library, numpy, the runtimes and its own modules (relatively)."""
    for path in sorted(DEVICE.glob("*.py")):
        tree = ast.parse(path.read_text(), feature_version=(3, 8))
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1, f"{path.name}: import from outside the package"
                else:
                    roots.add(str(node.module).split(".")[0])
        assert roots - sys.stdlib_module_names <= RUNTIMES, (path.name, roots)


def test_host_sessions_share_options_and_padding(tmp_path: Path) -> None:
    """The runner, drift and the ONNX teacher make their sessions with the same options as the
    device, and a fixed-batch model gets the same padded batches from each."""
    path = _model(tmp_path / "m.onnx", 4)
    x = np.random.default_rng(2).standard_normal((7, 1, 4, 4)).astype(np.float32)
    want = session_options(0)
    teacher = OnnxTeacher(path)
    drift = _session(onnx.load(path), ["CPUExecutionProvider"])
    with OrtRunner(path, threads=0) as runner:
        assert runner.session is not None
        sessions = {"runner": runner.session, "drift": drift, "teacher": teacher.session}
        for name, s in sessions.items():
            got = s.session.get_session_options()
            for option in ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level"):
                assert getattr(got, option) == getattr(want, option), (name, option)
            assert got.graph_optimization_level == want.graph_optimization_level, name
            assert s.fixed_batch == 4, name
        outputs = {
            "runner": runner.predict(x),
            "drift": drift.predict(x, len(x)),
            "teacher": teacher(torch.from_numpy(x)).numpy(),
            "device": OrtSession(str(path)).predict(x),
        }
    for name, out in outputs.items():
        np.testing.assert_array_equal(out, outputs["device"], err_msg=name)
    np.testing.assert_allclose(outputs["device"], _reference(path, x), rtol=1e-5, atol=1e-5)


def test_no_silent_provider_fallback_on_the_host(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx", 1)
    with pytest.raises(BadInput, match="none of the execution providers NoSuch"):
        OrtRunner(path, ["NoSuchExecutionProvider"])


def test_the_runtime_follows_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Locally, a TensorRT target gets a native engine where TensorRT is installed (as over SSH);
    an ONNX Runtime target gets ONNX Runtime."""
    path = _model(tmp_path / "m.onnx", 1)
    assert isinstance(make_runner(path, load_target("host-cpu")), OrtRunner)
    jetson = load_target("jetson-orin-nano-8gb")
    if not HAS_TENSORRT:  # here without TensorRT: ONNX Runtime on this host
        assert isinstance(make_runner(path, jetson), OrtRunner)
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object):
        return object() if name == "tensorrt" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert isinstance(make_runner(path, jetson), TrtRunner)


def test_one_builder_for_host_and_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's engine build and the device's call the same builder with the same settings
    (what ``--remote`` sends), and leave the same files: X.engine, X.build.log, X.layers.json."""
    calls: list[tuple[str, dict]] = []
    layers = {"Layers": []}

    def builder(onnx_path: str, cfg: dict, timing_cache: bytes | None = None) -> device_trt.Built:
        calls.append((Path(onnx_path).name, cfg))
        return device_trt.Built(b"plan", "[I] built\n", layers, cfg, "10.3", timing_cache, 0.1)

    monkeypatch.setattr(device_trt, "build_engine", builder)
    model = _model(tmp_path / "student_int8.onnx", "N")
    target = load_target("jetson-orin-nano-8gb")
    cfg = config_for_model(model, target)
    host = tmp_path / "host"
    host.mkdir()
    paths = {k: host / v for k, v in device_trt.engine_files(model.stem).items()}
    build_python(model, cfg, host, paths)
    with pytest.raises((Missing, Unusable)):  # built; running b"plan" needs TensorRT, a real one
        device_cli._tensorrt_model(str(model), asdict(cfg))
    session = SshSession(SshTarget.parse("nvidia@orin"), ["tensorrt"])
    sent = remote_runner(model, target, session).build_config
    assert calls == [(model.name, asdict(cfg)), (model.name, sent)]
    for files in (host, tmp_path):
        names = {p.name for p in files.iterdir() if p.name.startswith(model.stem + ".")}
        assert {
            "student_int8.engine",
            "student_int8.build.log",
            "student_int8.layers.json",
        } <= names
    assert (host / "student_int8.build.log").read_text() == "[I] built\n"


def test_builder_says_when_tensorrt_is_absent(tmp_path: Path) -> None:
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(Missing, match="tensorrt is not installed"):
        device_trt.build_engine(str(_model(tmp_path / "m.onnx", 1)), {})


def test_local_engine_says_when_tensorrt_is_absent(tmp_path: Path) -> None:
    """A TensorRT runner here without TensorRT: one line, and nothing left behind."""
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here")
    runner = TrtRunner(_model(tmp_path / "m.onnx", 1), load_target("jetson-orin-nano-8gb"))
    with pytest.raises(BadInput, match="m.onnx on TensorRT: the python module tensorrt is not"):
        runner.__enter__()
    assert runner._tmp is None and runner.model is None


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TENSORRT, reason="needs TensorRT and a CUDA GPU")
def test_local_engine_agrees_with_onnx_runtime(tmp_path: Path) -> None:
    """A TensorRT target's float model as a native engine here: built at the validated batch
    (min = opt = max), predicting in padded batches, as ONNX Runtime does."""
    path = _model(tmp_path / "m.onnx", "N")
    x = np.random.default_rng(3).standard_normal((9, 1, 4, 4)).astype(np.float32)
    with TrtRunner(path, load_target("jetson-orin-nano-8gb"), tmp_path / "engines") as runner:
        got = runner.predict(x)
        assert runner.engine is not None and runner.engine["log"] == "m.build.log"
    np.testing.assert_allclose(got, _reference(path, x), rtol=1e-2, atol=1e-2)
