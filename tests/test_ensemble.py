"""Tests for multi-teacher ensembles, teacher specs and unlabeled transfer sets."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import Dataset, load_dataset, load_unlabeled
from edgekd.distill.ensemble import ensemble_logits, parse_teacher
from edgekd.errors import BadInput


def _logits(seed: int, n: int = 6, k: int = 5) -> torch.Tensor:
    return 3 * torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


# --- ensemble_logits ---------------------------------------------------------------------


def test_one_teacher_comes_back_unchanged() -> None:
    a = _logits(0)
    assert torch.equal(ensemble_logits([a], None, 4.0), a)
    assert torch.equal(ensemble_logits([a.numpy()], [2.0], 1.0), a)


@pytest.mark.parametrize("weights", [None, [3.0, 1.0], [0.2, 0.8, 0.0]])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_softmax_of_the_result_is_the_weighted_mean_of_soft_targets(
    weights: list[float] | None, temperature: float
) -> None:
    teachers = [_logits(i) for i in range(len(weights) if weights else 2)]
    out = ensemble_logits([teachers[0].numpy(), *teachers[1:]], weights, temperature)
    w = torch.tensor(weights or [1.0] * len(teachers))
    w = w / w.sum()
    expected = sum(
        wi * torch.softmax(t / temperature, 1) for wi, t in zip(w, teachers, strict=True)
    )
    torch.testing.assert_close(torch.softmax(out / temperature, 1), expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_zero_weight_drops_a_teacher() -> None:
    a, b = _logits(0), _logits(1)
    out = ensemble_logits([a, b], [1.0, 0.0], 2.0)
    torch.testing.assert_close(torch.softmax(out / 2, 1), torch.softmax(a / 2, 1))


def test_class_count_mismatch_names_each_teacher() -> None:
    with pytest.raises(BadInput) as e:
        ensemble_logits([_logits(0, k=10), _logits(1, k=10), _logits(2, k=7)], None, 4.0)
    assert str(e.value) == (
        "the teachers disagree on the number of classes: "
        "teacher 1 has 10, teacher 2 has 10, teacher 3 has 7"
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "1 ensemble weight(s) given for 2 teacher(s)"),
        ([1.0, 1.0, 1.0], "3 ensemble weight(s) given for 2 teacher(s)"),
        ([1.0, -0.5], "non-negative with a positive sum"),
        ([0.0, 0.0], "non-negative with a positive sum"),
        ([1.0, float("nan")], "non-negative with a positive sum"),
    ],
)
def test_bad_weights(weights: list[float], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        ensemble_logits([_logits(0), _logits(1)], weights, 4.0)


def test_bad_temperature_and_sample_counts() -> None:
    with pytest.raises(BadInput, match="temperature must be positive"):
        ensemble_logits([_logits(0), _logits(1)], None, 0.0)
    with pytest.raises(BadInput, match="different numbers of samples"):
        ensemble_logits([_logits(0, n=6), _logits(1, n=5)], None, 4.0)


# --- parse_teacher -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model.py:Net@weights.pt", ("model.py:Net", "weights.pt")),
        ("t.onnx", ("t.onnx", None)),
        ("pkg.module:factory", ("pkg.module:factory", None)),
        ("dir@v2/model.py:Net@w.pt", ("dir@v2/model.py:Net", "w.pt")),
    ],
)
def test_parse_teacher(text: str, expected: tuple[str, str | None]) -> None:
    assert parse_teacher(text) == expected


def test_parse_teacher_keeps_an_existing_file_whole(tmp_path: Path) -> None:
    model = tmp_path / "team@lab" / "t.onnx"
    model.parent.mkdir()
    model.write_bytes(b"")
    assert parse_teacher(str(model)) == (str(model), None)


@pytest.mark.parametrize("text", ["", "model.py:Net@", "@w.pt"])
def test_parse_teacher_rejects_incomplete_specs(text: str) -> None:
    with pytest.raises(BadInput, match="SPEC@WEIGHTS"):
        parse_teacher(text)


# --- load_unlabeled ----------------------------------------------------------------------

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


@pytest.fixture
def like(tmp_path: Path) -> Dataset:
    """RGB 8x8 data normalised by MEAN/STD: what the transfer set must look like."""
    path = tmp_path / "labelled.npz"
    x = np.random.default_rng(1).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    y = np.arange(8) % 2
    np.savez(path, x_train=x[:6], y_train=y[:6], x_val=x[6:], y_val=y[6:])
    return load_dataset(path, mean=MEAN, std=STD)


def _expected(values: list[int], like: Dataset) -> torch.Tensor:
    """Constant images of ``values``, as (N, 3, 8, 8) normalised by MEAN/STD."""
    v = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1) / 255
    mean, std = (torch.tensor(t).view(1, 3, 1, 1) for t in (MEAN, STD))
    return ((v - mean) / std).expand(-1, 3, *like.size)


def test_folder_of_images_any_layout(tmp_path: Path, like: Dataset) -> None:
    root = tmp_path / "unlabeled"
    for rel, value in [("a.png", 10), ("cats/b.png", 60), ("cats/deep/er/c.png", 200)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), value, np.uint8), "L").save(root / rel)  # gray, 16x16
    (root / "notes.txt").write_text("not an image")
    x = load_unlabeled(root, like)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x, _expected([10, 60, 200], like), rtol=0, atol=1e-5)


def test_folder_matches_load_dataset_preprocessing(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(2):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / split / cls / f"{i}.png")
    like = load_dataset(root, input_size=(6, 5), channels=1)
    torch.testing.assert_close(load_unlabeled(root / "train", like), like.train.x)


def test_npz_matches_load_dataset_and_ignores_labels(tmp_path: Path, like: Dataset) -> None:
    torch.testing.assert_close(load_unlabeled(tmp_path / "labelled.npz", like), like.train.x)

    path = tmp_path / "transfer.npz"
    values = [0, 40, 90, 255]
    x = np.repeat(np.array(values, np.uint8), 16 * 16).reshape(4, 16, 16)  # gray 16x16
    for key in ("x", "x_train"):
        np.savez(path, **{key: x, "y": np.array([-1, 5, 1000, 2])})  # labels out of any range
        out = load_unlabeled(path, like)
        torch.testing.assert_close(out, _expected(values, like), rtol=0, atol=1e-5)


def test_idx_images_file(tmp_path: Path, like: Dataset) -> None:
    path = tmp_path / "images-idx3-ubyte"
    values = [0, 128, 255]
    pixels = np.repeat(np.array(values, np.uint8), 64).tobytes()
    path.write_bytes(struct.pack(">BBBBIII", 0, 0, 0x08, 3, 3, 8, 8) + pixels)
    torch.testing.assert_close(
        load_unlabeled(path, like), _expected(values, like), rtol=0, atol=1e-5
    )


def _empty_npz(path: Path) -> None:
    np.savez(path, x=np.zeros((0, 8, 8), np.uint8))


def _labels_only_npz(path: Path) -> None:
    np.savez(path, y=np.arange(3))


def _text(path: Path) -> None:
    path.write_text("hello")


def _empty_folder(path: Path) -> None:
    path.mkdir()
    (path / "readme.md").write_text("no images")


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing", None, "unlabeled data path does not exist"),
        ("empty", _empty_folder, "no images under"),
        ("e.npz", _empty_npz, "x is empty"),
        ("y.npz", _labels_only_npz, r"needs an array x \(or x_train\); it has y"),
        ("t.npz", _text, "is not an NPZ file"),
        ("blob.bin", _text, "expected a folder of images, an .npz or an IDX images file"),
    ],
)
def test_bad_unlabeled_sources(
    tmp_path: Path, like: Dataset, name: str, make, message: str
) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(BadInput, match=message) as e:
        load_unlabeled(path, like)
    assert "\n" not in str(e.value)
