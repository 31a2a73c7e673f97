"""Fuzzed parsers: target profiles and names, run configs, NPZ, IDX and ImageFolder data.

Each either parses to a valid object or raises BadInput with one line (exit 2 at the CLI);
nothing else escapes. The Hypothesis run is derandomized and bounded for CI (``bench/fuzz.py``
runs many more examples and counts the outcomes); below it, the escapes fuzzing found, pinned.
"""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest
from fuzz_inputs import BUNDLED_TARGETS, PARSERS, Case, npy_header, outcome, png_claiming
from hypothesis import HealthCheck, given, settings

EXAMPLES = {"target profile": 200, "target name": 150, "run config": 200, "NPZ": 150}
EXAMPLES |= {"IDX": 150, "ImageFolder": 100, "unlabeled": 100}


@pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning")  # PIL's, on P
@pytest.mark.parametrize("parser", list(PARSERS))
def test_only_bad_input_escapes(parser: str) -> None:
    strategy, parse = PARSERS[parser]

    @settings(
        max_examples=EXAMPLES[parser],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def check(case: Case) -> None:
        outcome(parse, case)

    check()


HOST = (BUNDLED_TARGETS[0].parent / "host-cpu.toml").read_bytes()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npz_claiming(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO(_npz(y=np.zeros(2, np.int64)))
    with zipfile.ZipFile(buffer, "a") as z:
        z.writestr("x.npy", npy_header(shape, "<f8") + bytes(64))
    return buffer.getvalue()


def _idx(dims: list[int], data: bytes, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + data


def _mnist(**replace: bytes) -> dict[str, bytes]:
    files = {
        "train-images-idx3-ubyte": _idx([2, 2, 2], bytes(8)),
        "train-labels-idx1-ubyte": _idx([2], bytes([0, 1])),
        "t10k-images-idx3-ubyte": _idx([2, 2, 2], bytes(8)),
        "t10k-labels-idx1-ubyte": _idx([2], bytes([1, 0])),
    }
    for name in replace:  # a replacement, raw or gzip, takes the place of both
        files.pop(name.removesuffix(".gz"), None)
    return files | replace


def _folder(odd: bytes) -> dict[str, bytes]:
    good = png_claiming((1, 1))
    return {"a/0.png": good, "a/1.png": good, "b/0.png": good, "b/1.png": odd}


DEEP = b"[" * 5000 + b"]" * 5000
# (parser, case, part of the one-line refusal): what escaped before it was fixed (the exception
# or harm in brackets), and two ImageFolder cases that were refused already
FOUND = {
    "target: nested arrays (RecursionError)": (
        "target profile",
        Case({"t.toml": b"description = " + DEEP}, "t.toml"),
        "invalid TOML: arrays or tables nested too deeply",
    ),
    "target: nested tables (RecursionError)": (
        "target profile",
        Case({"t.toml": b"description = " + b"{ a = " * 3000 + b"1" + b" }" * 3000}, "t.toml"),
        "nested too deeply",
    ),
    "target: 5000-digit integer (ValueError)": (
        "target profile",
        Case({"t.toml": b"warmup = 1" + b"0" * 5000}, "t.toml"),
        "invalid TOML: Exceeds the limit (4300 digits)",
    ),
    "target: integer past float (OverflowError)": (
        "target profile",
        Case({"t.toml": HOST.replace(b"memory_gb = ", b"memory_gb = 1" + b"0" * 400 + b" #")}, "t.toml"),
        "hardware.memory_gb must be a positive number",
    ),
    "target: integer past 64 bits": (
        "target profile",
        Case({"t.toml": HOST.replace(b"max_params = ", b"max_params = 9223372036854775808 #")}, "t.toml"),
        "budgets.max_params must be a positive integer below 2^63",
    ),
    "target: key with a newline (two lines)": (
        "target profile",
        Case({"t.toml": b'"a\\nb" = 1\n' + HOST}, "t.toml"),
        'unknown key(s) "a\\nb"',
    ),
    "target name: 5000 characters (OSError)": ("target name", Case({}, "a" * 5000), "unknown target"),
    "target name: too long a path (OSError)": (
        "target name",
        Case({}, "x/" * 3000 + ".toml"),
        "cannot read target profile: File name too long",
    ),
    "target name: lone surrogate (UnicodeEncodeError)": (
        "target name",
        Case({}, "\ud800.toml"),
        'cannot read target profile: \'utf-8\' codec can\'t encode character',
    ),
    "target name: /dev/zero (memory)": ("target name", Case({}, "/dev/zero"), "larger than 1 MiB"),
    "target name: with a newline (two lines)": (
        "target name",
        Case({}, "host-cpu\nx"),
        'unknown target "host-cpu\\nx"',
    ),
    "config: nested arrays (RecursionError)": (
        "run config",
        Case({"c.toml": b"mean = " + DEEP}, "c.toml"),
        "not a readable TOML file (arrays or tables nested too deeply)",
    ),
    "config: nested value shown in the error (RecursionError)": (
        "run config",
        Case({"c.toml": b"mean = " + b"[" * 300 + b"]" * 300}, "c.toml"),
        "mean must be a list of numbers, got [[[...]]]",
    ),
    "config: integer past float (OverflowError)": (
        "run config",
        Case({"c.toml": b"lr = 1" + b"0" * 400}, "c.toml"),
        "lr must be a number",
    ),
    "config: /dev/zero (memory)": (
        "run config",
        Case({}, "/dev/zero"),
        "--config /dev/zero: not a readable TOML file (larger than 1 MiB: not a TOML file)",
    ),
    "npz: header claiming 8 TB (MemoryError)": (
        "NPZ",
        Case({"d.npz": _npz_claiming((2**40,))}, "d.npz"),
        "x.npy: header claims shape (1099511627776,) of float64, more than its",
    ),
    "npz: member not .npy (AttributeError)": (
        "NPZ",
        Case({"d.npz": _npz_claiming((1,)).replace(b"x.npy", b"x.txt")}, "d.npz"),
        "it has y",
    ),
    "npz: label 2^62 without class_names (memory)": (
        "NPZ",
        Case({"d.npz": _npz(x=np.zeros((2, 2, 2), np.uint8), y=np.array([0, 2**62]))}, "d.npz"),
        "the largest label is 4611686018427387904 but there are 2 samples;",
    ),
    "npz: class_names not UTF-8 (UnicodeDecodeError)": (
        "NPZ",
        Case(
            {"d.npz": _npz(x=np.zeros((4, 2, 2)), y=np.array([0, 1, 0, 1]), class_names=np.array([b"a", b"\xff"]))},
            "d.npz",
        ),
        "class_names must be UTF-8 text",
    ),
    "npz: images of no pixels (ValueError)": (
        "NPZ",
        Case({"d.npz": _npz(x=np.zeros((4, 0, 3), np.uint8), y=np.array([0, 1, 0, 1]))}, "d.npz"),
        "x holds images of 0x3 pixels",
    ),
    "idx: corrupt gzip stream (zlib.error)": (
        "IDX",
        Case(_mnist(**{"train-labels-idx1-ubyte.gz": b"\x1f\x8b\x08" + bytes(7) + b"\xff" + bytes(8)}), ""),
        "invalid block type",
    ),
    "idx: header claiming 2^96 values (MemoryError)": (
        "IDX",
        Case(_mnist(**{"train-images-idx3-ubyte": _idx([2**32 - 1] * 3, bytes(8))}), ""),
        "more than a file of 24 bytes holds",
    ),
    "idx: header of 0 x 2^32 x 2^32 (ValueError from reshape)": (
        "unlabeled",
        Case({"u-ubyte": _idx([0, 2**32 - 1, 2**32 - 1], b"")}, "u-ubyte"),
        "header says [0, 4294967295, 4294967295] (0 bytes), more than a file of 16 bytes holds",
    ),
    "idx: gzip header claiming a gigabyte": (
        "IDX",
        Case(_mnist(**{"train-images-idx3-ubyte.gz": gzip.compress(_idx([1000, 1000, 1000], bytes(8)))}), ""),
        "header says [1000, 1000, 1000] (1000000000 bytes), more than a file of",
    ),
    "idx: label 2^31 - 1 (memory)": (
        "IDX",
        Case(_mnist(**{"train-labels-idx1-ubyte": _idx([2], bytes(4) + (2**31 - 1).to_bytes(4, "big"), 0x0C)}), ""),
        "the largest label is 2147483647 but there are 4 samples",
    ),
    "imagefolder: PNG header claiming 20000 px a side": (
        "ImageFolder",
        Case(_folder(png_claiming((20000, 20000))), ""),
        "corrupt or unreadable image",
    ),
    "imagefolder: empty file": ("ImageFolder", Case(_folder(b""), ""), "corrupt or unreadable image"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FOUND))
def test_escapes_found_by_fuzzing_are_one_line(name: str) -> None:
    parser, case, says = FOUND[name]
    error = outcome(PARSERS[parser][1], case)
    assert error is not None and says in str(error), error
    assert len(str(error)) < 400, str(error)[:400]
