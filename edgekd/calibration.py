"""Which training images calibrate the INT8 ranges: a manifest's list, or a random draw."""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch

from edgekd.atomic import sha256
from edgekd.data import Split, calibration_set
from edgekd.errors import BadInput

# Fewest calibration images accepted. A per-tensor range found on fewer rests on a handful of
# images (layers near the output see only a few values per image), so one atypical image sets the
# scale; TensorRT and ONNX Runtime suggest hundreds (the default is 512). 32 is a floor that
# catches mistakes (an empty or truncated manifest, --calib-samples 1), not a recommendation.
MIN_CALIB_SAMPLES = 32


def check_size(n: int, source: str) -> None:
    if n < MIN_CALIB_SAMPLES:
        raise BadInput(f"calibration needs at least {MIN_CALIB_SAMPLES} samples; {source} {n}")


def read_manifest(path: str | Path, data: str | Path, train_size: int) -> list[int]:
    """The training indices a calibration manifest lists (TOML: ``indices = [...]``, optionally
    ``sha256`` of the data file it was made for), each checked: an integer, within the training
    split of ``train_size`` images, listed once."""
    where = f"calibration manifest {path}"
    try:
        spec = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise BadInput(f"{where}: not a readable TOML file ({why})") from None
    digest = spec.get("sha256")
    if digest is not None:
        if not isinstance(digest, str):
            raise BadInput(f"{where}: sha256 must be a string, got {type(digest).__name__}")
        if not Path(data).is_file():
            raise BadInput(f"{where}: its sha256 names one data file, but {data} is not a file")
        if digest != sha256(data):
            raise BadInput(f"{where}: made for another data file than {data} (sha256 differs)")
    indices = spec.get("indices")
    if not isinstance(indices, list):
        raise BadInput(f"{where}: expected indices = [...], a list of training-image indices")
    seen: set[int] = set()
    for i in indices:
        if type(i) is not int:
            raise BadInput(f"{where}: index {i!r} is not an integer")
        if not 0 <= i < train_size:
            raise BadInput(
                f"{where}: index {i} is outside the training split (0..{train_size - 1})"
            )
        if i in seen:
            raise BadInput(f"{where}: index {i} is listed twice")
        seen.add(i)
    return indices


def calibration_inputs(
    train: Split, samples: int, seed: int, manifest: str | None, data: str
) -> torch.Tensor:
    """The manifest's training images, or ``samples`` random ones; at least MIN_CALIB_SAMPLES."""
    if not manifest:
        x = calibration_set(train, samples, seed)
        source = "--calib-samples gives" if len(x) == samples else "the training split has only"
        check_size(len(x), source)
        return x
    idx = read_manifest(manifest, data, len(train))
    check_size(len(idx), f"calibration manifest {manifest} lists")
    return train.x[torch.tensor(idx, dtype=torch.long)]
