"""edgekd: distil a teacher into a small INT8 student for an edge device, and prove it.

The public API, importable from here; each name loads its module on first use, so that
``import edgekd`` stays light (no torch) for the CLI's start and for tools that only read a run::

    import edgekd
    cfg = edgekd.CompressConfig(teacher="teacher.py:build", weights="teacher.pt", data="train.npz")
    report = edgekd.compress(cfg, "runs/mine")
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekd._version import __version__

# public name -> the module that defines it
_API = {
    # the whole job, and its stages one at a time on a run folder
    "compress": "edgekd.pipeline",
    "open_run": "edgekd.pipeline",
    "run_stage": "edgekd.pipeline",
    "STAGES": "edgekd.pipeline",
    # the run's configuration
    "CompressConfig": "edgekd.config",
    "read_config": "edgekd.config",
    # device profiles
    "Target": "edgekd.targets",
    "load_target": "edgekd.targets",
    "list_targets": "edgekd.targets",
    # the exported graph: TensorRT's Q/DQ rules, engines, drift between float and INT8
    "lint_tensorrt": "edgekd.export.lint",
    "EngineBuildConfig": "edgekd.export.tensorrt",
    "build_engine": "edgekd.export.tensorrt",
    "diff_run": "edgekd.diff",
    # errors to catch: the base (its exit_code is the CLI's), bad input (2), a failed gate (3)
    "EdgekdError": "edgekd.errors",
    "BadInput": "edgekd.errors",
    "GateFailed": "edgekd.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
