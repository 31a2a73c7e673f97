"""The ONNX Runtime runner and the latency method."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.runners.latency import environment, measure
from edgekd.runners.ort_runner import OrtRunner


def test_measure_respects_minimum_queries_and_duration() -> None:
    calls = []
    stats = measure(
        lambda: calls.append(1), warmup=3, min_queries=64, min_duration_s=0.0, where="here"
    )
    assert stats.n == 64 and len(calls) == 67
    t0 = time.perf_counter()
    stats = measure(
        lambda: time.sleep(0.001), warmup=0, min_queries=64, min_duration_s=0.3, where="here"
    )
    assert time.perf_counter() - t0 >= 0.3
    assert stats.n >= 64
    assert 1.0 <= stats.p50 <= stats.p90 <= stats.p99
    assert stats.to_dict()["where"] == "here"


def test_ort_runner_predicts_like_pytorch_and_times(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    ).eval()
    x = torch.randn(300, 1, 8, 8)
    path = tmp_path / "m.onnx"
    export_onnx(model, x[:1], path)
    with OrtRunner(
        path, ("TensorrtExecutionProvider", "CPUExecutionProvider"), threads=1
    ) as runner:
        out = runner.predict(x.numpy(), batch_size=128)
        stats = runner.time(x[:1].numpy(), warmup=2, min_queries=64, min_duration_s=0.0, label="t")
        assert "CPUExecutionProvider" in runner.where and "1 thread" in runner.where
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)
    assert stats.n == 64 and stats.where.startswith("measured: onnxruntime")


def test_ort_runner_rejects_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BadInput, match="ONNX Runtime cannot load it"):
        with OrtRunner(bad):
            pass


def test_environment_fingerprint() -> None:
    env = environment()
    assert env["cores"] >= 1 and env["onnxruntime"] and env["cpu"]
