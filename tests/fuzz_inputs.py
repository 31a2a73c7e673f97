"""Fuzzed inputs for edgekd's parsers (Hypothesis strategies) and the property they must keep.

Each parser in :data:`PARSERS` pairs a strategy, which draws a :class:`Case` (files to write and
what to call the parser with), with a function that calls the parser on it. The property: the
parser either returns a valid object or raises :class:`~edgekd.errors.BadInput` with one line;
anything else escaping is a defect. ``tests/test_fuzz_parsers.py`` checks it on a bounded,
derandomized run; ``bench/fuzz.py`` counts outcomes over many more examples.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import tempfile
import tomllib
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from edgekd.config import CompressConfig
from edgekd.config_file import config_toml, load_config_file
from edgekd.data import Dataset, Split, load_dataset, load_unlabeled
from edgekd.errors import BadInput
from edgekd.targets import Budgets, Hardware, LatencyMethod, Overhead, Target, load_target

BUNDLED_TARGETS = sorted(Path(__file__).resolve().parents[1].joinpath("targets").glob("*.toml"))


@dataclass
class Case:
    """Files to write under a fresh folder, and the name or path the parser is called with."""

    files: dict[str, bytes]
    arg: str
    kwargs: dict[str, Any] = field(default_factory=dict)


# --- TOML documents ----------------------------------------------------------------------

TARGET_KEYS = sorted(
    {f.name for cls in (Target, Hardware, Budgets, LatencyMethod, Overhead) for f in fields(cls)}
)
CONFIG_KEYS = sorted(f.name for f in fields(CompressConfig)) + ["kd", "at", "fitnet"]
WORDS = [  # values the parsers give meaning to, so mutations reach past the type checks
    *("jetson", "mobile", "host", "tensorrt", "onnxruntime", "qnn", "none", "int8", "fp16"),
    *("CPUExecutionProvider", "TensorrtExecutionProvider", "host-cpu", "jetson-nano", "auto"),
    *("kd", "kd+at", "crop", "crop+flip", "adamw", "sgd", "minmax", "entropy", "percentile", "2"),
]
INTS = [0, 1, -1, 7, 8, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**400]
TOKENS = [  # byte strings that change what a TOML file means
    *(b"[", b"]", b"[[", b"]]", b"{", b"}", b"=", b",", b".", b"#", b"\n", b'"', b"'", b"'''"),
    *(b"\\", b"\\u", b"\x00", b"\x7f", b"\xff", b"\xc3", b"\xed\xa0\x80", b"1e999", b"nan"),
    *(b"-inf", b"0x", b"0o8", b"9" * 40, b"1979-05-27T07:32:00Z", b"true", b"\r\n", b"\t"),
    b"\xef\xbb\xbf",
]


def _rarely(draw: st.DrawFn, usual: Any, *others: Any) -> Any:
    """``usual`` seven times in eight, else one of ``others``."""
    return draw(st.sampled_from([usual] * 7 * len(others) + list(others)))


def toml_values(keys: list[str]) -> st.SearchStrategy[Any]:
    """Any TOML value: scalars (edge-case numbers included), arrays and tables."""
    scalars = st.one_of(
        st.booleans(),
        st.integers(),
        st.sampled_from(INTS),
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(WORDS),
    )
    names = st.sampled_from(keys) | st.text(max_size=6)
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(names, kids, max_size=3),
        max_leaves=6,
    )


def toml_document(doc: dict[str, Any]) -> str:
    """``doc`` as TOML."""
    return tomli_w.dumps(doc)


def _key_paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, value in doc.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths.extend(_key_paths(value, (*prefix, key)))
    return paths


def _table(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_document(draw: st.DrawFn, doc: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """``doc`` with one key deleted, one value replaced or one key added (anywhere in it)."""
    paths = _key_paths(doc)
    op = draw(st.sampled_from(["delete", "replace", "add"]))
    if op == "add" or not paths:
        tables = [()] + [p for p in paths if isinstance(_table(doc, p), dict)]
        parent = _table(doc, draw(st.sampled_from(tables)))
        parent[draw(st.sampled_from(keys) | st.text(max_size=8))] = draw(toml_values(keys))
        return doc
    path = draw(st.sampled_from(paths))
    parent = _table(doc, path[:-1])
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(toml_values(keys))
    return doc


def _deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([2, 30, 200, 1000, 5000]) | st.integers(1, 3000))
    shape = draw(st.sampled_from(["array", "table", "dotted", "header"]))
    if shape == "array":
        return b"[" * depth + b"]" * depth
    if shape == "table":
        return b"{ a = " * depth + b"1" + b" }" * depth
    if shape == "dotted":
        return b"1\n" + b".".join([b"k"] * depth) + b" = 1"
    return b"1\n[" + b".".join([b"t"] * depth) + b"]"


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, a byte replaced, a token inserted, a slice deleted, a value nested
    deeply, or the whole re-encoded."""
    op = draw(st.sampled_from(["truncate", "replace", "insert", "delete", "nest", "encode"]))
    i = draw(st.integers(0, len(data)))
    if op == "truncate":
        return data[:i]
    if op == "replace":
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + draw(st.sampled_from(TOKENS) | st.binary(max_size=4)) + data[i:]
    if op == "delete":
        return data[:i] + data[draw(st.integers(i, min(len(data), i + 16))) :]
    if op == "nest":
        lines = data.split(b"\n")
        at = [n for n, line in enumerate(lines) if b" = " in line]
        if not at:
            return data + b"\nk = " + _deep(draw)
        n = draw(st.sampled_from(at))
        lines[n] = lines[n].split(b" = ")[0] + b" = " + _deep(draw)
        return b"\n".join(lines)
    return data.decode("utf-8", "replace").encode(
        draw(st.sampled_from(["utf-16", "cp1252"])), "replace"
    )


