"""Load a teacher: TorchScript, torch.export .pt2, ONNX, or an importable factory plus weights."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import BadInput, first_line


def _in_chunks(run, x: torch.Tensor, step: int | None) -> torch.Tensor:
    """``run`` over ``x`` in batches of ``step`` (a model exported with a fixed batch), the last
    one padded with zeros and the padding dropped; all at once when ``step`` is None."""
    if not step or len(x) == step:
        return run(x)
    n = len(x)
    pad = -n % step
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    return torch.cat([run(x[i : i + step]) for i in range(0, len(x), step)])[:n]


class ExportedTeacher(nn.Module):
    """A ``torch.export`` program's module; it has fixed train/eval behaviour, so mode is a flag.

    A program exported with a static batch (no ``dynamic_shapes``) runs in batches of that size.
    """

    def __init__(self, module: nn.Module, fixed_batch: int | None = None):
        super().__init__()
        self.program = module
        self.fixed_batch = fixed_batch

    def train(self, mode: bool = True) -> ExportedTeacher:
        self.training = mode  # the exported graph cannot switch modes (and raises if asked)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _in_chunks(self.program, x, self.fixed_batch)


def _static_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch size ``program`` was exported with, when it is static; None when dynamic."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            val = node.meta.get("val")
            batch = val.shape[0] if val is not None and val.dim() else None
            return batch if isinstance(batch, int) else None
    return None


class OnnxTeacher(nn.Module):
    """An ONNX teacher run by ONNX Runtime: it gives logits only (response-based KD)."""

    def __init__(self, path: Path):
        super().__init__()
        from edgekd.device.errors import Unusable
        from edgekd.device.ort import OrtSession

        self.path = path
        try:
            self.session = OrtSession(str(path))
        except Unusable as e:
            raise BadInput(f"{e} (not a loadable ONNX model)") from None
        self.input_name = self.session.input_name
        self.fixed_batch = self.session.fixed_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_np = x.detach().cpu().numpy().astype(np.float32)
        return torch.from_numpy(self.session.predict(x_np, max(len(x_np), 1)))


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
            raise BadInput(
                f"{target}: importing it failed: {type(e).__name__}: {first_line(e)}"
            ) from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # noqa: BLE001 - importing user code can raise anything
            raise BadInput(
                f"{spec!r}: cannot import {target!r} ({type(e).__name__}: {first_line(e)})"
            ) from None
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
    if _is_torchscript(path):
        raise BadInput(f"{path}: is a TorchScript file; give it as --teacher, without --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a bad file
        refused = first_line(e, containing="Unsupported global")
        if refused:
            raise BadInput(
                f"{path}: refused by torch.load(weights_only=True), it holds pickled Python objects "
                f"({refused}); convert it where you trust it: torch.save(model.state_dict(), 'weights.pt')"
            ) from None
        raise BadInput(f"{path}: not a readable PyTorch checkpoint ({first_line(e)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"{path}: expected a state_dict (a dict of tensors)")
    return state


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


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
    try:
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - a model's own load hooks can raise anything
        raise BadInput(
            f"{path}: loading it into {type(model).__name__} failed: "
            f"{type(e).__name__}: {first_line(e)}"
        ) from None


def _few(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_model(spec: str, weights: str | Path | None = None, role: str = "teacher") -> nn.Module:
    """Load a model from a file or a factory spec, in eval mode; ``role`` (teacher, student)
    names it in errors."""
    path = Path(spec)
    suffix = path.suffix.lower()
    if ":" in spec and not path.exists():
        factory = _import_factory(spec)
        try:
            model = factory()
        except Exception as e:  # noqa: BLE001 - the user's code can raise anything
            raise BadInput(
                f"{role} factory {spec} raised {type(e).__name__}: {first_line(e)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise BadInput(
                f"{role} factory {spec} returned {type(model).__name__}, not a torch.nn.Module"
            )
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
        if not zipfile.is_zipfile(path):
            raise BadInput(f"{path}: not a torch.export program (not a .pt2 archive)")
        torch_log = logging.getLogger("torch")
        level = torch_log.level
        torch_log.setLevel(logging.CRITICAL)  # torch.export logs a traceback before raising
        try:
            program = torch.export.load(str(path))
            return ExportedTeacher(program.module(), _static_batch(program)).eval()
        except Exception as e:  # noqa: BLE001 - torch.export raises many types for a bad file
            raise BadInput(f"{path}: not a torch.export program ({first_line(e)})") from None
        finally:
            torch_log.setLevel(level)
    try:
        with warnings.catch_warnings():  # its deprecation notice would be a second stderr line
            # (a FutureWarning in torch 2.14, a DeprecationWarning in 2.13)
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated")
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
        out = model(sample[:2])  # batch 2: a model fixed to batch 1 fails here, not mid-run
    except Exception as e:  # noqa: BLE001 - any failure here means the input does not fit
        raise BadInput(
            f"{what} fails on an input of shape {tuple(sample[:2].shape)}: "
            f"{type(e).__name__}: {first_line(e)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise BadInput(f"{what} must return a (batch, classes) tensor of logits")
    if out.shape[1] != num_classes:
        raise BadInput(f"{what} has {out.shape[1]} classes but the data has {num_classes}")
