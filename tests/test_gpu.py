"""The CUDA paths: training on a GPU under autocast, ONNX Runtime's CUDA provider.

Marked ``gpu`` (not in the default run): ``pytest -m gpu`` on a machine with an NVIDIA GPU, or
``bash bench/gpu_smoke.sh``, which runs these with the rest of its checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgekd.config import CompressConfig
from edgekd.pipeline import compress
from edgekd.runners.ort_runner import OrtRunner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory, digits_options) -> Path:
    cfg = CompressConfig(
        **digits_options, epochs=2, qat_epochs=1, device="cuda", max_accuracy_drop=100.0
    )
    out = tmp_path_factory.mktemp("gpu") / "digits"
    compress(cfg, out)
    return out


def test_distillation_trains_on_the_gpu_under_autocast(cuda_run: Path) -> None:
    record = json.loads((cuda_run / "logs" / "distill.json").read_text())
    assert record["device"] == "cuda:0" and record["amp"] is True
    assert all(np.isfinite(e["loss"]) for e in record["history"])
    report = json.loads((cuda_run / "report.json").read_text())
    assert report["accuracy"]["student_int8"] > 0.5  # 10 classes: far above chance


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime has no CUDA provider (install onnxruntime-gpu)",
)
@pytest.mark.parametrize("model", ["teacher.onnx", "student_fp32.onnx", "student_int8.onnx"])
def test_onnxruntime_runs_on_cuda_and_agrees_with_the_cpu(cuda_run: Path, model: str) -> None:
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8), dtype=np.float32)
    with OrtRunner(cuda_run / model, ["CUDAExecutionProvider", "CPUExecutionProvider"]) as gpu:
        assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"  # no silent fallback
        on_gpu = gpu.predict(x)
    with OrtRunner(cuda_run / model) as cpu:
        on_cpu = cpu.predict(x)
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.95


def test_live_teacher_runs_under_autocast_and_answers_in_float32(digits_options) -> None:
    from edgekd.distill.teachers import LiveTeacher
    from edgekd.models.teacher import load_model

    teacher = load_model(digits_options["teacher"], digits_options["weights"]).eval()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = teacher(x)  # float32 on the CPU
    dtypes = []
    teacher.head.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    live = LiveTeacher([teacher], None, 1.0, torch.device("cuda"))
    try:
        logits = live(torch.arange(64), x).logits
    finally:
        live.close()
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert dtypes == [half] and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.95
    assert next(teacher.parameters()).device.type == "cpu"  # close(): back as it came
