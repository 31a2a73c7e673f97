"""Data sources (ImageFolder, NPZ, IDX), splits, resizing, normalisation and calibration sets."""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edgekd.errors import BadInput, printable

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DEFLATE_MAX_RATIO = 1032  # no deflate stream (gzip, zip) inflates more than this
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_VAL_DIRS = ("val", "valid", "validation", "test")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L" conversion


@dataclass
class Split:
    """One split: images (N, C, H, W) float32, resized and normalised; labels (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    """A loaded dataset, ready for training; ``mean``/``std`` are the per-channel values applied."""

    train: Split
    val: Split
    classes: list[str]
    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), as used by MNIST and Fashion-MNIST.

    The header's dimensions are checked against what the file can hold before anything that
    size is read; every problem is a BadInput naming the file.
    """
    path = Path(path)
    packed = path.suffix == ".gz"
    try:
        size = path.stat().st_size
        room = size * (_DEFLATE_MAX_RATIO if packed else 1)
        with (gzip.open if packed else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
                raise BadInput(f"{path} is not an IDX file")
            raw_dims = f.read(4 * head[3])
            if len(raw_dims) < 4 * head[3]:
                raise BadInput(f"corrupt IDX file {path}: header cut short")
            dims = [int.from_bytes(raw_dims[i : i + 4], "big") for i in range(0, len(raw_dims), 4)]
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            nbytes = math.prod(dims) * dtype.itemsize
            if math.prod(max(d, 1) for d in dims) * dtype.itemsize > room:  # a 0 beside 2^32s too
                raise BadInput(
                    f"corrupt IDX file {path}: header says {dims} ({nbytes} bytes), more than "
                    f"a file of {size} bytes holds"
                )
            data, rest = f.read(nbytes), f.read(1)
    except (OSError, EOFError, zlib.error) as e:
        raise BadInput(f"corrupt IDX file {path}: {e}") from None
    if len(data) != nbytes or rest:
        held = f"{len(data) // dtype.itemsize} values" if not rest else "more values"
        raise BadInput(f"corrupt IDX file {path}: header says {dims} but it holds {held}")
    try:  # e.g. more dimensions than numpy takes
        array = np.frombuffer(data, dtype).reshape(dims)
    except ValueError as e:
        raise BadInput(f"corrupt IDX file {path}: header says {dims} ({e})") from None
    return array.astype(dtype.newbyteorder("="), copy=False)


def parse_floats(text: str) -> tuple[float, ...]:
    """Parse ``"0.5,0.5,0.5"`` (commas and/or spaces) into a tuple of finite floats."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if not values or not all(np.isfinite(values)):
        raise BadInput(f"expected comma-separated numbers such as 0.5,0.5,0.5; got {text!r}")
    return values


def load_dataset(
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load an ImageFolder directory, an ``.npz`` file or an IDX (MNIST-layout) directory.

    Pixels go to [0, 1], are resized to ``input_size`` (H, W) if given, converted to
    ``channels`` (1 or 3; default: 1 if all data is grayscale, else 3), then normalised as
    ``(x - mean) / std`` per channel. Without ``mean``/``std`` they are computed per channel
    on the train split (rounded to 6 decimals; a constant channel gets std 1). A data source
    without a validation split is split stratified by class: ``val_fraction`` by ``seed``.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"data path does not exist: {path}")
    if not 0 < val_fraction < 1:
        raise BadInput(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if channels not in (None, 1, 3):
        raise BadInput(f"channels must be 1 or 3, got {channels}")
    if input_size is not None:
        if len(input_size) != 2 or not all(isinstance(v, int) and v > 0 for v in input_size):
            raise BadInput(f"input size must be two positive integers (H, W), got {input_size}")
        input_size = (input_size[0], input_size[1])

    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise BadInput(f"{path}: expected an .npz file, an ImageFolder or an IDX directory")
        kind, (train, val, classes) = "npz", _read_npz(path, val_fraction, seed)
    elif _idx_file(path, "train-images-idx3"):
        kind, (train, val, classes) = "idx", _read_idx_dir(path)
    else:
        kind = "imagefolder"
        train, val, classes = _read_imagefolder(path, input_size, channels, val_fraction, seed)

    c = channels or (1 if train.x.shape[1] == val.x.shape[1] == 1 else 3)
    if input_size is None and train.x.shape[2:] != val.x.shape[2:]:
        raise BadInput(
            f"train images are {_hw(train.x.shape[2:])} but val images are "
            f"{_hw(val.x.shape[2:])}; pass --input-size H,W to resize them"
        )
    size = input_size or (train.x.shape[2], train.x.shape[3])
    train, val = (Split(_channels(_resize(sp.x, size), c), sp.y) for sp in (train, val))

    m = _per_channel(mean, c, "mean") if mean is not None else None
    s = _per_channel(std, c, "std") if std is not None else None
    if s is not None and min(s) <= 0:
        raise BadInput(f"std values must be positive, got {s}")
    if m is None or s is None:
        cm, cs = _channel_stats(train.x)
        m, s = m or cm, s or cs
    mt, st = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (m, s))
    train, val = (Split((sp.x - mt) / st, sp.y) for sp in (train, val))
    return Dataset(
        train=train,
        val=val,
        classes=classes,
        channels=c,
        size=size,
        mean=m,
        std=s,
        source=f"{kind}:{path.resolve()}",
        fingerprint=_fingerprint(train, val),
    )


def calibration_set(split: Split, n: int = 512, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of ``n`` images of ``split`` (all of them if it has fewer)."""
    if n < 1:
        raise BadInput(f"calibration set size must be positive, got {n}")
    if len(split) <= n:
        return split.x
    idx = np.sort(np.random.default_rng(seed).choice(len(split), n, replace=False))
    return split.x[torch.from_numpy(idx)]


def load_unlabeled(path: str | Path, like: Dataset) -> torch.Tensor:
    """Images without labels, preprocessed exactly like ``like`` (channels, size, mean/std).

    ``path`` is a folder of images (searched recursively, any layout), an ``.npz`` with an
    ``x`` (or ``x_train``) array, or an IDX images file; labels stored beside them are ignored.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"unlabeled data path does not exist: {path}")
    if path.is_dir():
        files = sorted(
            f for f in path.rglob("*") if f.suffix.lower() in _IMAGE_EXTS and f.is_file()
        )
        if not files:
            raise BadInput(f"no images under {path} (looked for {', '.join(_IMAGE_EXTS)})")
        x, _ = _load_images(files, [0] * len(files), like.size, like.channels)
    else:
        x = _unlabeled_array(path)
    x = _channels(_resize(x, like.size), like.channels)
    mean, std = (
        torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (like.mean, like.std)
    )
    return (x - mean) / std


def _unlabeled_array(path: Path) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1] from an ``.npz`` (``x`` or ``x_train``) or an IDX file."""
    if path.suffix.lower() == ".npz":

        def images(names: list[str]) -> list[str]:
            name = next((k for k in ("x", "x_train") if k in names), None)
            if name is None:
                has = ", ".join(sorted(names)) or "none"
                raise BadInput(f"{path} needs an array x (or x_train); it has {has}")
            return [name]

        ((name, x),) = _npz_arrays(path, images).items()
    else:
        try:
            x, name = read_idx(path), "images"
        except BadInput as e:
            raise BadInput(
                f"{e}; expected a folder of images, an .npz or an IDX images file"
            ) from None
    try:
        return _array_split({name: x, "labels": np.zeros(x.shape[:1], np.int64)}, name, "labels").x
    except BadInput as e:
        raise BadInput(f"{path}: {e}") from None


# --- ImageFolder -------------------------------------------------------------------------


def _read_imagefolder(
    root: Path,
    input_size: tuple[int, int] | None,
    channels: int | None,
    val_fraction: float,
    seed: int,
) -> tuple[Split, Split, list[str]]:
    """Read ``root/train/<class>`` + ``root/val/<class>``, or ``root/<class>`` split by class."""
    train_dir = root / "train"
    val_dir = next((root / n for n in _VAL_DIRS if (root / n).is_dir()), None)
    if not train_dir.is_dir() or val_dir is None:
        classes, files, labels = _scan(train_dir if train_dir.is_dir() else root)
        x, y = _load_images(files, labels, input_size, channels)
        tr, va = _stratified(y.numpy(), classes, val_fraction, seed)
        return Split(x[tr], y[tr]), Split(x[va], y[va]), classes
    classes, train_files, train_labels = _scan(train_dir)
    val_classes, val_files, val_labels = _scan(val_dir)
    if val_classes != classes:
        missing = sorted(set(classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(classes))
        raise BadInput(
            f"{val_dir} must hold the same class folders as {train_dir}: "
            f"missing {missing or 'none'}, extra {extra or 'none'}"
        )
    x, y = _load_images(train_files + val_files, train_labels + val_labels, input_size, channels)
    n = len(train_files)
    return Split(x[:n], y[:n]), Split(x[n:], y[n:]), classes


def _scan(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names (sorted folder names), image files and their labels under ``folder``."""
    looked_for = ", ".join(_IMAGE_EXTS)
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [
        sorted(f for f in d.rglob("*") if f.suffix.lower() in _IMAGE_EXTS and f.is_file())
        for d in class_dirs
    ]
    if not any(per_class):
        raise BadInput(
            f"no images in {folder}/<class>/ (looked for {looked_for}); "
            "expected an ImageFolder, an IDX directory or an .npz file"
        )
    for d, found in zip(class_dirs, per_class, strict=True):
        if not found:
            raise BadInput(f"class folder {d} has no images (looked for {looked_for})")
    files = [f for found in per_class for f in found]
    labels = [i for i, found in enumerate(per_class) for _ in found]
    return [d.name for d in class_dirs], files, labels


def _load_images(
    files: list[Path], labels: list[int], input_size: tuple[int, int] | None, channels: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``files`` in a thread pool into (N, C, H, W) float32 in [0, 1] and (N,) labels."""
    with ThreadPoolExecutor() as pool:
        heads = list(pool.map(_header, files))
        c = channels or (1 if all(_is_gray(mode) for mode, _ in heads) else 3)
        size = input_size
        if size is None:
            first = heads[0][1]
            odd = next((i for i, (_, wh) in enumerate(heads) if wh != first), None)
            if odd is not None:
                raise BadInput(
                    f"images differ in size ({files[0]} is {_hw(first[::-1])}, {files[odd]} is "
                    f"{_hw(heads[odd][1][::-1])}); pass --input-size H,W to resize them"
                )
            size = (first[1], first[0])
        arrays = list(pool.map(partial(_decode, channels=c, size=size), files))
    return torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64)


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (W, H) of an image, reading only its header."""
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        raise BadInput(f"corrupt or unreadable image: {path}") from None


def _decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as (C, H, W) float32 in [0, 1], converted and resized (bilinear) by PIL."""
    try:
        with Image.open(path) as im:
            wide = im.mode.startswith("I") or im.mode == "F"  # 16-bit grayscale PNGs
            im = im.convert("F" if wide else "L" if channels == 1 else "RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / (65535.0 if wide else 255.0)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise BadInput(f"corrupt or unreadable image: {path}") from None
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return np.repeat(a, channels, axis=0) if a.shape[0] != channels else a


def _is_gray(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


# --- NPZ and IDX -------------------------------------------------------------------------


def _read_npz(path: Path, val_fraction: float, seed: int) -> tuple[Split, Split, list[str]]:
    """Read ``x_train, y_train, x_val, y_val`` (or ``x, y``, then split) and ``class_names``."""
    arrays = _npz_arrays(path)
    if {"x_train", "y_train", "x_val", "y_val"} <= arrays.keys():
        train = _array_split(arrays, "x_train", "y_train")
        val = _array_split(arrays, "x_val", "y_val")
    elif {"x", "y"} <= arrays.keys():
        train = val = _array_split(arrays, "x", "y")
    else:
        raise BadInput(
            f"{path} needs arrays x_train, y_train, x_val, y_val (or x, y); "
            f"it has {', '.join(sorted(arrays)) or 'none'}"
        )
    names = arrays.get("class_names")
    if names is not None:
        if names.ndim != 1 or len(names) == 0:
            raise BadInput(f"{path}: class_names must be a non-empty 1-D array of names")
        try:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        except UnicodeDecodeError:
            raise BadInput(f"{path}: class_names must be UTF-8 text") from None
    else:
        classes = _numbered_classes(path, (train,) if train is val else (train, val))
    _check_labels(path, (train, val), len(classes))
    if train is val:
        tr, va = _stratified(train.y.numpy(), classes, val_fraction, seed)
        train, val = Split(train.x[tr], train.y[tr]), Split(train.x[va], train.y[va])
    return train, val, classes


def _read_idx_dir(root: Path) -> tuple[Split, Split, list[str]]:
    """Read the MNIST layout: ``train-*`` is the train split, ``t10k-*`` the val split."""
    arrays = {}
    for split in ("train", "t10k"):
        for key, stem in (("x", "images-idx3"), ("y", "labels-idx1")):
            f = _idx_file(root, f"{split}-{stem}")
            if f is None:
                raise BadInput(f"IDX directory {root} lacks {split}-{stem}-ubyte[.gz]")
            arrays[f"{key}_{split}"] = read_idx(f)
    train = _array_split(arrays, "x_train", "y_train")
    val = _array_split(arrays, "x_t10k", "y_t10k")
    classes = _numbered_classes(root, (train, val))
    _check_labels(root, (train, val), len(classes))
    return train, val, classes


def _idx_file(root: Path, stem: str) -> Path | None:
    """``root/<stem>-ubyte`` or its ``.gz``, whichever exists."""
    candidates = (root / f"{stem}-ubyte", root / f"{stem}-ubyte.gz")
    return next((f for f in candidates if f.is_file()), None)


def _array_split(arrays: dict[str, np.ndarray], kx: str, ky: str) -> Split:
    """Images as (N, C, H, W) float32 in [0, 1] from (N,H,W), (N,H,W,C) or (N,C,H,W) arrays."""
    x, y = arrays[kx], arrays[ky]
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise BadInput(f"{kx} must be (N,H,W), (N,H,W,C) or (N,C,H,W) with C 1 or 3; got {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise BadInput(f"{ky} must be a 1-D array of integer labels; got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise BadInput(f"{kx} has {len(x)} samples but {ky} has {len(y)}")
    if len(x) == 0:
        raise BadInput(f"{kx} is empty")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise BadInput(f"{kx} holds images of {_hw(x.shape[2:])} pixels")
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise BadInput(f"{kx} holds integers outside 0..255")
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise BadInput(f"{kx} holds floats outside [0, 1]; store uint8 0..255 or [0, 1] floats")
    else:
        raise BadInput(f"{kx} must hold uint8 or float pixels, got {x.dtype}")
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def _npz_arrays(path: Path, pick: Callable[[list[str]], list[str]] = list) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` that ``pick`` chooses from its array names, each checked
    against the bytes its member occupies before it is allocated."""
    if not zipfile.is_zipfile(path):
        raise BadInput(f"{path} is not an NPZ file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename[:-4]: i for i in z.infolist() if i.filename.endswith(".npy")}
            return {name: _npy(path, z, members[name]) for name in pick(list(members))}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise BadInput(f"{path} is not a readable NPZ file: {e}") from None


def _npy(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, its header's shape checked against its size first (np.load would
    allocate whatever the header claims)."""
    where = f"{path}: {printable(info.filename)}"
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BadInput(f"{where} is encrypted or compressed other than as np.savez does")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO
    if info.file_size > min(info.compress_size, path.stat().st_size) * ratio:
        raise BadInput(
            f"{where} claims {info.file_size} bytes, more than its compressed size holds"
        )
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise BadInput(f"{where}: .npy format version {version} is not supported")
        header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = header(f)
    if dtype.hasobject:
        raise BadInput(f"{where} holds Python objects, which edgekd does not unpickle")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise BadInput(
            f"{where}: header claims shape {shape} of {dtype}, more than its {info.file_size} bytes"
        )
    with z.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _numbered_classes(source: Path, splits: tuple[Split, ...]) -> list[str]:
    """Classes "0" to "K-1" for unnamed labels, K the largest label + 1 (at most the samples)."""
    top, n = max(int(s.y.max()) for s in splits), sum(len(s) for s in splits)
    if top >= n:
        raise BadInput(
            f"{source}: the largest label is {top} but there are {n} samples; "
            "labels must number the classes from 0"
        )
    return [str(i) for i in range(top + 1)]


def _check_labels(source: Path, splits: tuple[Split, ...], k: int) -> None:
    for s in splits:
        if s.y.min() < 0 or s.y.max() >= k:
            raise BadInput(
                f"{source}: labels must be in 0..{k - 1} ({k} classes); "
                f"found {int(s.y.min())}..{int(s.y.max())}"
            )


# --- shared steps ------------------------------------------------------------------------


def _stratified(
    y: np.ndarray, classes: list[str], val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and val indices: ``val_fraction`` of every class (at least one each side)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < 2:
            raise BadInput(
                f"class {classes[c]!r} has {len(idx)} sample; need at least 2 to split off a "
                "validation set (or provide a val split)"
            )
        n_val = min(max(round(len(idx) * val_fraction), 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train_idx, val_idx = (torch.from_numpy(np.sort(np.concatenate(p))) for p in (train, val))
    return train_idx, val_idx


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _channels(x: torch.Tensor, c: int) -> torch.Tensor:
    if x.shape[1] == c:
        return x
    if c == 3:
        return x.repeat(1, 3, 1, 1)
    return (_LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3]).contiguous()


def _per_channel(values: Sequence[float], c: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) not in (1, c):
        raise BadInput(f"{name} has {len(values)} values for {c} channels (give 1 or {c})")
    return values * c if len(values) == 1 else values


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (float64 sums, chunked to bound memory; rounded for stability)."""
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for chunk in x.split(4096):
        a = chunk.numpy().astype(np.float64)
        total += a.sum(axis=(0, 2, 3))
        squares += np.square(a).sum(axis=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    return (
        tuple(round(float(m), 6) for m in mean),
        tuple(round(float(s), 6) or 1.0 for s in std),
    )


def _fingerprint(*splits: Split) -> str:
    h = hashlib.sha256()
    for s in splits:
        for t in (s.x, s.y):
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.contiguous().numpy())
    return h.hexdigest()


def _hw(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"
