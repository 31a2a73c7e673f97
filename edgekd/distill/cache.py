"""A disk cache of teacher outputs (logits, tapped features, embedding), memory-mapped on reuse.

An entry is a folder ``cache_dir/<key>`` of ``.npy`` files and a ``meta.json`` that lists their
shapes and dtypes. It is written in a temporary sibling folder and renamed into place, so an
interrupted write never looks complete; an entry whose files disagree with its ``meta.json`` is
removed and computed again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd import faults
from edgekd._version import __version__
from edgekd.atomic import sha256
from edgekd.distill.features import FeatureTap
from edgekd.errors import BadInput, EdgekdError
from edgekd.progress import log, progress

FORMAT = 1  # the layout of an entry; part of every key
META = "meta.json"
FP16_MAX = float(np.finfo(np.float16).max)
CPU = torch.device("cpu")
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def default_cache_dir() -> Path:
    """``$EDGEKD_CACHE``, else ``$XDG_CACHE_HOME/edgekd/teachers``, else ``~/.cache/edgekd/teachers``."""
    if os.environ.get("EDGEKD_CACHE"):
        return Path(os.environ["EDGEKD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgekd" / "teachers"


def teacher_fingerprint(spec: str, weights: str | None) -> str:
    """sha256 over ``spec`` and the bytes of every file it names: model, factory code, weights."""
    target = spec.rpartition(":")[0]
    files = [spec, target, weights or ""]
    if target and not target.endswith(".py") and not Path(spec).exists():
        files.append(_module_file(target))
    h = hashlib.sha256(spec.encode())
    for f in files:
        if f and Path(f).is_file():
            h.update(f"|{sha256(f)}".encode())
    return h.hexdigest()


def _module_file(name: str) -> str:
    """The source file of an importable module (``package.module`` of a factory spec), or ""."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return ""
    return found.origin if found is not None and found.origin else ""


def cache_key(teacher_fp: str, data_fp: str, layers: list[str], embedding: bool) -> str:
    """The name of a cache entry: what ran, on what, and which outputs were kept."""
    text = json.dumps([FORMAT, teacher_fp, data_fp, list(layers), bool(embedding)])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TeacherOutputs:
    """A teacher's outputs for every sample, memory-mapped from the cache.

    ``logits`` (N, K) float32; ``features`` one (N, ...) float16 array per tapped layer;
    ``embedding`` (N, D) float16 or None.
    """

    logits: np.ndarray
    features: list[np.ndarray]
    embedding: np.ndarray | None

    def batch(
        self, idx: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """Rows ``idx`` as float32 tensors, in the order given (read in sorted order, for locality)."""
        idx = idx.cpu().long()
        order = torch.argsort(idx)
        rows = idx[order].numpy()
        inverse = torch.argsort(order)

        def take(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a[rows], dtype=np.float32))[inverse]

        embedding = None if self.embedding is None else take(self.embedding)
        return take(self.logits), [take(f) for f in self.features], embedding


def teacher_outputs(
    model: nn.Module,
    x: torch.Tensor,
    *,
    key: str,
    cache_dir: Path,
    layers: list[str] = (),
    embedding: bool = False,
    device: torch.device = CPU,
    batch_size: int = 512,
) -> TeacherOutputs:
    """The outputs of ``model`` on every row of ``x``: from ``cache_dir/key``, or computed there.

    ``key`` comes from :func:`cache_key`. Features and the embedding are captured by
    :class:`FeatureTap` (only when asked for: TorchScript and ONNX teachers cannot be hooked)
    and stored as float16 (clamped to its range); logits as float32.
    """
    if len(x) == 0:
        raise BadInput("no samples to run the teacher on")
    layers = list(layers)

    def compute(folder: Path) -> None:
        log(f"teacher cache: computing outputs for {len(x):,} samples into {Path(cache_dir) / key}")
        was_training = model.training
        model.eval()
        tap = FeatureTap(model, layers, embedding=embedding) if layers or embedding else None
        try:
            _run(model, tap, x, folder, device, batch_size)
        finally:
            model.train(was_training)
            if tap is not None:
                tap.close()

    entry = cached_outputs(
        Path(cache_dir), key, compute, info={"layers": layers, "embedding": bool(embedding)}
    )
    return _load(entry)


