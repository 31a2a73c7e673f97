"""Remote devices over SSH, against a real OpenSSH server started on 127.0.0.1 for these tests.

The "device" is this machine: sshd runs in the foreground with its own host key, authorized key
and config in a temporary folder, and the remote Python is this test's interpreter.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from engine_layers import HALF_GEMM, INT8_CONV
from loopback_sshd import SSHD, Sshd, free_port, keygen
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.pipeline import compress, run_stage
from edgekd.runners.bundle import NAME as BUNDLE
from edgekd.runners.remote import SshSession, SshTarget

pytestmark = [
    pytest.mark.skipif(
        not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("scp") is None,
        reason="needs OpenSSH (apt-get install openssh-server openssh-client)",
    ),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    try:
        server = Sshd(tmp_path_factory.mktemp("sshd"))
    except RuntimeError as e:
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, digits_options: dict) -> Path:
    """A small finished digits run (1 epoch, post-training quantization)."""
    out = tmp_path_factory.mktemp("remote-runs") / "digits"
    compress(CompressConfig(**digits_options, epochs=1, qat_epochs=0, max_accuracy_drop=100), out)
    return out


def cli(*args: object, **env: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"EDGEKD_DEBUG": None, **env})


def fails(result, code: int, *needles: str) -> str:
    """Assert exit ``code`` with one ``edgekd: error:`` line holding every needle; return it."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_remote_bench_round_trip(sshd: Sshd, digits_run: Path, fast_target: Path) -> None:
    model = digits_run / "student_int8.onnx"
    options = sshd.options(remote_python=None)  # given by the environment instead
    result = cli(
        "bench", model, "--target", fast_target, *options, "--json",
        EDGEKD_REMOTE_PYTHON=sys.executable,
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    lat = summary["latency_ms"]
    assert lat["n"] >= 64 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert lat["where"].startswith("measured: onnxruntime") and "1 thread" in lat["where"]
    assert lat["where"].endswith(f"on {sshd.remote()} over SSH")
    env = summary["environment"]
    assert env["where"] == f"remote {sshd.remote()} over SSH"
    assert env["onnxruntime"] and env["cpu"] and env["cores"] >= 1 and "torch" not in env
    local = cli("bench", model, "--target", fast_target)
    assert local.exit_code == 0 and "over SSH" not in local.stdout


def test_remote_validate_matches_local(sshd: Sshd, digits_run: Path) -> None:
    local = run_stage("validate", digits_run)
    result = cli("validate", digits_run, *sshd.options(), "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads((digits_run / "report.json").read_text())
    assert report["accuracy"] == local["accuracy"]
    assert report["agreement"] == local["agreement"]
    for lat in report["latency_ms"].values():
        assert lat["where"].endswith(f"on {sshd.remote()} over SSH") and lat["n"] >= 64
    assert report["environment"]["where"] == f"remote {sshd.remote()} over SSH"
    (budget,) = [g for g in report["gates"]["records"] if g["name"] == "latency_budget"]
    assert budget["status"] != "skipped" and budget["measured_on_target"] is True
    assert all(lat["on_target"] for lat in report["latency_ms"].values())
    md = (digits_run / "report.md").read_text()
    assert f"Measured on: remote {sshd.remote()} over SSH: " in md
    assert json.loads(result.stdout)["accuracy"] == local["accuracy"]


def test_session_leaves_nothing_on_the_device(sshd: Sshd) -> None:
    target = SshTarget.parse(
        sshd.remote(), key=sshd.client_key, host_key=sshd.host_pub, python=sys.executable
    )
    with SshSession(target) as session:
        folder = Path(session.dir)
        assert (folder / BUNDLE).is_file()  # the "device" is this machine
        assert session.fingerprint()["where"].startswith("remote ")
    assert not folder.exists()


def test_connection_refused(digits_run: Path, sshd: Sshd) -> None:
    port = free_port()
    remote = f"{getpass.getuser()}@127.0.0.1:{port}"
    result = cli("bench", digits_run / "student_fp32.onnx", *sshd.options(remote=remote))
    fails(result, 4, "connection refused", f"port {port}")


def test_auth_failure(sshd: Sshd, digits_run: Path, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    result = cli(
        "bench", digits_run / "student_fp32.onnx", *sshd.options(ssh_key=tmp_path / "stranger")
    )
    fails(result, 5, "login refused", getpass.getuser())


def test_unknown_host_key(sshd: Sshd, digits_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = cli("bench", digits_run / "student_fp32.onnx", *sshd.options(host_key=empty))
    fails(result, 6, "host key unknown", f"ssh-keyscan -p {sshd.port} 127.0.0.1")


def test_mismatched_host_key(sshd: Sshd, digits_run: Path, tmp_path: Path) -> None:
    other = keygen(tmp_path / "impostor")
    result = cli("bench", digits_run / "student_fp32.onnx", *sshd.options(host_key=other))
    fails(result, 6, "does not match")


def test_device_without_onnxruntime(sshd: Sshd, digits_run: Path) -> None:
    system = Path("/usr/bin/python3")
    if not system.is_file():
        pytest.skip("needs a system python3 without onnxruntime")
    probe = subprocess.run([system, "-c", "import onnxruntime"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip(f"{system} has onnxruntime")
    result = cli("bench", digits_run / "student_fp32.onnx", *sshd.options(remote_python=system))
    fails(result, 7, "lacks", "onnxruntime", "--remote-python")


def test_device_without_python(sshd: Sshd, digits_run: Path) -> None:
    result = cli(
        "bench", digits_run / "student_fp32.onnx", *sshd.options(remote_python="/no/python3")
    )
    fails(result, 7, "no /no/python3 on the device")


def test_connect_timeout(digits_run: Path, sshd: Sshd) -> None:
    """A port that completes TCP handshakes but never speaks SSH."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        remote = f"{getpass.getuser()}@127.0.0.1:{silent.getsockname()[1]}"
        result = cli(
            "bench",
            digits_run / "student_fp32.onnx",
            *sshd.options(remote=remote, connect_timeout=1),
        )
    fails(result, 8, "timed out after 1 s", "--connect-timeout")


def test_step_timeout(sshd: Sshd, digits_run: Path, fast_target: Path, tmp_path: Path) -> None:
    """A latency run longer than --timeout: one line, exit 8 (the device command stops on EOF)."""
    slow = tmp_path / "slow.toml"
    slow.write_text(fast_target.read_text().replace("min_duration_s = 0.05", "min_duration_s = 60"))
    result = cli(
        "bench", digits_run / "student_fp32.onnx", "--target", slow, *sshd.options(timeout=3)
    )
    fails(result, 8, "not done within 3 s", "--timeout")


@pytest.mark.parametrize(
    ("remote", "says"),
    [("orin", "expected USER@HOST[:PORT]"), ("-oProxyCommand=x@h", "expected USER@HOST[:PORT]"),
     ("me@host:70000", "port 70000")],
)  # fmt: skip
def test_bad_remote_options(digits_run: Path, remote: str, says: str) -> None:
    fails(cli("bench", digits_run / "student_fp32.onnx", "--remote", remote), 2, says)


def test_bad_host_key_option(digits_run: Path) -> None:
    result = cli("bench", digits_run / "student_fp32.onnx", "--remote", "me@h", "--host-key", "x")
    fails(result, 2, "--host-key", "ssh-ed25519 AAAA")


def test_remote_command_is_quoted(sshd: Sshd, digits_run: Path, tmp_path: Path) -> None:
    """A value with shell syntax reaches the device's shell as one quoted word."""
    planted = tmp_path / "planted"
    python = f"/no/python3; touch {planted}"
    result = cli("bench", digits_run / "student_fp32.onnx", *sshd.options(remote_python=python))
    fails(result, 7, f"no {python} on the device")
    assert not planted.exists()


def test_tensorrt_target_builds_on_the_device(digits_run: Path) -> None:
    """For a TensorRT target the runner asks the device for tensorrt and an engine build with the
    target's settings (TensorRT itself cannot run here)."""
    from edgekd.runners.remote import remote_runner
    from edgekd.targets import load_target

    target = load_target("jetson-orin-nano-8gb")
    session = SshSession(SshTarget.parse("nvidia@orin"), [target.runtime])
    runner = remote_runner(digits_run / "student_int8.onnx", target, session)
    assert session.modules == ["numpy", "tensorrt"] and runner.runtime == "tensorrt"
    assert runner.build_config is not None and runner.build_config["strongly_typed"] is True
    assert runner.build_config["tensorrt"] == "10.3" and runner.build_config["batch"] == 1


LAYER_INFO = {"Layers": [INT8_CONV, HALF_GEMM]}  # an INT8 conv, an FP16 gemm


def test_engine_files_the_device_wrote_come_back(
    sshd: Sshd, digits_run: Path, tmp_path: Path
) -> None:
    """After an engine build on the device (TensorRT cannot run here, so the device folder is
    given the files a build leaves), the engine, its log and layer information are fetched over
    SSH into the run, and the INT8 coverage is counted from the layers."""
    from edgekd.runners.remote import remote_runner
    from edgekd.targets import load_target

    target = SshTarget.parse(
        sshd.remote(), key=sshd.client_key, host_key=sshd.host_pub, python=sys.executable
    )
    written = {"m.engine": b"\x00serialized\x01", "m.build.log": b"[I] built\n"}
    written["m.layers.json"] = json.dumps(LAYER_INFO).encode()
    for name, data in written.items():
        (tmp_path / name).write_bytes(data)
    build = {"tensorrt": "10.3.0", "strongly_typed": True, "build_seconds": 1.5,
             "engine": "m.engine", "log": "m.build.log", "layers": "m.layers.json"}  # fmt: skip
    keep = tmp_path / "run" / "engines"
    with SshSession(target, ["onnxruntime"]) as session:
        session.put({name: tmp_path / name for name in written})
        runner = remote_runner(
            digits_run / "student_int8.onnx", load_target("jetson-orin-nano-8gb"), session, keep
        )
        local = tmp_path / "local"
        local.mkdir()
        engine = runner._engine(build, local)
    assert {p.name: p.read_bytes() for p in keep.iterdir()} == written
    assert engine["config"]["strongly_typed"] is True and engine["tensorrt"] == "10.3.0"
    cov = engine["int8_coverage"]
    assert (cov["compute_layers"], cov["int8_layers"], cov["coverage"]) == (2, 1, 0.5)
    assert cov["not_int8"][0]["name"] == HALF_GEMM["Name"]
