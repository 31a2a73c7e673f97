#!/usr/bin/env python
"""A remote validate over SSH against a local one, on one run: the same accuracy, and a latency
report with the device's fingerprint.

The "device" is this machine reached over loopback: a real OpenSSH server (Debian's
openssh-server) started in a temporary folder with fresh keys, and ``edgekd validate RUN
--remote`` copying the models and the device bundle (edgekd_device.pyz) to it. The two
validations run one after the other on the same 2 cores, so their latencies compare as well as
two local runs do.

Usage: python bench/remote_loopback.py [RUN] [--out bench-out/remote-loopback]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from loopback_sshd import Sshd  # noqa: E402

from edgekd.pipeline import run_stage  # noqa: E402
from edgekd.runners.remote import SshTarget  # noqa: E402

MODELS = ("teacher", "student_fp32", "student_int8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?", default=Path("runs/example"))
    p.add_argument("--out", type=Path, default=Path("bench-out/remote-loopback"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    local = run_stage("validate", args.run)
    shutil.copy(args.run / "report.json", args.out / "local.report.json")
    with tempfile.TemporaryDirectory() as folder:
        sshd = Sshd(Path(folder))
        try:
            target = SshTarget.parse(
                sshd.remote(), key=sshd.client_key, host_key=sshd.host_pub, python=sys.executable
            )
            remote = run_stage("validate", args.run, remote=target)
        finally:
            sshd.stop()
    shutil.copy(args.run / "report.json", args.out / "remote.report.json")
    lines = [
        "| model | accuracy local % | accuracy remote % | p90 ms local | p90 ms remote |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in (m for m in MODELS if m in local["latency_ms"]):
        lines.append(
            f"| {m} | {100 * local['accuracy'][m]:.2f} | {100 * remote['accuracy'][m]:.2f} "
            f"| {local['latency_ms'][m]['p90']:.3f} | {remote['latency_ms'][m]['p90']:.3f} |"
        )
    same = all(local["accuracy"][m] == remote["accuracy"][m] for m in local["accuracy"])
    lines += [
        "",
        f"accuracy identical: {same}; agreement identical: "
        f"{local['agreement'] == remote['agreement']}",
        f"local latency: {local['latency_ms']['teacher']['where']}",
        f"remote latency: {remote['latency_ms']['teacher']['where']}",
        f"remote fingerprint: {json.dumps(remote['environment'])}",
    ]
    md = "\n".join(lines)
    (args.out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