@st.composite
def toml_files(draw: st.DrawFn, sources: list[str], keys: list[str]) -> bytes:
    """A real file with up to three changes to what it says and up to three to its bytes; one
    time in eight a document made up from the parser's keys instead."""
    if _rarely(draw, True, False):
        doc = tomllib.loads(draw(st.sampled_from(sources)))
        for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
            doc = draw(mutated_document(doc, keys))
    else:
        doc = draw(st.dictionaries(st.sampled_from(keys), toml_values(keys), max_size=8))
    data = toml_document(doc).encode()
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        data = draw(mutated_bytes(data))
    return data


# --- data sets ---------------------------------------------------------------------------

DTYPES = ["u1", "i1", "<i2", "<i8", "<u8", "<f2", "<f4", ">f8", "?", "<c8", "<U2", "S2"]


@st.composite
def arrays(
    draw: st.DrawFn, kind: str, n: int, hw: tuple[int, int], flaw: str = "none"
) -> np.ndarray:
    """``n`` images of ``hw`` pixels (uint8 or [0, 1] floats; layout NHW, NHWC or NCHW) or
    labels 0-2; by ``flaw``, of any dtype and shape, or with out-of-range values."""
    if flaw == "any array":
        shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
        return draw(hnp.arrays(st.sampled_from(DTYPES).map(np.dtype), shapes))
    if kind == "labels":
        wild = flaw == "values"
        return draw(
            hnp.arrays(
                np.int64, n, elements=st.sampled_from(INTS[:7]) if wild else st.integers(0, 2)
            )
        )
    shape = draw(st.sampled_from([(n, *hw), (n, *hw, 3), (n, 1, *hw), (n, 3, *hw)]))
    if draw(st.booleans()):
        return draw(hnp.arrays(np.uint8, shape))
    values = st.floats(width=32) if flaw == "values" else st.floats(0, 1, width=32)
    return draw(hnp.arrays(np.float32, shape, elements=values))


def npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


NPZ_FLAWS = [
    "any array",
    "values",
    "count",
    "size",
    "layout",
    "class_names",
    "huge",
    "raw",
    "bytes",
]


