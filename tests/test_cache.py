"""Tests for the disk teacher cache: hits, keys, interrupted writes, row access, fp16 features."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill.cache import (
    cache_key,
    default_cache_dir,
    teacher_fingerprint,
    teacher_outputs,
)
from edgekd.errors import EdgekdError

N, BATCH = 50, 16
BATCHES = -(-N // BATCH)


class Counting(nn.Module):
    """A small classifier that counts its forward calls and can fail on a chosen call."""

    def __init__(self, fail_on: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 3)
        self.calls = 0
        self.fail_on = fail_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("interrupted")
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(N, 1, 4, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def key() -> str:
    return cache_key("teacher", "data", [], False)


def outputs(model: nn.Module, x: torch.Tensor, key: str, cache_dir: Path, **kw):
    return teacher_outputs(model, x, key=key, cache_dir=cache_dir, batch_size=BATCH, **kw)


def test_miss_then_hit_memory_maps_and_skips_the_model(
    x: torch.Tensor, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    model = Counting().train()
    first = outputs(model, x, key, tmp_path)
    assert model.calls == BATCHES
    assert model.training  # restored after the eval-mode pass
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    assert isinstance(first.logits, np.memmap) and first.logits.dtype == np.float32
    np.testing.assert_allclose(first.logits, expected, rtol=1e-5, atol=1e-6)
    assert first.features == [] and first.embedding is None

    monkeypatch.delenv("EDGEKD_QUIET", raising=False)
    model.calls = 0
    second = outputs(model, x, key, tmp_path)
    assert model.calls == 0
    assert f"teacher cache: hit {tmp_path / key}" in capsys.readouterr().err
    assert isinstance(second.logits, np.memmap)
    np.testing.assert_array_equal(second.logits, first.logits)
    meta = json.loads((tmp_path / key / "meta.json").read_text())
    assert meta["samples"] == N and meta["key"] == key
    assert meta["files"]["logits.npy"] == {"shape": [N, 3], "dtype": "<f4"}
    assert [p.name for p in tmp_path.iterdir()] == [key]  # no temporary folder left


def test_key_changes_with_teacher_data_and_taps() -> None:
    base = cache_key("t", "d", ["conv"], False)
    others = [
        cache_key("t2", "d", ["conv"], False),
        cache_key("t", "d2", ["conv"], False),
        cache_key("t", "d", ["head"], False),
        cache_key("t", "d", [], False),
        cache_key("t", "d", ["conv"], True),
    ]
    assert base == cache_key("t", "d", ["conv"], False)
    assert len({base, *others}) == 1 + len(others)


def test_teacher_fingerprint_follows_file_bytes(tmp_path: Path) -> None:
    code, weights = tmp_path / "net.py", tmp_path / "w.pt"
    code.write_text("A = 1\n")
    weights.write_bytes(b"\x00" * 8)
    spec = f"{code}:Net"
    fp = teacher_fingerprint(spec, str(weights))
    assert fp == teacher_fingerprint(spec, str(weights))
    weights.write_bytes(b"\x01" * 8)
    fp_weights = teacher_fingerprint(spec, str(weights))
    code.write_text("A = 2\n")
    fp_code = teacher_fingerprint(spec, str(weights))
    assert len({fp, fp_weights, fp_code}) == 3
    assert teacher_fingerprint(f"{code}:Other", str(weights)) != fp_code

    model = tmp_path / "t.onnx"
    model.write_bytes(b"one")
    before = teacher_fingerprint(str(model), None)
    model.write_bytes(b"two")
    assert teacher_fingerprint(str(model), None) != before

    # an importable module's source is hashed too
    assert teacher_fingerprint("edgekd.errors:BadInput", None) != teacher_fingerprint(
        "edgekd.atomic:BadInput", None
    )


def test_failed_compute_leaves_nothing_and_is_recomputed(
    x: torch.Tensor, key: str, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="interrupted"):
        outputs(Counting(fail_on=3), x, key, tmp_path)
    assert list(tmp_path.iterdir()) == []
    model = Counting()
    out = outputs(model, x, key, tmp_path)
    assert model.calls == BATCHES and out.logits.shape == (N, 3)


def test_abandoned_temporary_folder_is_removed(x: torch.Tensor, key: str, tmp_path: Path) -> None:
    dead = tmp_path / f".{key}.{socket.gethostname()}-999999999.tmp"  # above any pid_max
    dead.mkdir()
    (dead / "logits.npy").write_bytes(b"partial")
    model = Counting()
    outputs(model, x, key, tmp_path)
    assert model.calls == BATCHES
    assert [p.name for p in tmp_path.iterdir()] == [key]


def _truncate(entry: Path) -> None:
    f = entry / "logits.npy"
    f.write_bytes(f.read_bytes()[:-12])


def _wrong_shape(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"]["logits.npy"]["shape"] = [N, 4]
    (entry / "meta.json").write_text(json.dumps(meta))


def _half_meta(entry: Path) -> None:
    text = (entry / "meta.json").read_text()
    (entry / "meta.json").write_text(text[: len(text) // 2])


def _no_meta(entry: Path) -> None:
    (entry / "meta.json").unlink()


@pytest.mark.parametrize("damage", [_truncate, _wrong_shape, _half_meta, _no_meta])
def test_damaged_entry_is_not_used_and_is_recomputed(
    damage, x: torch.Tensor, key: str, tmp_path: Path
) -> None:
    good = np.array(outputs(Counting(), x, key, tmp_path).logits)
    damage(tmp_path / key)
    model = Counting()
    out = outputs(model, x, key, tmp_path)
    assert model.calls == BATCHES
    np.testing.assert_array_equal(out.logits, good)
    assert json.loads((tmp_path / key / "meta.json").read_text())["files"]["logits.npy"] == {
        "shape": [N, 3],
        "dtype": "<f4",
    }


def test_batch_returns_the_requested_rows_in_order(
    x: torch.Tensor, key: str, tmp_path: Path
) -> None:
    out = outputs(Counting(), x, key, tmp_path)
    idx = torch.tensor([41, 3, 17, 3, 0, 49])
    logits, features, embedding = out.batch(idx)
    assert logits.dtype == torch.float32 and logits.shape == (6, 3)
    assert torch.equal(logits, torch.from_numpy(np.array(out.logits))[idx])
    assert features == [] and embedding is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace
def test_unhookable_teacher_without_taps(x: torch.Tensor, key: str, tmp_path: Path) -> None:
    model = Counting().eval()
    scripted = torch.jit.trace(model, x[:2])
    out = outputs(scripted, x, key, tmp_path)
    with torch.no_grad():
        np.testing.assert_allclose(out.logits, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_unwritable_cache_dir_is_one_clear_error(x: torch.Tensor, key: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EdgekdError, match="teacher cache .*cannot write") as e:
        outputs(Counting(), x, key, blocker / "cache")
    assert "\n" not in str(e.value)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EDGEKD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgekd" / "teachers"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "edgekd" / "teachers"


def test_features_and_embedding_are_stored_as_fp16(
    x: torch.Tensor, tmp_path: Path, one_torch_thread
) -> None:
    model = Counting()
    key = cache_key("teacher", "data", ["conv"], True)
    out = outputs(model, x, key, tmp_path, layers=["conv"], embedding=True)
    with torch.no_grad():
        conv = model.conv(x)
        embedding = torch.relu(conv).flatten(1)  # the head's input
    (feature,) = out.features
    assert isinstance(feature, np.memmap) and feature.dtype == np.float16
    assert feature.shape == (N, 4, 4, 4)
    np.testing.assert_allclose(feature, conv.numpy(), rtol=1e-3, atol=1e-3)
    assert isinstance(out.embedding, np.memmap) and out.embedding.dtype == np.float16
    np.testing.assert_allclose(out.embedding, embedding.numpy(), rtol=1e-3, atol=1e-3)

    model.calls = 0
    hit = outputs(model, x, key, tmp_path, layers=["conv"], embedding=True)
    assert model.calls == 0
    idx = torch.tensor([5, 1, 30])
    logits, (f,), emb = hit.batch(idx)
    assert f.dtype == emb.dtype == logits.dtype == torch.float32
    torch.testing.assert_close(f, conv[idx], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(emb, embedding[idx], rtol=1e-3, atol=1e-3)
    assert os.path.getsize(hit.features[0].filename) < N * 4 * 4 * 4 * 4  # half of float32
