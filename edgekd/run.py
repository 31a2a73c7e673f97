"""A run folder: where each artifact lives, the saved config, stage records and the manifest."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from edgekd._version import __version__
from edgekd.atomic import remove_leftovers, sha256, write_json, write_text
from edgekd.config import CompressConfig, read_config
from edgekd.config_file import config_toml
from edgekd.errors import BadInput
from edgekd.progress import log

ARTIFACTS = (
    "config.json",
    "config.toml",
    "student.pt",
    "student_baseline.pt",
    "student_qat.pt",
    "teacher.onnx",
    "student_fp32.onnx",
    "student_int8.onnx",
    "student_int8.ort",
    "report.json",
    "report.md",
    "report.html",
)


class RunDir:
    """Paths and records of one run folder (``--out``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.config_json = self.root / "config.json"
        self.config_toml = self.root / "config.toml"  # the same, to replay with --config
        self.student_pt = self.root / "student.pt"
        self.student_baseline_pt = self.root / "student_baseline.pt"  # --baseline: labels alone
        self.student_qat_pt = self.root / "student_qat.pt"
        self.objective_pt = self.logs / "objective.pt"  # trained adapters of feature losses
        self.teacher_onnx = self.root / "teacher.onnx"
        self.student_fp32_onnx = self.root / "student_fp32.onnx"
        self.student_int8_onnx = self.root / "student_int8.onnx"
        self.student_int8_ort = self.root / "student_int8.ort"
        self.report_json = self.root / "report.json"
        self.report_md = self.root / "report.md"
        self.report_html = self.root / "report.html"

    def exists(self) -> bool:
        return self.config_json.exists()

    def config(self) -> CompressConfig:
        if not self.exists():
            raise BadInput(
                f"{self.root}: not a run folder (no config.json); run edgekd compress or distill first"
            )
        return read_config(self.config_json)

    def need(self, *paths: Path) -> None:
        """Fail with a clear line when a stage's inputs are missing."""
        for p in paths:
            if not p.exists():
                raise BadInput(f"{p} is missing; run the stage that makes it first")

    def record(self, stage: str) -> dict[str, Any] | None:
        path = self.logs / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_record(self, stage: str, data: dict[str, Any]) -> None:
        write_json(self.logs / f"{stage}.json", data)

    def int8_fingerprints(self) -> dict[str, str]:
        """sha256 of the fake-quant student and the INT8 ONNX model: what a drift record describes."""
        return {p.name: sha256(p) for p in (self.student_qat_pt, self.student_int8_onnx)}

    def saved_drift(self) -> dict[str, Any] | None:
        """``logs/drift.json`` (from ``edgekd diff``) if it describes the current student_qat.pt
        and INT8 model."""
        record = self.record("drift")
        if record is None or not (self.student_qat_pt.exists() and self.student_int8_onnx.exists()):
            return None
        return record if record.get("artifacts") == self.int8_fingerprints() else None

    def checkpoint(self, stage: str) -> Path:
        return self.logs / f"{stage}.ckpt"

    def start(self, cfg: CompressConfig, resume: bool, inputs: dict[str, str | None]) -> None:
        """Create the folder for ``cfg`` and record its ``inputs`` (content fingerprints); an
        existing run continues only with ``resume`` (what may differ: :mod:`edgekd.resume`)."""
        if self.exists() and not resume:
            raise BadInput(
                f"{self.root} already holds a run; pass --resume to continue it or choose another --out"
            )
        if resume:
            for left in remove_leftovers(self.root) + remove_leftovers(self.logs):
                log(f"resume: removed {left}, left by an interrupted write")
        if self.exists():
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        self.save_inputs(inputs)
        self.save_config(cfg)  # config.json last: it marks the folder as a run

    def inputs(self) -> dict[str, str | None] | None:
        """``logs/inputs.json``: fingerprints of the input files (None for runs made before it)."""
        return self.record("inputs")

    def save_inputs(self, inputs: dict[str, str | None]) -> None:
        self.save_record("inputs", inputs)

    def save_config(self, cfg: CompressConfig) -> None:
        """config.json (read by the stages) and config.toml (``compress --config`` replays it)."""
        write_text(self.config_toml, config_toml(cfg))
        write_json(self.config_json, cfg.to_dict())

    def write_manifest(self) -> dict[str, Any]:
        """manifest.json: resolved config, versions and the sha256 of every artifact present."""
        import onnx
        import onnxruntime
        import torch

        files = [self.root / a for a in ARTIFACTS] + sorted(self.logs.glob("*.json"))
        manifest = {
            "edgekd": __version__,
            "config": self.config().to_dict(),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
            "platform": platform.platform(),
            "artifacts": {
                str(p.relative_to(self.root)): {"sha256": sha256(p), "bytes": p.stat().st_size}
                for p in files
                if p.exists()
            },
        }
        write_json(self.root / "manifest.json", manifest)
        return manifest