@st.composite
def npz_bytes(draw: st.DrawFn) -> bytes:
    """An ``.npz`` of drawn arrays under the names edgekd reads, written by numpy; half of them
    with one flaw: an array of any dtype and shape, values out of range, sample counts or
    image sizes that disagree, other array names, odd class_names, a member whose header
    claims a huge shape, a member that is not ``.npy``, or bytes of the archive changed."""
    names = ["x_train", "y_train", "x_val", "y_val", "x", "y", "class_names", "z"]
    flaw = draw(st.sampled_from(["none"] * len(NPZ_FLAWS) + NPZ_FLAWS))
    keys = draw(st.sampled_from([names[:4], names[4:6]]))
    if flaw == "layout":
        keys = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    counts = {"train": draw(st.integers(1, 8)), "val": draw(st.integers(1, 8))}
    hw = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    odd = draw(st.sampled_from(keys)) if keys else None
    found = {}
    for key in keys:
        n, size = counts["val" if key.endswith("val") else "train"], hw
        if key == odd and flaw == "count":
            n = draw(st.integers(0, 8))
        if key == odd and flaw == "size":
            size = draw(st.sampled_from([(0, 4), (hw[0] + 1, hw[1])]))
        kind = "labels" if key.startswith("y") else "images"
        found[key] = draw(arrays(kind, n, size, flaw if key == odd else "none"))
    if flaw == "class_names" or draw(st.booleans()):
        choices = [np.array(["a", "b", "c"]), np.array([b"a", b"\xff"]), np.array([]), np.arange(4)]
        found["class_names"] = draw(st.sampled_from(choices[:1] if flaw == "none" else choices))
    buffer = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **found)
    data = buffer.getvalue()
    if flaw in ("huge", "raw"):
        with zipfile.ZipFile(buffer, "a") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a duplicate member name is a case too
            shape = draw(st.sampled_from([(2**40,), (10**6, 10**6, 10**6), (2**62, 4), (3, -1)]))
            member = npy_header(shape, draw(st.sampled_from(["<f8", "|u1", "<i8"]))) + b"\0" * 64
            z.writestr(draw(st.sampled_from(names)) + (".npy" if flaw == "huge" else ""), member)
        data = buffer.getvalue()
    elif flaw == "bytes":
        for _ in range(draw(st.integers(1, 3))):
            data = draw(mutated_bytes(data))
    return data


IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">f4"): 0x0D,
}


@st.composite
def idx_bytes(draw: st.DrawFn, labels: bool, n: int, hw: tuple[int, int]) -> bytes:
    """An IDX file of ``n`` drawn images or labels; now and then its header lies or its bytes
    are changed."""
    dtype = _rarely(draw, np.dtype("u1"), *IDX_CODES)
    shape = (n,) if labels else (n, *hw)
    elements = st.integers(0, 2) if labels else st.integers(0, 255) if dtype.kind == "u" else None
    if dtype.kind == "f":
        elements = st.floats(0, 1, width=32)
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    dims, code = list(values.shape), IDX_CODES[dtype]
    lie = _rarely(draw, "none", "dims", "code", "ndim")
    if lie == "dims":
        sides = st.sampled_from([0, 1, 5, 2**16, 2**31, 2**32 - 1])
        dims = draw(st.lists(sides, min_size=1, max_size=6))
    elif lie == "code":
        code = draw(st.integers(0, 255))
    elif lie == "ndim":
        dims = dims[: draw(st.integers(0, len(dims)))]
    raw = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    raw += values.tobytes()
    for _ in range(_rarely(draw, 0, 1, 2)):
        raw = draw(mutated_bytes(raw))
    return raw


@st.composite
def idx_dirs(draw: st.DrawFn) -> dict[str, bytes]:
    """The four files of the MNIST layout, each raw or gzip-compressed (now and then corrupted
    after compression, or missing)."""
    files = {}
    hw = (_rarely(draw, 4, 0, 1, 7), _rarely(draw, 3, 1, 5))
    for split in ("train", "t10k"):
        n = draw(st.integers(1, 6))
        hw = _rarely(draw, hw, (1, 3), (4, 4))
        for stem, labels in (("images-idx3", False), ("labels-idx1", True)):
            if _rarely(draw, False, True):
                continue  # a missing file
            raw = draw(idx_bytes(labels, n, hw))
            name = f"{split}-{stem}-ubyte"
            if draw(st.booleans()):
                raw, name = gzip.compress(raw, mtime=0), name + ".gz"
                if _rarely(draw, False, True):
                    raw = draw(mutated_bytes(raw))
            files[name] = raw
    return files


