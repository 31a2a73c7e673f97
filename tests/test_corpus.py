"""The model corpus through edgekd: torchvision and timm classifiers as teachers in every format,
and as students through every stage for every quantization scheme.

These run where torchvision and timm import (`.ci/run` runs them in a second venv: see README);
elsewhere they skip with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import corpus
import numpy as np
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


@pytest.fixture(scope="module")
def rgb_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as 32x32 RGB (each image tinted a random colour): 128 train, 64 val."""
    from digits import digits_arrays

    x, y = digits_arrays()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))[:192]
    gray = np.kron(x[idx], np.ones((4, 4), dtype=np.uint8)).astype(np.float32) / 255  # 32x32
    tint = rng.uniform(0.3, 1.0, size=(len(idx), 1, 1, 3)).astype(np.float32)
    rgb = (gray[..., None] * tint * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("rgb") / "digits-rgb.npz"
    np.savez(path, x_train=rgb[64:], y_train=y[idx][64:], x_val=rgb[:64], y_val=y[idx][:64])
    return path


SCHEME_TARGETS = {
    "onnxruntime": "host-cpu",
    "tensorrt": "jetson-orin-nano-8gb",
    "qnn": "android-snapdragon-8gen3",
}


@pytest.fixture(scope="module")
def scheme_targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One target per quantization scheme, its latency method shortened and its latency budget
    lifted: these tests check what runs, not how fast on a shared machine."""
    root = tmp_path_factory.mktemp("targets")
    out = {}
    for scheme, name in SCHEME_TARGETS.items():
        text = (Path(__file__).parents[1] / "targets" / f"{name}.toml").read_text()
        short = "[latency]\nwarmup = 2\nmin_queries = 64\nmin_duration_s = 0.01\nthreads = 1\n"
        path = root / f"{name}.toml"
        text = re.sub(r"p90_latency_ms = [0-9.]+", "p90_latency_ms = 1000.0", text)  # not timed
        path.write_text(text.split("[latency]")[0] + short)
        out[scheme] = path
    return out


@pytest.fixture(scope="module")
def corpus_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A ResNet-18 teacher as (factory spec, state_dict file)."""
    weights = tmp_path_factory.mktemp("teacher") / "resnet18.pt"
    torch.save(_built("resnet18").state_dict(), weights)
    return f"{CORPUS_PY}:resnet18", str(weights)


@pytest.mark.parametrize("scheme", SCHEME_TARGETS)
@pytest.mark.parametrize("student", STUDENTS)
def test_every_stage_for_every_scheme(
    student, scheme, rgb_npz, scheme_targets, corpus_teacher, tmp_path, one_torch_thread
):
    """``compress`` with a corpus student: distil, QAT, export, validate; the INT8 model is what
    the scheme's runtime fuses (TensorRT: the Q/DQ lint passes) and ONNX Runtime reproduces the
    fake-quant student."""
    from edgekd.config import CompressConfig
    from edgekd.pipeline import compress

    teacher, weights = corpus_teacher
    cfg = CompressConfig(
        teacher=teacher,
        weights=weights,
        student=f"{CORPUS_PY}:{student}",
        data=str(rgb_npz),
        target=str(scheme_targets[scheme]),
        epochs=1,
        qat_epochs=1,
        batch_size=32,
        max_accuracy_drop=100.0,
        int8_must_pay=False,
        sensitivity=scheme == "onnxruntime",  # the pass is scheme-independent code: once is enough
    )
    report = compress(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert report["quantization"]["scheme"] == scheme
    assert (run / "student_int8.onnx").is_file()
    export = report["export"]
    # Agreement on 64 images of a student trained one epoch: its logits are close to ties, and
    # PyTorch's fake-quant rounds x * (1 / scale) where QuantizeLinear rounds x / scale, so a
    # few rounding flips cascade. The bounds catch a graph that computes something else.
    unfused = export["student_int8_unfused"]["top1_agreement"]  # the graph QAT trained
    if unfused < 0.9:
        # Deep students (efficientnet_lite0: 50 quantized layers) amplify those flips layer
        # after layer, by an amount that moves with the CPU's float kernels: then the drift
        # per layer must show accumulation only, no layer that computes something else.
        from edgekd.diff import diff_run

        layers = diff_run(run, samples=64)["layers"]
        assert layers[0]["rel_l2"] < 0.01, layers[0]
        worst = max(layers, key=lambda layer: layer["added_rel_l2"])
        assert worst["added_rel_l2"] < 0.15, worst
        assert unfused >= 0.5, unfused  # chance is 0.1
    if scheme != "tensorrt":  # ONNX Runtime is the target's runtime: its fused kernels too
        assert export["student_int8"]["top1_agreement"] >= 0.9
    if scheme == "tensorrt":
        assert export["tensorrt_lint"] == []
    assert report["gates"]["passed"], report["gates"]["records"]
