"""Loading a teacher from real files of every supported kind, and every bad one as one clear line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.distill.trainer import predict
from edgekd.errors import BadInput
from edgekd.example.teacher import FashionCNN, fashion_cnn
from edgekd.models.teacher import (
    OnnxTeacher,
    check_classes,
    load_model,
    load_state_dict_file,
    load_weights,
)

X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Tiny(nn.Module):
    """A teacher small enough to save in every format in milliseconds."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def digits_files(request) -> tuple[Path, Path]:
    """The conftest digits teacher, requested after the thread setting so it trains fast."""
    return request.getfixturevalue("digits_teacher")


@pytest.fixture
def tiny() -> Tiny:
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode matters
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def bad_input(fn, *args, **kwargs) -> str:
    """The one-line message of the BadInput that ``fn`` raises."""
    with pytest.raises(BadInput) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message.strip() and "\n" not in message, repr(message)
    assert info.value.exit_code == 2
    return message


CORRUPT = {
    "random": random.Random(0).randbytes(4096),
    "text": b"hello world\n" * 100,
    "empty": b"",
}


def random_bytes(path: Path) -> Path:
    path.write_bytes(CORRUPT["random"])
    return path


# --- every supported kind of teacher ------------------------------------------------------


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript(tmp_path, tiny, how) -> None:
    compiled = torch.jit.script(tiny) if how == "script" else torch.jit.trace(tiny, X)
    path = tmp_path / "teacher.pt"
    compiled.save(str(path))
    model = load_model(str(path))
    assert not model.training
    torch.testing.assert_close(model(X), tiny(X))


def test_torch_export_pt2(tmp_path, tiny) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(tiny, (X,), dynamic_shapes=({0: batch},))
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, str(path))
    model = load_model(str(path))
    torch.testing.assert_close(model(X), tiny(X))
    torch.testing.assert_close(model(X[:1]), tiny(X[:1]))
    check_classes(model, X, 3, "the teacher")


def test_pt2_teacher_runs_through_predict(tmp_path, tiny) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(tiny, (X,), dynamic_shapes=({0: batch},))
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, str(path))
    logits = predict(load_model(str(path)), X, torch.device("cpu"), batch_size=2)
    torch.testing.assert_close(logits, tiny(X))


def test_onnx_teacher_matches_pytorch(tmp_path, tiny) -> None:
    path = tmp_path / "teacher.onnx"
    torch.onnx.export(
        tiny, (X,), str(path), dynamo=False,
        input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "batch"}},
    )  # fmt: skip
    model = load_model(str(path))
    assert isinstance(model, OnnxTeacher)
    assert model.input_name == "images"
    out = model(X)
    assert out.shape == (4, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, tiny(X), rtol=1e-4, atol=1e-5)
    check_classes(model, X, 3, "the teacher")


def test_module_factory_without_weights() -> None:
    model = load_model("edgekd.example.teacher:fashion_cnn")
    assert isinstance(model, FashionCNN) and not model.training
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_module_factory_with_weights(tmp_path) -> None:
    torch.manual_seed(1)
    source = fashion_cnn().eval()
    weights = tmp_path / "fashion.pt"
    torch.save(source.state_dict(), weights)
    model = load_model("edgekd.example.teacher:fashion_cnn", weights)
    assert not model.training
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), source(x))


def test_file_py_class_with_state_dict(digits_files) -> None:
    source, weights = digits_files
    model = load_model(f"{source}:DigitsTeacher", weights)
    assert type(model).__name__ == "DigitsTeacher" and not model.training
    state = torch.load(weights, weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    check_classes(model, torch.zeros(3, 1, 8, 8), 10, "the teacher")


def test_state_dict_wrapped_under_a_key_is_unwrapped(tmp_path, tiny) -> None:
    for key in ("state_dict", "model"):
        path = tmp_path / f"{key}.pt"
        torch.save({key: tiny.state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}}, path)
        state = load_state_dict_file(path)
        assert set(state) == set(tiny.state_dict())
        fresh = Tiny()
        load_weights(fresh, path)
        fresh.eval()
        torch.testing.assert_close(fresh(X), tiny(X))


# --- bad teachers: a BadInput with one useful line ----------------------------------------


@pytest.mark.parametrize("name", ["missing.pt", "missing.onnx", "missing.pt2", "no/dir/t.pt"])
def test_missing_file(tmp_path, name) -> None:
    message = bad_input(load_model, str(tmp_path / name))
    assert name.split("/")[-1] in message and "no such" in message


def test_missing_weights_file(tmp_path) -> None:
    message = bad_input(load_model, "edgekd.example.teacher:fashion_cnn", tmp_path / "nope.pt")
    assert "nope.pt" in message and "no such weights file" in message


@pytest.mark.parametrize("content", sorted(CORRUPT))
@pytest.mark.parametrize(
    ("suffix", "says"),
    [
        (".pt", "not a TorchScript file"),
        (".onnx", "not a loadable ONNX model"),
        (".pt2", "torch.export"),
    ],
)
def test_corrupt_file(tmp_path, suffix, says, content) -> None:
    path = tmp_path / f"teacher{suffix}"
    path.write_bytes(CORRUPT[content])
    message = bad_input(load_model, str(path))
    assert path.name in message and says in message


def test_truncated_weights_file(tmp_path, tiny) -> None:
    good = tmp_path / "good.pt"
    torch.save(tiny.state_dict(), good)
    path = tmp_path / "weights.pt"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    message = bad_input(load_model, "edgekd.example.teacher:fashion_cnn", path)
    assert "weights.pt" in message and "not a readable PyTorch checkpoint" in message


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("random"),
        pytest.param("text"),
        pytest.param("empty"),
    ],
)
def test_corrupt_weights_file(tmp_path, content) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(CORRUPT[content])
    message = bad_input(load_model, "edgekd.example.teacher:fashion_cnn", path)
    assert "weights.pt" in message and "not a readable PyTorch checkpoint" in message


