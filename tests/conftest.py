"""Shared fixtures: scikit-learn's digits as an NPZ and a small trained teacher for them."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("EDGEKD_QUIET", "1")
# the teacher cache of test runs lives and dies with the session, never in the user's ~/.cache
os.environ["EDGEKD_CACHE"] = tempfile.mkdtemp(prefix="edgekd-test-cache-")

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


class Opaque:
    """A custom class: torch.load(weights_only=True) must refuse to unpickle it."""

    def __init__(self) -> None:
        self.note = "not a tensor"


@pytest.fixture
def opaque() -> Opaque:
    return Opaque()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on two shared cores: one intra-op thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return x, d.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits as NPZ: 1,397 train / 400 val, uint8 8x8."""
    x, y = digits_arrays()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=x[400:], y_train=y[400:], x_val=x[:400], y_val=y[:400])
    return path


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory, digits_npz: Path) -> tuple[Path, Path]:
    """(teacher.py, weights.pt): a ~240k-parameter CNN trained on digits (about 97 % val)."""
    root = tmp_path_factory.mktemp("teacher")
    source = root / "digits_teacher.py"
    source.write_text(TEACHER_SOURCE)
    scope: dict = {}
    exec(compile(TEACHER_SOURCE, str(source), "exec"), scope)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is faster, and others may be busy
    model = scope["DigitsTeacher"]()
    with np.load(digits_npz) as z:
        x = (torch.from_numpy(z["x_train"]).float()[:, None] / 255 - DIGITS_MEAN) / DIGITS_STD
        y = torch.from_numpy(z["y_train"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    weights = root / "weights.pt"
    torch.save(model.state_dict(), weights)
    return source, weights


@pytest.fixture(scope="session")
def fast_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """host-cpu with a short latency method, so tests measure in a fraction of a second."""
    text = (Path(__file__).parents[1] / "targets" / "host-cpu.toml").read_text()
    text = text.split("[latency]")[0] + (
        "[latency]\nwarmup = 5\nmin_queries = 64\nmin_duration_s = 0.05\nthreads = 1\n"
    )
    path = tmp_path_factory.mktemp("targets") / "fast-host.toml"
    path.write_text(text.replace('name = "host-cpu"', 'name = "fast-host"'))
    return path


@pytest.fixture(scope="session")
def digits_options(digits_npz: Path, digits_teacher: tuple[Path, Path], fast_target: Path) -> dict:
    """CompressConfig fields for a small, fast run on digits."""
    source, weights = digits_teacher
    return {
        "teacher": f"{source}:DigitsTeacher",
        "weights": str(weights),
        "data": str(digits_npz),
        "target": str(fast_target),
        "mean": [DIGITS_MEAN],
        "std": [DIGITS_STD],
        "batch_size": 64,
        # 8x8 digits students are too small for INT8 to beat float on ONNX Runtime CPU (the
        # Q/DQ overhead dominates); test_pipeline checks the gate itself
        "int8_must_pay": False,
    }


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, digits_options) -> Path:
    """A short compress on digits for the fast host target (INT8); shared, do not modify."""
    from edgekd.config import CompressConfig
    from edgekd.pipeline import compress

    cfg = CompressConfig(**digits_options, epochs=1, qat_epochs=1, max_accuracy_drop=100.0)
    out = tmp_path_factory.mktemp("report") / "digits"
    compress(cfg, out)
    return out


@pytest.fixture(scope="session")
def fp16_run(tmp_path_factory, digits_options) -> Path:
    """The FP16-only Jetson Nano, its latency method shortened: no INT8 model; shared, do not
    modify."""
    from edgekd.config import CompressConfig
    from edgekd.pipeline import compress

    root = tmp_path_factory.mktemp("report-nano")
    text = (Path(__file__).parents[1] / "targets" / "jetson-nano.toml").read_text()
    target = root / "jetson-nano.toml"
    target.write_text(
        text.split("[latency]")[0]
        + "[latency]\nwarmup = 2\nmin_queries = 64\nmin_duration_s = 0.01\nthreads = 1\n"
    )
    options = {**digits_options, "target": str(target)}
    compress(CompressConfig(**options, epochs=1, max_accuracy_drop=100.0), root / "nano")
    return root / "nano"