@torch.no_grad()
def _run(
    model: nn.Module,
    tap: FeatureTap | None,
    x: torch.Tensor,
    folder: Path,
    device: torch.device,
    batch_size: int,
) -> None:
    """Run ``model`` over ``x`` in batches, writing each batch straight into ``.npy`` memmaps."""
    n = len(x)
    files: list[np.memmap] = []
    with progress(n, "teacher outputs", unit="img") as bar:
        for start in range(0, n, batch_size):
            logits = model(x[start : start + batch_size].to(device))
            features, emb = tap.take() if tap is not None else ([], None)
            tensors = [logits.float(), *(_fp16(f) for f in features)]
            tensors += [] if emb is None else [_fp16(emb)]
            arrays = [t.cpu().numpy() for t in tensors]
            if not files:
                names = ["logits.npy"] + [f"feature_{i:03d}.npy" for i in range(len(features))]
                names += [] if emb is None else ["embedding.npy"]
                files = [
                    np.lib.format.open_memmap(
                        folder / name, mode="w+", dtype=a.dtype, shape=(n, *a.shape[1:])
                    )
                    for name, a in zip(names, arrays, strict=True)
                ]
            for mm, a in zip(files, arrays, strict=True):
                mm[start : start + len(a)] = a
            bar.update(len(logits))
            faults.point("cache", "batch")
    for mm in files:
        mm.flush()


def _fp16(t: torch.Tensor) -> torch.Tensor:
    return t.float().clamp(-FP16_MAX, FP16_MAX).half()


def _load(entry: Path) -> TeacherOutputs:
    names = json.loads((entry / META).read_text())["files"]
    features = sorted(n for n in names if n.startswith("feature_"))
    return TeacherOutputs(
        logits=np.load(entry / "logits.npy", mmap_mode="r"),
        features=[np.load(entry / n, mmap_mode="r") for n in features],
        embedding=np.load(entry / "embedding.npy", mmap_mode="r")
        if "embedding.npy" in names
        else None,
    )


# --- entries ------------------------------------------------------------------------------


def cached_outputs(
    cache_dir: Path,
    key: str,
    compute: Callable[[Path], None],
    info: dict[str, Any] | None = None,
) -> Path:
    """The complete entry ``cache_dir/key``, made by ``compute(folder)`` if missing or broken.

    ``compute`` writes ``.npy`` files (all with the same number of rows) into the empty folder
    it is given; ``meta.json`` (their shapes and dtypes, ``info``) is written here, then the
    folder is synced and renamed into place.
    """
    entry = cache_dir / key
    problem = _check(entry, key)
    if problem is None:
        log(f"teacher cache: hit {entry}")
        return entry
    if entry.exists():
        log(f"teacher cache: {entry} is unusable ({problem}); recomputing")
        shutil.rmtree(entry)
    _remove_abandoned(cache_dir, key)
    tmp = cache_dir / f".{key}.{socket.gethostname()}-{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier process with this pid
        tmp.mkdir(parents=True)
        compute(tmp)
        _write_meta(tmp, key, info or {})
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        try:
            os.replace(tmp, entry)
        except OSError:
            if _check(entry, key) is not None:  # not another process finishing the same entry
                raise
        _fsync(cache_dir)
    except OSError as e:
        raise EdgekdError(
            f"teacher cache {cache_dir}: cannot write ({e.strerror or e}); free space there or "
            "choose another cache folder"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _write_meta(folder: Path, key: str, info: dict[str, Any]) -> None:
    files = {}
    for f in sorted(folder.glob("*.npy")):
        a = np.load(f, mmap_mode="r")
        files[f.name] = {"shape": list(a.shape), "dtype": a.dtype.str}
        del a
    rows = {spec["shape"][0] for spec in files.values()}
    if len(rows) != 1:
        raise ValueError(f"cache entry {key}: arrays disagree on the number of samples: {rows}")
    meta = {"format": FORMAT, "key": key, "samples": rows.pop(), "edgekd": __version__}
    (folder / META).write_text(json.dumps({**meta, **info, "files": files}, indent=2) + "\n")


def _check(entry: Path, key: str) -> str | None:
    """Why ``entry`` cannot be used, or None when it is complete."""
    if not entry.is_dir():
        return "missing"
    try:
        meta = json.loads((entry / META).read_text())
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return "written for another key or format"
        if "logits.npy" not in meta["files"]:
            return "no logits"
        for name, spec in meta["files"].items():
            shape, dtype = _npy_header(entry / name)
            if list(shape) != spec["shape"] or dtype.str != spec["dtype"]:
                return f"{name} is {dtype} {shape}, meta.json says {spec['dtype']} {spec['shape']}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, checking that the file holds all of its data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:
            raise ValueError(f"{path.name}: unexpected .npy format version {version}")
        shape, _, dtype = _HEADER_READERS[version](f)
        offset = f.tell()
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path.name} holds {size} bytes, its header needs {expected}")
    return shape, dtype


def _remove_abandoned(cache_dir: Path, key: str) -> None:
    """Remove this host's temporary folders for ``key`` whose writing process has died."""
    host = socket.gethostname()
    for tmp in cache_dir.glob(f".{key}.{host}-*.tmp"):
        pid = tmp.name[len(f".{key}.{host}-") : -len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            log(f"teacher cache: removing {tmp}, left by an interrupted write")
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
