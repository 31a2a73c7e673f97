"""scikit-learn's digits for tests and benchmarks: the split as an NPZ, a small CNN teacher trained
on it, and host-cpu with a short latency method. ``tests/conftest.py`` makes fixtures of them;
``bench/crash_resume.py`` loads this file by its path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TEACHER_SOURCE = textwrap.dedent(
    '''
    """A digits teacher, as a user would write one."""
    from torch import nn


    class DigitsTeacher(nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.head = nn.Linear(128, num_classes)

        def forward(self, x):
            return self.head(self.body(x))
    '''
)
DIGITS_MEAN, DIGITS_STD = 0.3, 0.4
HOST_CPU = Path(__file__).resolve().parents[1] / "targets" / "host-cpu.toml"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 8x8 images (0..255) and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return x, d.target.astype(np.int64)


def write_npz(path: Path) -> Path:
    """Digits as NPZ, shuffled (seed 0): 1,397 train / 400 val."""
    x, y = digits_arrays()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    np.savez(path, x_train=x[400:], y_train=y[400:], x_val=x[:400], y_val=y[:400])
    return path


def train_teacher(root: Path, npz: Path, epochs: int) -> tuple[Path, Path]:
    """(digits_teacher.py, weights.pt) in ``root``: the ~240k-parameter CNN trained ``epochs``
    epochs on ``npz`` (seed 0, one torch thread: a small model, and other work may be running)."""
    source = root / "digits_teacher.py"
    source.write_text(TEACHER_SOURCE)
    scope: dict = {}
    exec(compile(TEACHER_SOURCE, str(source), "exec"), scope)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = scope["DigitsTeacher"]()
    with np.load(npz) as z:
        x = (torch.from_numpy(z["x_train"]).float()[:, None] / 255 - DIGITS_MEAN) / DIGITS_STD
        y = torch.from_numpy(z["y_train"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    weights = root / "weights.pt"
    torch.save(model.state_dict(), weights)
    return source, weights


def write_fast_target(path: Path) -> Path:
    """host-cpu renamed fast-host, with a latency method that measures in a fraction of a
    second."""
    text = (
        HOST_CPU.read_text()
        .split("[latency]")[0]
        .replace('name = "host-cpu"', 'name = "fast-host"')
    )
    path.write_text(
        text + "[latency]\nwarmup = 5\nmin_queries = 64\nmin_duration_s = 0.05\nthreads = 1\n"
    )
    return path


def options(teacher: tuple[Path, Path], npz: Path, target: Path) -> dict:
    """CompressConfig fields for a small, fast run on digits with ``teacher`` (source, weights)."""
    source, weights = teacher
    return {
        "teacher": f"{source}:DigitsTeacher",
        "weights": str(weights),
        "data": str(npz),
        "target": str(target),
        "mean": [DIGITS_MEAN],
        "std": [DIGITS_STD],
        "batch_size": 64,
        # 8x8 digits students are too small for INT8 to beat float on ONNX Runtime CPU (the
        # Q/DQ overhead dominates); test_pipeline checks the gate itself
        "int8_must_pay": False,
    }
