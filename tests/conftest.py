"""Shared fixtures: scikit-learn's digits as an NPZ and a small trained teacher for them (tests/digits.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import digits
import pytest
import torch

os.environ.setdefault("EDGEKD_QUIET", "1")
# the teacher cache of test runs lives and dies with the session, never in the user's ~/.cache
os.environ["EDGEKD_CACHE"] = tempfile.mkdtemp(prefix="edgekd-test-cache-")


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


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits as NPZ: 1,397 train / 400 val, uint8 8x8."""
    return digits.write_npz(tmp_path_factory.mktemp("data") / "digits.npz")


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory, digits_npz: Path) -> tuple[Path, Path]:
    """(teacher.py, weights.pt): a ~240k-parameter CNN trained on digits (about 97 % val)."""
    return digits.train_teacher(tmp_path_factory.mktemp("teacher"), digits_npz, epochs=6)


@pytest.fixture(scope="session")
def fast_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """host-cpu with a short latency method, so tests measure in a fraction of a second."""
    return digits.write_fast_target(tmp_path_factory.mktemp("targets") / "fast-host.toml")


@pytest.fixture(scope="session")
def digits_options(digits_npz: Path, digits_teacher: tuple[Path, Path], fast_target: Path) -> dict:
    """CompressConfig fields for a small, fast run on digits."""
    return digits.options(digits_teacher, digits_npz, fast_target)


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
