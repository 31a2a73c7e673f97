"""A real OpenSSH server on 127.0.0.1 for the remote-device tests and bench/remote_loopback.py.

The "device" is this machine: sshd runs in the foreground with its own host key, authorized key
and config in a given folder.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT_S = 30  # sshd prints "Server listening" within a second; generous for busy CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    """A new ed25519 key pair at ``path``; the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekd-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """A foreground sshd on a free loopback port, accepting ``client_key``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host_pub = keygen(root / "host_key")
        (root / "authorized_keys").write_text(keygen(root / "client_key") + "\n")
        self.client_key = root / "client_key"
        self.port = free_port()
        config = root / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\n"
        )
        if os.geteuid() == 0:  # sshd as root chroots its unprivileged child there
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config), "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        listening = threading.Event()

        def drain() -> None:  # sshd -e logs each connection: keep its pipe from filling
            for line in self.proc.stderr:
                self.log.append(line)
                if "Server listening" in line:
                    listening.set()
            listening.set()

        threading.Thread(target=drain, daemon=True).start()
        if not listening.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"sshd did not start: {''.join(self.log[-3:]).strip()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()

    def remote(self) -> str:
        return f"{getpass.getuser()}@127.0.0.1:{self.port}"

    def options(self, **override: object) -> list[str]:
        """CLI options reaching this server (override: option=value; None drops it)."""
        opts: dict[str, object] = {
            "remote": self.remote(),
            "ssh-key": self.client_key,
            "host-key": self.host_pub,
            "remote-python": sys.executable,
        }
        opts.update({k.replace("_", "-"): v for k, v in override.items()})
        return [s for k, v in opts.items() if v is not None for s in (f"--{k}", str(v))]