MODES = {".png": ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"], ".bmp": ["L", "RGB", "1"]}
MODES |= {".jpg": ["L", "RGB", "CMYK"], ".jpeg": ["L", "RGB"], ".webp": ["RGB", "RGBA"]}
FORMAT = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def png_claiming(size: tuple[int, int]) -> bytes:
    """A 1x1 PNG whose IHDR (CRC fixed up) claims ``size``: a lying or bomb-sized header."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", *size)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@st.composite
def image_bytes(draw: st.DrawFn, ext: str, size: tuple[int, int], flaw: str = "none") -> bytes:
    """An image file of the format ``ext`` names (rarely another), in any mode the format has;
    or, by ``flaw``, one with bytes changed, an empty file, one that is no image at all, or a
    PNG whose header claims a size it does not hold."""
    if flaw == "empty":
        return b""
    if flaw == "junk":
        return draw(st.binary(max_size=64) | st.just(b"not an image\n"))
    if flaw == "claims":  # within PIL's bomb limit a header claims at most 1024 px a side here
        side = st.integers(0, 1024) | st.sampled_from([2**31 - 1, 20000, 65535])
        return png_claiming((draw(side), draw(side)))
    fmt = FORMAT[_rarely(draw, ext, *FORMAT)]
    mode = draw(st.sampled_from(MODES[next(e for e in FORMAT if FORMAT[e] == fmt)]))
    pixels = draw(st.binary(min_size=size[0] * size[1] * 4, max_size=size[0] * size[1] * 4))
    image = Image.frombytes("RGBA", size, pixels).convert(mode if mode != "I;16" else "I")
    if mode == "I;16":
        image = image.convert("I;16")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = buffer.getvalue()
    if flaw == "changed":
        for _ in range(draw(st.integers(1, 3))):
            data = draw(mutated_bytes(data))
    return data


IMAGE_FLAWS = ["changed", "empty", "junk", "claims", "size", "not an image name", "no files"]


@st.composite
def image_folders(draw: st.DrawFn) -> Case:
    """An ImageFolder (classes at the top, or under train/ and val/) of drawn images, with
    drawn ``input_size`` and ``channels``; half of them with one flaw (a file corrupt, empty,
    not an image, of another size or under another name, a class without files)."""
    roots = draw(st.sampled_from([[""], ["train/", "val/"], ["train/"]]))
    classes = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    names = [f"{r}{c}/{i}{draw(st.sampled_from([*FORMAT, '.PNG']))}" for r in roots for c in classes for i in range(draw(st.integers(2, 3)))]  # fmt: skip
    flaw = draw(st.sampled_from(["none"] * len(IMAGE_FLAWS) + IMAGE_FLAWS))
    odd = draw(st.sampled_from(names))
    files = {}
    for name in names:
        ext = name[name.rindex(".") :].lower()
        if name != odd:
            files[name] = draw(image_bytes(ext, size))
        elif flaw == "size":
            files[name] = draw(image_bytes(ext, (size[0] + 1, size[1])))
        elif flaw == "not an image name":
            files[name[: name.rindex(".")] + ".txt"] = draw(image_bytes(ext, size))
        elif flaw != "no files":
            files[name] = draw(image_bytes(ext, size, flaw))
    kwargs = {
        "input_size": draw(st.sampled_from([None, None, (4, 4), (1, 7)])),
        "channels": draw(st.sampled_from([None, 1, 3])),
    }
    return Case(files, "", kwargs)


# --- the parsers and the property ---------------------------------------------------------


def target_files() -> st.SearchStrategy[Case]:
    sources = [p.read_text(encoding="utf-8") for p in BUNDLED_TARGETS]
    return toml_files(sources, TARGET_KEYS).map(
        lambda data: Case({"board.toml": data}, "board.toml")
    )


def target_names() -> st.SearchStrategy[Case]:
    """Names and paths as ``--target`` takes them: near-misses, long ones, odd characters."""
    bundled = [p.stem for p in BUNDLED_TARGETS]
    names = st.one_of(
        st.sampled_from(bundled),
        st.text(max_size=40),
        st.sampled_from(bundled).flatmap(
            lambda n: mutated_bytes(n.encode()).map(lambda b: b.decode("utf-8", "surrogateescape"))
        ),
        st.integers(250, 5000).map(lambda n: "a" * n),
        st.integers(100, 3000).map(lambda n: "x/" * n + ".toml"),
        st.text(max_size=20).map(lambda s: s + ".toml"),
        st.sampled_from(["", ".", "..", "/", "/dev/null", "/dev/zero", "a\0b", "\udcff", "\ud800"]),
    )
    return names.map(lambda name: Case({}, name))


def config_files() -> st.SearchStrategy[Case]:
    awkward = CompressConfig(
        teacher="models/t.py:build", data="d.npz", ensemble=["a.onnx"], ensemble_weights=[0.6, 0.4],
        loss="kd+at", loss_weights={"at": 500.0}, mean=[0.5], std=[0.25], input_size=[28, 28],
        qat_lr=1e-5, keep_float="auto", weight_bits=7, calibrator="entropy",
    )  # fmt: skip
    sources = [config_toml(CompressConfig()), config_toml(awkward)]
    return toml_files(sources, CONFIG_KEYS).map(lambda data: Case({"run.toml": data}, "run.toml"))


def npz_files() -> st.SearchStrategy[Case]:
    return npz_bytes().map(lambda data: Case({"data.npz": data}, "data.npz"))


def idx_folders() -> st.SearchStrategy[Case]:
    return idx_dirs().map(lambda files: Case(files, ""))


@st.composite
def unlabeled_inputs(draw: st.DrawFn) -> Case:
    """What ``--unlabeled`` takes: an ``.npz``, an IDX images file (raw or gzip), or a folder."""
    kind = draw(st.sampled_from(["npz", "idx", "folder"]))
    if kind == "npz":
        return Case({"u.npz": draw(npz_bytes())}, "u.npz")
    if kind == "folder":
        return Case(draw(image_folders()).files, "")
    raw = draw(idx_bytes(False, draw(st.integers(1, 6)), _rarely(draw, (4, 4), (0, 2), (3, 5))))
    if draw(st.booleans()):
        return Case({"u-ubyte.gz": gzip.compress(raw, mtime=0)}, "u-ubyte.gz")
    return Case({"u-ubyte": raw}, "u-ubyte")


def _unlabeled_like() -> Dataset:
    """The dataset ``--unlabeled`` images are preprocessed like: 1 channel, 4x4, mean/std set."""
    split = Split(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    return Dataset(split, split, ["a", "b"], 1, (4, 4), (0.5,), (0.25,), "fuzz", "")


def _check_target(found: Target) -> None:
    assert isinstance(found, Target) and found.name and found.execution_providers


def _config(path: Path) -> None:
    CompressConfig(**load_config_file(path)).resolved()


def _check_unlabeled(x: torch.Tensor, like: Dataset) -> None:
    assert x.shape[1:] == (like.channels, *like.size) and len(x) > 0, x.shape
    assert bool(x.isfinite().all())


def _check_dataset(d: Dataset, case: Case) -> None:
    """A loaded dataset is one a run can train on: shapes agree, labels name classes, finite."""
    c, (h, w) = d.channels, d.size
    assert c in (1, 3) and h >= 1 and w >= 1, (c, d.size)
    for split in (d.train, d.val):
        assert split.x.shape == (len(split.y), c, h, w) and len(split.y) > 0, split.x.shape
        assert 0 <= int(split.y.min()) and int(split.y.max()) < d.num_classes
        assert bool(split.x.isfinite().all())
    assert case.kwargs.get("input_size") in (None, d.size)
    assert all(s > 0 for s in d.std) and len(d.mean) == len(d.std) == c


_LIKE = _unlabeled_like()
Parse = Callable[[Path, Case], None]
PARSERS: dict[str, tuple[st.SearchStrategy[Case], Parse]] = {
    "target profile": (target_files(), lambda root, c: _check_target(load_target(root / c.arg))),
    "target name": (target_names(), lambda root, c: _check_target(load_target(c.arg))),
    "run config": (config_files(), lambda root, c: _config(root / c.arg)),
    "NPZ": (npz_files(), lambda root, c: _check_dataset(load_dataset(root / c.arg), c)),
    "IDX": (idx_folders(), lambda root, c: _check_dataset(load_dataset(root), c)),
    "ImageFolder": (
        image_folders(),
        lambda root, c: _check_dataset(load_dataset(root, **c.kwargs), c),
    ),
    "unlabeled": (
        unlabeled_inputs(),
        lambda root, c: _check_unlabeled(load_unlabeled(root / c.arg, _LIKE), _LIKE),
    ),
}


def outcome(parse: Parse, case: Case) -> BadInput | None:
    """Write ``case`` into a fresh folder (also the working directory) and parse it: None if it
    parsed to a valid object, the BadInput (one line) if refused; anything else escapes."""
    with tempfile.TemporaryDirectory(prefix="edgekd-fuzz-") as tmp:
        root = Path(tmp)
        for name, data in case.files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        with contextlib.chdir(root):
            try:
                parse(root, case)
            except BadInput as e:
                assert "\n" not in str(e) and str(e).strip(), f"not one line: {str(e)[:300]!r}"
                return e
    return None
