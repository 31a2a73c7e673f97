"""Run models on a remote device over SSH, with the system ``ssh`` and ``scp``.

A :class:`SshSession` makes a temporary folder on the device, copies :mod:`edgekd.device` there
as one zipapp (:mod:`edgekd.runners.bundle`), and removes the folder when it closes; a
:class:`RemoteRunner` copies one model into a session and predicts or times it there.

Safety: every ``ssh``/``scp`` call is an argument list (no local shell). sshd runs the remote
command through the device's shell, so that string is built only from fixed strings and
``shlex.quote``'d values. Host keys are always checked (``StrictHostKeyChecking=yes``): against the
user's known_hosts, or against a key pinned with ``host_key`` (a known_hosts file, or one
``TYPE BASE64`` key line written into a temporary known_hosts). ``BatchMode=yes``: never a prompt.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import write_bytes
from edgekd.errors import (
    BadInput,
    EdgekdError,
    RemoteAuthFailed,
    RemoteHostKey,
    RemoteNotReady,
    RemoteTimeout,
    RemoteUnreachable,
)
from edgekd.runners.base import Runner
from edgekd.runners.bundle import NAME as BUNDLE
from edgekd.runners.bundle import build_bundle
from edgekd.runners.latency import LatencyStats, stats
from edgekd.targets import Target

CONNECT_TIMEOUT_S = 10.0  # default for TCP connect and the SSH banner exchange
STEP_TIMEOUT_S = 900.0  # default for one step on the device (an engine build, a latency run)
_USER = r"[A-Za-z_][A-Za-z0-9._-]*"
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_REMOTE = re.compile(rf"(?P<user>{_USER})@(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?")
_KEY_LINE = re.compile(
    r"(?P<type>(?:sk-)?(?:ssh|ecdsa)-[A-Za-z0-9@.-]+)\s+(?P<b64>[A-Za-z0-9+/]+={0,3})"
)
_SAFE_DIR = re.compile(r"/[A-Za-z0-9_./-]*edgekd-[A-Za-z0-9_]+")
# Python run on the device first: which of the needed modules are missing, and a temporary folder.
_PREPARE = (
    "import importlib.util as u, json, sys, tempfile\n"
    "missing = [m for m in sys.argv[1:] if u.find_spec(m) is None]\n"
    "where = None if missing else tempfile.mkdtemp(prefix='edgekd-')\n"
    "print(json.dumps({'missing': missing, 'dir': where, 'python': sys.executable}))\n"
)


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach a device: ``USER@HOST[:PORT]`` and the SSH options."""

    user: str
    host: str  # a name, an IPv4 address, or an IPv6 address in brackets
    port: int = 22
    key: Path | None = None  # private key (-i); default: the user's ssh-agent / ~/.ssh keys
    host_key: str | None = None  # a known_hosts file, or a pinned "TYPE BASE64" key
    python: str = "python3"  # the device's interpreter
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    timeout_s: float = STEP_TIMEOUT_S

    @classmethod
    def parse(cls, remote: str, **options: Any) -> SshTarget:
        """``USER@HOST[:PORT]`` plus options (None = default); BadInput on anything malformed."""
        m = _REMOTE.fullmatch(remote.strip())
        if m is None:
            raise BadInput(f"--remote {remote!r}: expected USER@HOST[:PORT], e.g. nvidia@orin:22")
        port = int(m["port"] or 22)
        if not 0 < port < 65536:
            raise BadInput(f"--remote {remote!r}: port {port} is not in 1..65535")
        given = {k: v for k, v in options.items() if v is not None}
        target = cls(m["user"], m["host"], port, **given)
        if target.key is not None and not Path(target.key).is_file():
            raise BadInput(f"--ssh-key {target.key}: no such file")
        if target.host_key is not None:
            target.known_hosts_line()  # checks it
        for name in ("connect_timeout_s", "timeout_s"):
            if not getattr(target, name) > 0:
                raise BadInput(f"{name.replace('_s', '').replace('_', '-')} must be positive")
        if not target.python.strip() or target.python.startswith("-"):
            raise BadInput(f"--remote-python {target.python!r}: expected an interpreter path")
        return target

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def known_hosts_line(self) -> str | None:
        """The known_hosts line of a pinned key, or None when ``host_key`` is a file."""
        text = self.host_key or ""
        if Path(text).is_file():
            return None
        m = _KEY_LINE.match(text.strip())
        if m is None:
            raise BadInput(
                f"--host-key {text[:40]!r}: expected a known_hosts file or a key line such as "
                "'ssh-ed25519 AAAA...' (ssh-keyscan, or the device's /etc/ssh/ssh_host_*.pub)"
            )
        bare = self.host.strip("[]")
        name = bare if self.port == 22 else f"[{bare}]:{self.port}"
        return f"{name} {m['type']} {m['b64']}\n"