def test_state_dict_given_as_teacher_points_to_weights(tmp_path, tiny) -> None:
    path = tmp_path / "weights.pt"
    torch.save(tiny.state_dict(), path)
    message = bad_input(load_model, str(path))
    assert "module:factory" in message and "--weights" in message


@pytest.mark.parametrize(
    "spec", ["edgekd_no_such_module:make", "edgekd.example.no_such_teacher:fashion_cnn"]
)
def test_factory_module_that_does_not_import(spec) -> None:
    message = bad_input(load_model, spec)
    assert "cannot import" in message and spec.split(":")[0] in message


def test_factory_module_that_raises_on_import(tmp_path, monkeypatch) -> None:
    (tmp_path / "edgekd_test_raises_on_import.py").write_text("raise ValueError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = bad_input(load_model, "edgekd_test_raises_on_import:make")
    assert "boom" in message


def test_factory_attribute_missing() -> None:
    message = bad_input(load_model, "edgekd.example.teacher:no_such_factory")
    assert "no callable named 'no_such_factory'" in message


def test_file_py_without_that_attribute(digits_files) -> None:
    source, weights = digits_files
    message = bad_input(load_model, f"{source}:NoSuchTeacher", weights)
    assert source.name in message and "'NoSuchTeacher'" in message


def test_file_py_that_does_not_exist(tmp_path) -> None:
    message = bad_input(load_model, f"{tmp_path / 'absent.py'}:Teacher")
    assert "absent.py" in message and "no such file" in message


def test_file_py_that_fails_to_import(tmp_path) -> None:
    source = tmp_path / "broken_teacher.py"
    source.write_text("import torch\ndef make(:\n")
    message = bad_input(load_model, f"{source}:make")
    assert "broken_teacher.py" in message and "SyntaxError" in message


def test_factory_that_returns_no_module(tmp_path) -> None:
    source = tmp_path / "not_a_model.py"
    source.write_text("def make():\n    return 42\n")
    message = bad_input(load_model, f"{source}:make")
    assert "returned int, not a torch.nn.Module" in message


def test_weights_missing_and_unexpected_keys_are_named(tmp_path, digits_files) -> None:
    source, weights = digits_files
    state = torch.load(weights, weights_only=True)
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad_keys.pt"
    torch.save(state, bad)
    message = bad_input(load_model, f"{source}:DigitsTeacher", bad)
    assert "do not fit the architecture" in message
    assert "missing head.bias" in message and "unexpected extra.weight" in message


def test_weights_shape_mismatch_is_named(tmp_path, digits_files) -> None:
    source, weights = digits_files
    state = torch.load(weights, weights_only=True)
    state["head.weight"] = state["head.weight"][:5]
    state["head.bias"] = state["head.bias"][:5]
    bad = tmp_path / "five_classes.pt"
    torch.save(state, bad)
    message = bad_input(load_model, f"{source}:DigitsTeacher", bad)
    assert "shape mismatch" in message
    assert "head.weight (5, 128) vs (10, 128)" in message and "head.bias (5,) vs (10,)" in message


def test_weights_of_another_architecture(tmp_path, tiny) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    message = bad_input(load_model, "edgekd.example.teacher:fashion_cnn", path)
    assert "missing " in message and "unexpected " in message and "more)" in message


@pytest.mark.parametrize("what", ["custom object", "whole module"])
def test_pickled_checkpoint_refused_by_weights_only(tmp_path, tiny, opaque, what) -> None:
    path = tmp_path / "pickled.pt"
    if what == "custom object":
        torch.save({"model": tiny.state_dict(), "meta": opaque}, path)
    else:
        torch.save(tiny, path)
    message = bad_input(load_model, "edgekd.example.teacher:fashion_cnn", path)
    assert "pickled.pt" in message and "weights_only" in message
    assert "state_dict()" in message and "torch.save" in message


def test_pickled_checkpoint_message_is_plain_text(tmp_path, tiny) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(tiny, path)
    message = bad_input(load_state_dict_file, path)
    assert message.isprintable(), repr(message)


def test_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    message = bad_input(load_state_dict_file, path)
    assert "expected a state_dict" in message


def test_weights_with_a_torchscript_file(tmp_path, tiny) -> None:
    path = tmp_path / "teacher.pt"
    torch.jit.script(tiny).save(str(path))
    weights = tmp_path / "weights.pt"
    torch.save(tiny.state_dict(), weights)
    message = bad_input(load_model, str(path), weights)
    assert "--weights" in message and "module:factory" in message and "teacher.pt" in message


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_weights_with_other_files(tmp_path, suffix) -> None:
    path = random_bytes(tmp_path / f"teacher{suffix}")
    message = bad_input(load_model, str(path), tmp_path / "weights.pt")
    assert "--weights" in message and path.name in message


# --- check_classes -------------------------------------------------------------------------


def test_check_classes_accepts_the_right_count(tiny) -> None:
    check_classes(tiny, X, 3, "the teacher")


def test_check_classes_wrong_count(tiny) -> None:
    message = bad_input(check_classes, tiny, X, 10, "the teacher")
    assert message == "the teacher has 3 classes but the data has 10"


def test_check_classes_wrong_input_channels(tiny) -> None:
    message = bad_input(check_classes, tiny, torch.zeros(2, 3, 8, 8), 3, "the teacher")
    assert "the teacher fails on an input of shape (2, 3, 8, 8)" in message


def test_check_classes_not_logits() -> None:
    message = bad_input(check_classes, nn.Flatten(0), X, 3, "the student")
    assert "the student must return a (batch, classes) tensor of logits" in message
