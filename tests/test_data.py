"""Tests for edgekd.data: every source is built as real files under tmp_path."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from edgekd.data import Split, calibration_set, load_dataset, parse_floats, read_idx
from edgekd.errors import BadInput

FASHION = Path("/usr/share/datasets/fashion-mnist")
RAW = {"mean": (0.0,), "std": (1.0,)}  # no normalisation: x stays in [0, 1]


def _png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> None:
    """A constant image of ``value`` (so a sample's identity survives loading), size (H, W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)


def _folder(root: Path, counts: dict[str, int], start: int = 0, **kw) -> list[int]:
    """``root/<class>/<i>.png`` holding pixel value i; returns the values written."""
    values = []
    for cls, n in counts.items():
        for _ in range(n):
            _png(root / cls / f"{start}.png", start, **kw)
            values.append(start)
            start += 1
    return values


def _ids(split: Split) -> list[int]:
    """Pixel values (sample identities) of an unnormalised split."""
    return sorted(round(v * 255) for v in split.x[:, 0, 0, 0].tolist())


def _write_idx(path: Path, array: np.ndarray) -> None:
    """A minimal IDX writer (uint8 only), gzip-compressed when the name ends in .gz."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _digits_idx(root: Path, suffix: str = ".gz") -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    x = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    y = digits.target.astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, sl in (("train", slice(0, 1500)), ("t10k", slice(1500, None))):
        _write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", x[sl])
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", y[sl])
    return x, y


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "test"])
def test_imagefolder_train_val_grayscale(tmp_path: Path, val_name: str) -> None:
    train_ids = _folder(tmp_path / "train", {"cat": 3, "dog": 2})
    val_ids = _folder(tmp_path / val_name, {"cat": 1, "dog": 2}, start=100)
    ds = load_dataset(tmp_path, **RAW)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert (ds.channels, ds.size) == (1, (8, 8))
    assert ds.train.x.shape == (5, 1, 8, 8) and ds.train.x.dtype == torch.float32
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1] and ds.train.y.dtype == torch.int64
    assert ds.val.y.tolist() == [0, 1, 1]
    assert _ids(ds.train) == train_ids and _ids(ds.val) == val_ids
    assert ds.source == f"imagefolder:{tmp_path.resolve()}"


def test_imagefolder_stratified_split_is_deterministic(tmp_path: Path) -> None:
    all_ids = _folder(tmp_path, {"a": 10, "b": 20, "c": 5})
    ds = load_dataset(tmp_path, val_fraction=0.2, seed=3, **RAW)
    assert ds.classes == ["a", "b", "c"]
    assert torch.bincount(ds.val.y).tolist() == [2, 4, 1]
    assert torch.bincount(ds.train.y).tolist() == [8, 16, 4]
    assert sorted(_ids(ds.train) + _ids(ds.val)) == all_ids
    again = load_dataset(tmp_path, val_fraction=0.2, seed=3, **RAW)
    assert _ids(again.val) == _ids(ds.val) and again.fingerprint == ds.fingerprint
    other = load_dataset(tmp_path, val_fraction=0.2, seed=4, **RAW)
    assert _ids(other.val) != _ids(ds.val)


def test_train_folder_without_val_folder_is_split(tmp_path: Path) -> None:
    _folder(tmp_path / "train", {"a": 4, "b": 4})
    ds = load_dataset(tmp_path, val_fraction=0.25)
    assert (len(ds.train), len(ds.val)) == (6, 2)


def test_rgb_mixed_sizes_need_input_size(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", 10, size=(8, 8), mode="RGB")
    _png(tmp_path / "a" / "1.png", 20, size=(12, 10), mode="RGB")
    _png(tmp_path / "b" / "2.png", 30, size=(8, 8))  # grayscale among RGB
    _png(tmp_path / "b" / "3.png", 40, size=(16, 16))
    with pytest.raises(BadInput, match="--input-size"):
        load_dataset(tmp_path, val_fraction=0.5)
    ds = load_dataset(tmp_path, input_size=(6, 5), val_fraction=0.5, **RAW)
    assert (ds.channels, ds.size) == (3, (6, 5))
    assert ds.train.x.shape == (2, 3, 6, 5) and ds.val.x.shape == (2, 3, 6, 5)
    assert ds.mean == (0.0, 0.0, 0.0)  # a length-1 mean is broadcast
    values = sorted(
        round(v * 255) for v in torch.cat([ds.train.x, ds.val.x]).mean((1, 2, 3)).tolist()
    )
    assert values == [10, 20, 30, 40]  # constant images stay constant through the resize
    gray = load_dataset(tmp_path, input_size=(6, 5), channels=1, val_fraction=0.5)
    assert gray.train.x.shape == (2, 1, 6, 5)


def test_16bit_grayscale_png(tmp_path: Path) -> None:
    for i, v in enumerate((0, 65535)):
        for cls in "ab":
            path = tmp_path / cls / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(np.full((4, 4), v, dtype=np.uint16)).save(path)
    ds = load_dataset(tmp_path, val_fraction=0.5, **RAW)
    assert ds.channels == 1
    assert sorted(torch.cat([ds.train.x, ds.val.x]).amax((1, 2, 3)).tolist()) == [0, 0, 1, 1]


def test_npz_train_val_keys_channels_last(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    x_val = rng.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    np.savez(
        tmp_path / "d.npz",
        x_train=x_train,
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        x_val=x_val,
        y_val=np.array([2, 1, 0]),
        class_names=np.array(["ant", "bee", "cow"]),
    )
    ds = load_dataset(tmp_path / "d.npz", **RAW)
    assert ds.classes == ["ant", "bee", "cow"] and (ds.channels, ds.size) == (3, (5, 4))
    assert ds.source.startswith("npz:")
    expected = torch.from_numpy(x_train.transpose(0, 3, 1, 2) / 255.0).float()
    torch.testing.assert_close(ds.train.x, expected)
    assert ds.val.y.tolist() == [2, 1, 0]


def test_npz_single_array_float_channels_first_is_split(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 1, 6, 6), dtype=np.float32)  # (N, C, H, W)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "d.npz", val_fraction=0.3, input_size=(3, 3), **RAW)
    assert ds.classes == ["0", "1", "2", "3"]
    assert torch.bincount(ds.val.y).tolist() == [3] * 4 and len(ds.train) == 28
    assert ds.train.x.shape == (28, 1, 3, 3)
    assert load_dataset(tmp_path / "d.npz", channels=3).train.x.shape == (32, 3, 6, 6)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_directory_from_digits(tmp_path: Path, suffix: str) -> None:
    x, y = _digits_idx(tmp_path, suffix)
    assert np.array_equal(read_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}"), y[1500:])
    ds = load_dataset(tmp_path, **RAW)
    assert (len(ds.train), len(ds.val), ds.size, ds.channels) == (1500, 297, (8, 8), 1)
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.source == f"idx:{tmp_path.resolve()}"
    torch.testing.assert_close(ds.val.x[:, 0], torch.from_numpy(x[1500:] / 255.0).float())
    assert ds.val.y.tolist() == y[1500:].tolist()


def test_given_mean_std_are_applied(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 2, "b": 2}, mode="RGB")
    ds = load_dataset(tmp_path, mean=[0.5, 0.25, 0.0], std=[0.5], val_fraction=0.5)
    assert (ds.mean, ds.std) == ((0.5, 0.25, 0.0), (0.5, 0.5, 0.5))
    raw = load_dataset(tmp_path, val_fraction=0.5, **RAW).train.x
    expected = (raw - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / 0.5
    torch.testing.assert_close(ds.train.x, expected)


def test_computed_mean_std_standardise_train(tmp_path: Path) -> None:
    _digits_idx(tmp_path)
    ds = load_dataset(tmp_path)
    assert abs(ds.train.x.mean().item()) < 1e-4 and abs(ds.train.x.std().item() - 1) < 1e-3
    raw = load_dataset(tmp_path, **RAW).train.x
    assert ds.mean[0] == pytest.approx(raw.mean().item(), abs=1e-5)


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 3, "b": 3})
    first = load_dataset(tmp_path).fingerprint
    assert len(first) == 64 and load_dataset(tmp_path).fingerprint == first
    assert load_dataset(tmp_path, mean=[0.1], std=[0.2]).fingerprint != first
    _png(tmp_path / "a" / "0.png", 7)
    assert load_dataset(tmp_path).fingerprint != first


def test_calibration_set_is_fixed_subset() -> None:
    split = Split(torch.arange(100.0).view(100, 1, 1, 1), torch.zeros(100, dtype=torch.int64))
    a = calibration_set(split, n=10, seed=1)
    assert a.shape == (10, 1, 1, 1) and len(set(a.flatten().tolist())) == 10
    assert torch.equal(a, calibration_set(split, n=10, seed=1))
    assert not torch.equal(a, calibration_set(split, n=10, seed=2))
    assert torch.equal(calibration_set(split, n=500), split.x)
    with pytest.raises(BadInput):
        calibration_set(split, n=0)


def test_parse_floats() -> None:
    assert parse_floats("0.5,0.5,0.5") == (0.5, 0.5, 0.5)
    assert parse_floats(" 0.1, 2 ") == (0.1, 2.0)
    for junk in ("", "a,b", "0.5,,x", "nan"):
        with pytest.raises(BadInput, match="comma-separated"):
            parse_floats(junk)


def _corrupt(root: Path) -> None:
    _folder(root, {"a": 2, "b": 2})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")


def _truncated(root: Path) -> None:
    _folder(root, {"a": 2, "b": 2}, size=(64, 64))
    png = root / "a" / "0.png"
    png.write_bytes(png.read_bytes()[:60])


def _npz(root: Path, **arrays) -> None:
    np.savez(root / "d.npz", **arrays)


ERRORS = {
    "missing path": (lambda p: None, "missing", {}, "does not exist"),
    "empty folder": (lambda p: None, "", {}, r"no images .*\.png, \.jpg"),
    "empty class": (
        lambda p: (_folder(p, {"a": 2}), (p / "b").mkdir()),
        "",
        {},
        r"class folder .*b has no images",
    ),
    "corrupt image": (_corrupt, "", {}, "broken.png"),
    "truncated image": (_truncated, "", {}, r"unreadable image: .*0\.png"),
    "val classes differ": (
        lambda p: (_folder(p / "train", {"a": 1, "b": 1}), _folder(p / "val", {"a": 1}, 9)),
        "",
        {},
        r"missing \['b'\]",
    ),
    "too few to split": (lambda p: _folder(p, {"a": 5, "b": 1}), "", {}, "'b' has 1 sample"),
    "bad val_fraction": (lambda p: _folder(p, {"a": 2}), "", {"val_fraction": 1.0}, "val_fraction"),
    "zero val_fraction": (lambda p: _folder(p, {"a": 2}), "", {"val_fraction": 0}, "val_fraction"),
    "mean length": (
        lambda p: _folder(p, {"a": 2}, mode="RGB"),
        "",
        {"mean": [0.1, 0.2]},
        "mean has 2 values for 3 channels",
    ),
    "zero std": (lambda p: _folder(p, {"a": 2}), "", {"std": [0]}, "positive"),
    "npz keys": (
        lambda p: _npz(p, images=np.zeros((2, 4, 4)), labels=np.zeros(2, int)),
        "d.npz",
        {},
        "it has images, labels",
    ),
    "npz length mismatch": (
        lambda p: _npz(p, x=np.zeros((4, 4, 4), np.uint8), y=np.zeros(3, int)),
        "d.npz",
        {},
        "x has 4 samples but y has 3",
    ),
    "labels out of range": (
        lambda p: _npz(
            p, x=np.zeros((4, 4, 4), np.uint8), y=np.array([0, 1, 5, 0]), class_names=["a", "b"]
        ),
        "d.npz",
        {},
        r"labels must be in 0\.\.1",
    ),
    "npz floats not in [0,1]": (
        lambda p: _npz(p, x=np.full((4, 4, 4), 200.0), y=np.zeros(4, int)),
        "d.npz",
        {},
        r"outside \[0, 1\]",
    ),
    "not npz": (lambda p: (p / "d.txt").write_text("hi"), "d.txt", {}, "expected an .npz"),
    "corrupt npz": (
        lambda p: (p / "d.npz").write_bytes(b"PK junk"),
        "d.npz",
        {},
        "not an NPZ file",
    ),
    "idx without t10k": (
        lambda p: (_digits_idx(p), (p / "t10k-labels-idx1-ubyte.gz").unlink()),
        "",
        {},
        "lacks t10k-labels-idx1-ubyte",
    ),
    "bad channels": (lambda p: _folder(p, {"a": 2}), "", {"channels": 2}, "channels must be"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_is_one_clear_line(tmp_path: Path, case: str) -> None:
    make, name, kwargs, pattern = ERRORS[case]
    make(tmp_path)
    with pytest.raises(BadInput, match=pattern) as err:
        load_dataset(tmp_path / name, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST not installed at {FASHION}")
def test_real_fashion_mnist() -> None:
    ds = load_dataset(FASHION)
    assert (len(ds.train), len(ds.val)) == (60000, 10000)
    assert (ds.size, ds.channels, ds.num_classes) == ((28, 28), 1, 10)
    assert ds.mean[0] == pytest.approx(0.286, abs=1e-3) and ds.std[0] == pytest.approx(
        0.353, abs=1e-3
    )
    assert torch.bincount(ds.val.y).tolist() == [1000] * 10