def _classify(text: str, target: SshTarget, what: str) -> EdgekdError | None:
    """The error an ssh/scp failure message means, or None when it is not a connection error."""
    low = text.lower()
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    where = f"{target.label} ({what})"
    if (
        "remote host identification has changed" in low
        or "host key for" in low
        and ("has changed" in low or "differs" in low)
    ):
        return RemoteHostKey(
            f"{where}: the host key does not match the known or pinned key: possibly another "
            "machine at that address; check the device's key before updating known_hosts"
        )
    if "host key verification failed" in low or "no matching host key" in low:
        return RemoteHostKey(
            f"{where}: host key unknown: add it to known_hosts after checking its fingerprint "
            f"(ssh-keyscan -p {target.port} {target.host.strip('[]')}), or pin it with --host-key"
        )
    if "permission denied" in low or "too many authentication failures" in low:
        return RemoteAuthFailed(
            f"{where}: login refused for user {target.user}: check the user, --ssh-key and the "
            "device's ~/.ssh/authorized_keys"
        )
    if "timed out" in low:
        return RemoteTimeout(
            f"{where}: connection timed out after {target.connect_timeout_s:g} s "
            "(--connect-timeout): is the device up and the port right?"
        )
    if "connection refused" in low:
        return RemoteUnreachable(
            f"{where}: connection refused on port {target.port}: is sshd running there?"
        )
    unreachable = (
        "could not resolve",
        "no route to host",
        "network is unreachable",
        "connection closed",
        "connection reset",
        "kex_exchange_identification",
        "lost connection",
        "broken pipe",
    )
    if any(s in low for s in unreachable):
        return RemoteUnreachable(f"{where}: {last}")
    return None


