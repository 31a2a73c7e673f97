"""The public API in ``edgekd/__init__.py``: every name resolves to its module's object, and
``import edgekd`` alone loads no torch (the CLI's start and run-reading tools stay light)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import edgekd


@pytest.mark.parametrize("name", sorted(edgekd._API))
def test_every_public_name_is_its_modules_object(name: str) -> None:
    module = importlib.import_module(edgekd._API[name])
    assert getattr(edgekd, name) is getattr(module, name)
    assert name in edgekd.__all__ and name in dir(edgekd)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'compres'"):
        edgekd.compres  # noqa: B018


def test_import_loads_no_torch() -> None:
    code = "import sys, edgekd; print(edgekd.__version__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, torch_loaded = out.stdout.split()
    assert version == importlib.metadata.version("edgekd")
    assert torch_loaded == "False"
