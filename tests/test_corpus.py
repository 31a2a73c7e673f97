"""The model corpus through edgekd: torchvision and timm classifiers as teachers in every format,
and as students through every stage for every quantization scheme.

These run where torchvision and timm import (`.ci/run` runs them in a second venv: see README);
elsewhere they skip with the reason.
"""

from __future__ import annotations

from pathlib import Path

import corpus
import pytest
import torch

from edgekd.models.teacher import load_model

pytestmark = [
    pytest.mark.zoo,
    pytest.mark.skipif(
        not (corpus.has("torchvision") and corpus.has("timm")),
        reason="torchvision and timm do not import here (the zoo venv runs these: see README)",
    ),
]
CORPUS_PY = Path(corpus.__file__)
ZOO = (*corpus.TORCHVISION, *corpus.TIMM, *corpus.OWN)
STUDENTS = [n for n in ZOO if n not in corpus.TEACHERS_ONLY]
SIZE = 32  # every corpus model runs at 32x32 (the stride-32 ones end at 1x1)


def _built(name: str) -> torch.nn.Module:
    """``name`` as its factory builds it (seeded), its linear layers at PyTorch's default init and
    its BatchNorm statistics from a few batches, so that its logits depend on the input."""
    torch.manual_seed(0)
    model = corpus.build(name)
    for m in model.modules():  # some heads start at N(0, 0.01): near-constant logits
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.kaiming_uniform_(m.weight, a=5**0.5)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # running stats = the batches' average (torchvision's 0.01 lags)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, SIZE, SIZE))
    return model.eval()


def _export_onnx(model: torch.nn.Module, path: Path, batch: int | None) -> None:
    """``model`` to ONNX with a dynamic batch (``batch`` None) or fixed at ``batch``."""
    torch.onnx.export(
        model,
        (torch.randn(batch or 1, 3, SIZE, SIZE),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes=None if batch else {"input": {0: "batch"}, "logits": {0: "batch"}},
    )


FORMATS = (
    "state_dict",
    "torchscript",
    "torch_export_dynamic",
    "torch_export_batch1",
    "onnx_dynamic",
    "onnx_batch1",
    "onnx_batch4",
)


def _save_as(model: torch.nn.Module, name: str, fmt: str, root: Path) -> tuple[str, str | None]:
    """``model`` saved as a user would in ``fmt``: the (spec, weights) edgekd is given."""
    x = torch.randn(1, 3, SIZE, SIZE)
    if fmt == "state_dict":
        weights = root / f"{name}.pt"
        torch.save(model.state_dict(), weights)
        return f"{CORPUS_PY}:{name}", str(weights)
    if fmt == "torchscript":
        path = root / f"{name}.ts"
        torch.jit.trace(model, x).save(str(path))
        return str(path), None
    if fmt.startswith("torch_export"):
        path = root / f"{name}.pt2"
        dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
        if fmt.endswith("dynamic"):
            x = torch.randn(2, 3, SIZE, SIZE)  # a batch of 1 would be specialised
        shapes = dynamic if fmt.endswith("dynamic") else None
        program = torch.export.export(model, (x,), dynamic_shapes=_named(model, shapes))
        torch.export.save(program, str(path))
        return str(path), None
    path = root / f"{name}.onnx"
    _export_onnx(
        model, path, batch=None if fmt == "onnx_dynamic" else int(fmt[len("onnx_batch") :])
    )
    return str(path), None


def _named(model: torch.nn.Module, shapes: dict | None) -> dict | None:
    """``shapes`` keyed by the name of ``model.forward``'s input (``x``, ``input``...)."""
    if shapes is None:
        return None
    import inspect

    first = next(iter(inspect.signature(model.forward).parameters))
    return {first: shapes["x"]}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ZOO)
def test_teacher_loads_in_every_format(name: str, fmt: str, tmp_path: Path, one_torch_thread):
    """Each format gives back the logits of the model it was saved from, at a batch the format
    was not saved with (a model fixed at one batch size runs in batches of that size)."""
    model = _built(name)
    spec, weights = _save_as(model, name, fmt, tmp_path)
    loaded = load_model(spec, weights)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    assert got.shape == (3, corpus.NUM_CLASSES)
    spread = float(want.std())
    assert spread > 1e-4  # outputs that depend on the input, or the comparison means nothing
    assert float((got - want).abs().max()) <= 1e-3 * max(1.0, float(want.abs().max()))
