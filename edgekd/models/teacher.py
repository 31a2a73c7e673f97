"""Load a teacher: TorchScript, torch.export .pt2, ONNX, or an importable factory plus weights."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import BadInput


class OnnxTeacher(nn.Module):
    """An ONNX teacher run by ONNX Runtime: it gives logits only (response-based KD)."""

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime as ort

        self.path = path
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises several types for a bad file
            raise BadInput(
                f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(out[0])


def _import_factory(spec: str):
    """``package.module:factory`` or ``path/to/file.py:factory`` -> the callable."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise BadInput(f"{spec!r}: expected module:factory or path/to/file.py:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise BadInput(f"{target}: no such file")
        name = f"edgekd_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - user code can raise anything
            raise BadInput(f"{target}: importing it failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise BadInput(f"{spec!r}: cannot import {target!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise BadInput(f"{spec!r}: {target} has no callable named {attr!r}")
    return factory


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``, loaded with ``weights_only=True``.

    A dict wrapping it under ``state_dict`` or ``model`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadInput(
            f"{path}: refused by torch.load(weights_only=True), it holds pickled Python objects "
            f"({str(e).splitlines()[0][:120]}); convert it where you trust it: "
            "torch.save(model.state_dict(), 'weights.pt')"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise BadInput(
            f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"{path}: expected a state_dict (a dict of tensors)")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict file into ``model``, explaining any mismatch in one line."""
    state = load_state_dict_file(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong:
            parts.append(
                "shape mismatch "
                + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong])
            )
        raise BadInput(f"{path}: weights do not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(state)


def _few(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Load a model from a file or a factory spec, in eval mode."""
    path = Path(spec)
    suffix = path.suffix.lower()
    if ":" in spec and not path.exists():
        model = _import_factory(spec)()
        if not isinstance(model, nn.Module):
            raise BadInput(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        if weights is not None:
            load_weights(model, weights)
        return model.eval()
    if not path.is_file():
        raise BadInput(f"{spec}: no such teacher file (or module:factory spec)")
    if weights is not None:
        raise BadInput(f"--weights goes with a module:factory teacher, not with {path.name}")
    if suffix == ".onnx":
        return OnnxTeacher(path)
    if suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as e:  # noqa: BLE001 - torch.export raises many types for a bad file
            raise BadInput(
                f"{path}: not a torch.export program ({str(e).splitlines()[0]})"
            ) from None
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception:  # noqa: BLE001 - torch.jit raises RuntimeError/ValueError for a bad file
        raise BadInput(
            f"{path}: not a TorchScript file; for a state_dict give the architecture as "
            "module:factory and this file with --weights"
        ) from None


@torch.no_grad()
def check_classes(model: nn.Module, sample: torch.Tensor, num_classes: int, what: str) -> None:
    """Run ``model`` on one sample and check it gives ``num_classes`` logits."""
    try:
        out = model(sample[:1])
    except Exception as e:  # noqa: BLE001 - any failure here means the input does not fit
        raise BadInput(
            f"{what} fails on an input of shape {tuple(sample[:1].shape)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise BadInput(f"{what} must return a (batch, classes) tensor of logits")
    if out.shape[1] != num_classes:
        raise BadInput(f"{what} has {out.shape[1]} classes but the data has {num_classes}")