class SshSession:
    """A connection target and a temporary folder on the device holding :mod:`edgekd.device`.

    ``modules``: what the device must have besides numpy (``onnxruntime`` or ``tensorrt``).
    """

    def __init__(self, target: SshTarget, modules: Sequence[str] = ("onnxruntime",)) -> None:
        self.target = target
        self.modules = ["numpy", *modules]
        self.local: Path | None = None
        self.dir: str | None = None
        self.runner: str | None = None
        self._fingerprint: dict[str, Any] | None = None

    def __enter__(self) -> SshSession:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _options(self) -> list[str]:
        assert self.local is not None, "open the session first"
        t = self.target
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UpdateHostKeys": "no",
            "ConnectTimeout": str(max(1, round(t.connect_timeout_s))),
            # a connection that stops answering counts as lost after 3 connect timeouts
            "ServerAliveInterval": str(max(1, round(t.connect_timeout_s))),
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
        }
        if t.host_key is not None:
            line = t.known_hosts_line()
            known = Path(t.host_key) if line is None else self.local / "known_hosts"
            if line is not None:
                known.write_text(line)
            opts.update(UserKnownHostsFile=str(known), GlobalKnownHostsFile=os.devnull)
        args = [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]
        if t.key is not None:
            args += ["-i", str(t.key), "-o", "IdentitiesOnly=yes"]
        return args

    def _call(
        self, args: list[str], what: str, timeout_s: float, keep_stdin: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ssh/scp; connection errors raise; other failures come back to the caller.

        ``keep_stdin``: hold the remote command's stdin open until it ends, so that the device
        runner (``--exit-on-eof``) stops when this side goes away (a timeout, an interrupt).
        """
        read, write = os.pipe() if keep_stdin else (subprocess.DEVNULL, None)
        try:
            proc = subprocess.Popen(
                args, stdin=read, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        finally:
            if write is not None:
                os.close(read)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RemoteTimeout(
                f"{self.target.label} ({what}): not done within {timeout_s:g} s (--timeout)"
            ) from None
        finally:
            if write is not None:
                os.close(write)
        done = subprocess.CompletedProcess(args, proc.returncode, out, err)
        if done.returncode != 0:
            error = _classify(err, self.target, what)
            if error is not None:
                raise error
        return done

    def ssh(
        self, argv: list[str], what: str, keep_stdin: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the device; the remote command string is ``shlex.join(argv)``."""
        t = self.target
        args = ["ssh", *self._options(), "-p", str(t.port), "--", f"{t.user}@{t.host.strip('[]')}"]
        args.append(shlex.join(argv))
        return self._call(args, what, t.timeout_s, keep_stdin)

    def _scp(self, sources: list[str], dest: str, what: str) -> None:
        t = self.target
        args = ["scp", "-q", *self._options(), "-P", str(t.port), "--", *sources, dest]
        done = self._call(args, what, t.timeout_s)
        if done.returncode != 0:
            raise EdgekdError(f"{t.label} ({what}): scp failed: {_last_line(done.stderr)}")

    def _remote(self, name: str) -> str:
        assert self.dir is not None
        return f"{self.target.user}@{self.target.host}:{self.dir}/{name}"

    def put(self, files: dict[str, Path]) -> None:
        """Copy local files to the session folder under the given names."""
        assert self.local is not None and self.dir is not None
        stage = Path(tempfile.mkdtemp(dir=self.local))
        for name, path in files.items():
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
                raise ValueError(f"unsafe remote file name {name!r}")
            shutil.copyfile(path, stage / name)
        self._scp([str(stage / n) for n in files], self._remote(""), f"copying {', '.join(files)}")
        shutil.rmtree(stage)

    def get(self, names: list[str], dest: Path) -> None:
        """Copy files of the session folder to ``dest``."""
        self._scp([self._remote(n) for n in names], str(dest), f"fetching {', '.join(names)}")

    def path(self, name: str) -> str:
        """The path of ``name`` in the session folder on the device."""
        assert self.dir is not None
        return f"{self.dir}/{name}"

    def open(self) -> None:
        """Check the device has what the runner needs, make the folder, copy the bundle."""
        self.local = Path(tempfile.mkdtemp(prefix="edgekd-ssh-"))
        t = self.target
        try:
            done = self.ssh([t.python, "-c", _PREPARE, *self.modules], "connecting")
            self._prepared(done)
            self.runner = self.path(BUNDLE)
            self.put({BUNDLE: build_bundle(self.local)})
        except BaseException:
            self.close()
            raise

    def _prepared(self, done: subprocess.CompletedProcess[str]) -> None:
        t = self.target
        if done.returncode == 127:
            raise RemoteNotReady(
                f"{t.label}: no {t.python} on the device: install Python 3.8+ there or name "
                "it with --remote-python"
            )
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EdgekdError(
                f"{t.label}: {t.python} failed on the device: {_last_line(done.stderr)}"
            ) from None
        if answer["missing"]:
            raise RemoteNotReady(
                f"{t.label}: {answer['python']} on the device lacks {', '.join(answer['missing'])}:"
                f" pip install {' '.join(answer['missing'])} there, or name another interpreter "
                "with --remote-python"
            )
        if not _SAFE_DIR.fullmatch(str(answer["dir"])):
            raise EdgekdError(f"{t.label}: unexpected temporary folder {answer['dir']!r}")
        self.dir = answer["dir"]

    def close(self) -> None:
        """Remove the folder on the device (best effort) and the local temporary files."""
        if self.dir is not None:
            try:
                self.ssh(["rm", "-rf", "--", self.dir], "cleaning up")
            except EdgekdError:
                pass  # the device went away; its temporary folder goes with its next reboot
            self.dir = None
        if self.local is not None:
            shutil.rmtree(self.local, ignore_errors=True)
            self.local = None

    def run(self, args: list[str], what: str) -> subprocess.CompletedProcess[str]:
        """Run the device command with ``args``; its own failures raise with its one line."""
        assert self.runner is not None, "open the session first"
        argv = [self.target.python, self.runner, *args]
        done = self.ssh(argv, what, keep_stdin=True)
        if done.returncode == 0:
            return done
        said = _last_line(done.stderr).removeprefix("edgekd-device: error: ")
        message = f"{self.target.label} ({what}): {said}"
        raise {2: BadInput, 3: RemoteNotReady}.get(done.returncode, EdgekdError)(message)

    def fingerprint(self) -> dict[str, Any]:
        """The device's environment fingerprint, with ``where`` naming the device."""
        if self._fingerprint is None:
            done = self.run(["fingerprint"], "fingerprint")
            env = json.loads(done.stdout.strip().splitlines()[-1])
            self._fingerprint = {**env, "where": f"remote {self.target.label} over SSH"}
        return self._fingerprint


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class RemoteRunner(Runner):
    """Runs one model on a device through a :class:`SshSession` (its own one unless given).

    ``runtime`` "onnxruntime" uses ``providers`` and ``threads``; "tensorrt" builds an engine from
    the ``.onnx`` file on the device with ``build_config`` (an EngineBuildConfig as a dict).
    """

    name = "remote"

    def __init__(
        self,
        path: str | Path,
        remote: SshTarget | SshSession,
        *,
        runtime: str = "onnxruntime",
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 1,
        build_config: dict[str, Any] | None = None,
        keep_dir: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.keep_dir = keep_dir  # where the device's engine, build log and layer info are kept
        if not self.path.is_file():
            raise BadInput(f"{self.path}: no such model file")
        self.own = isinstance(remote, SshTarget)
        self.session = SshSession(remote, [runtime]) if isinstance(remote, SshTarget) else remote
        self.runtime = runtime
        self.providers = list(providers)
        self.threads = threads
        self.build_config = build_config
        self.stem = re.sub(r"[^A-Za-z0-9_]", "_", self.path.stem)  # a safe name on the device
        self.remote_name = f"{self.stem}{self.path.suffix}"
        self.engine: dict[str, Any] | None = None  # the device's engine build, TensorRT only
        self.build_config_name = f"{self.remote_name}.build.json"
        self._where: str | None = None

    def activate(self) -> None:
        if self.own:
            self.session.open()
        try:
            files = {self.remote_name: self.path}
            if self.build_config is not None:
                config = Path(tempfile.mkdtemp(dir=self.session.local)) / "build.json"
                config.write_text(json.dumps(self.build_config))
                files[self.build_config_name] = config
            self.session.put(files)
        except BaseException:
            self.deactivate()
            raise

    def deactivate(self) -> None:
        if self.own:
            self.session.close()

    def _run(self, x: np.ndarray, what: str, extra: list[str]) -> tuple[dict[str, Any], Path]:
        """Run the device command on ``x``; (its result, the local folder its files came to)."""
        s = self.session
        assert s.local is not None
        local = Path(tempfile.mkdtemp(dir=s.local))
        np.save(local / "input.npy", np.ascontiguousarray(x, np.float32))
        tag = f"{self.stem}-{what}"
        s.put({f"{tag}.input.npy": local / "input.npy"})
        args = [
            "run", s.path(self.remote_name), "--input", s.path(f"{tag}.input.npy"),
            "--result", s.path(f"{tag}.result.json"), "--runtime", self.runtime,
            "--providers", ",".join(self.providers), "--threads", str(self.threads),
            "--exit-on-eof", *extra,
        ]  # fmt: skip
        if self.build_config is not None:
            args += ["--build-config", s.path(self.build_config_name)]
        s.run(args, f"{what} {self.path.name}")
        names = [f"{tag}.result.json"] + ([f"{tag}.logits.npy"] if what == "predict" else [])
        s.get(names, local)
        result = json.loads((local / names[0]).read_text())
        self._where = f"{result['where']}, on {s.target.label} over SSH"
        if result.get("engine") and self.engine is None:
            self.engine = self._engine(result["engine"], local)
        return result, local

    def _engine(self, build: dict[str, Any], local: Path) -> dict[str, Any]:
        """The device's engine build, with the INT8 coverage of its layers; the engine, its build
        log and layer information are copied into ``keep_dir`` when given."""
        from edgekd.export.tensorrt import int8_coverage

        names = [build["layers"]]
        if self.keep_dir is not None:
            names += [build[k] for k in ("log", "engine") if k in build]
        self.session.get(names, local)
        for name in names if self.keep_dir is not None else ():
            write_bytes(self.keep_dir / name, (local / name).read_bytes())
        layers = json.loads((local / build["layers"]).read_text())
        return {**build, "config": self.build_config, "int8_coverage": int8_coverage(layers)}

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for every row of ``x``: one copy to the device and back."""
        tag = f"{self.stem}-predict"
        _, local = self._run(
            x, "predict", ["--logits", self.session.path(f"{tag}.logits.npy"),
                           "--predict-batch", str(batch_size)]
        )  # fmt: skip
        return np.load(local / f"{tag}.logits.npy")

    def time(
        self,
        sample: np.ndarray,
        *,
        warmup: int,
        min_queries: int,
        min_duration_s: float,
        label: str,
    ) -> LatencyStats:
        """Single-stream latency of ``sample`` measured on the device."""
        result, _ = self._run(
            sample, "latency", ["--latency", "--warmup", str(warmup), "--min-queries",
                                str(min_queries), "--min-duration", str(min_duration_s),
                                "--batch", str(len(sample))]
        )  # fmt: skip
        return stats(result["times_ms"], self.where)

    @property
    def where(self) -> str:
        return self._where or f"measured: {self.runtime} on {self.session.target.label} over SSH"


def remote_runner(
    path: Path, target: Target, session: SshSession, keep_dir: Path | None = None
) -> RemoteRunner:
    """A runner for ``path`` on the device behind ``session``, as ``target`` says: ONNX Runtime with
    its providers and threads, or a TensorRT engine built there with the target's settings (its
    files kept in ``keep_dir`` when given)."""
    build = None
    if target.runtime == "tensorrt":
        from edgekd.export.tensorrt import config_for_model

        build = asdict(config_for_model(path, target))
    return RemoteRunner(
        path,
        session,
        runtime=target.runtime,
        providers=target.execution_providers,
        threads=target.latency.threads,
        build_config=build,
        keep_dir=keep_dir,
    )
