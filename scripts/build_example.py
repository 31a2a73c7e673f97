#!/usr/bin/env python
"""Rebuild the bundled example of ``edgekd compress`` from the official Fashion-MNIST files.

Writes, reproducibly (fixed seeds, CPU):

- ``<out>/fashion_mnist_small.npz``: class-balanced random subsets of the official train split
  (``x_train``/``y_train``) and test split (``x_val``/``y_val``), ``class_names``, and the
  subsets' indices into the official splits (``train_index``/``val_index``);
- ``<out>/teacher.pt``: float16 state_dict of ``edgekd.example.teacher.FashionCNN`` trained on
  the full 60k train split;
- ``<out>/README.md``: what the files are, how they were built, the teacher's accuracy;
- ``<calib-dir>/fashion-mnist-example.toml``: the calibration-set manifest (512 indices into
  ``x_train``).

Usage: ``python scripts/build_example.py [--epochs 6] [--seed 0]`` (10-18 min on 2 CPU cores).
The defaults rebuild the committed files byte for byte on the same torch version and CPU.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd.atomic import sha256  # noqa: E402
from edgekd.data import read_idx  # noqa: E402
from edgekd.example.teacher import fashion_cnn  # noqa: E402

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MEAN, STD = 0.2860, 0.3530
NPZ_NAME = "fashion_mnist_small.npz"
TEACHER_NAME = "teacher.pt"
CALIB_NAME = "fashion-mnist-example.toml"
MAX_BYTES = 10_000_000  # npz + teacher.pt


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--out", type=Path, default=REPO / "edgekd" / "example")
    p.add_argument("--calib-dir", type=Path, default=REPO / "calib")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=12_000, help="size of the bundled train subset")
    p.add_argument("--n-val", type=int, default=2_000, help="size of the bundled val subset")
    p.add_argument("--n-calib", type=int, default=512, help="calibration samples from x_train")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--flush-denormal",
        action="store_true",
        help="flush denormals to zero: up to ~2x faster on CPU, but not bit-identical",
    )
    return p.parse_args()


def load_split(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Official split ``train`` or ``t10k`` as (uint8 N,28,28 images, int64 labels)."""
    x = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    assert x.shape[1:] == (28, 28) and len(x) == len(y), (x.shape, y.shape)
    return x, y


def balanced_choice(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct indices into ``y``, n // C per class, the remainder from random classes."""
    classes = np.unique(y)
    per_class, extra = divmod(n, len(classes))
    bonus = set(rng.choice(classes, size=extra, replace=False).tolist())
    picked = [
        rng.choice(np.flatnonzero(y == c), size=per_class + (c in bonus), replace=False)
        for c in classes
    ]
    return np.concatenate(picked)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed``, but byte-reproducible (fixed zip timestamps), so the
    sha256 in the calibration manifest is the same on every rebuild."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def to_input(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N,28,28) -> normalised float (N,1,28,28), channels_last."""
    x = (x_uint8.float().div_(255.0) - MEAN) / STD
    return x.unsqueeze(1).contiguous(memory_format=torch.channels_last)


def augment(x_uint8: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a uint8 (N,28,28) batch."""
    n, h, w = x_uint8.shape
    padded = F.pad(x_uint8, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None], out.flip(-1), out)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, bs: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        logits = model(to_input(torch.from_numpy(x[i : i + bs].copy())))
        correct += int((logits.argmax(1) == torch.from_numpy(y[i : i + bs])).sum())
    return correct / len(x)


def train_teacher(
    args: argparse.Namespace, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[torch.nn.Module, float]:
    """SGD (Nesterov) with a short warm-up and per-step cosine decay; returns (model, seconds)."""
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = fashion_cnn().to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay}],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = min(steps_per_epoch // 2, total // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        loss_sum, seen = 0.0, 0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i : i + args.batch_size]
            inp = to_input(augment(xt[idx], gen))
            loss = F.cross_entropy(model(inp), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        acc = accuracy(model, x_test, y_test)
        print(
            f"epoch {epoch:2d}/{args.epochs}  loss {loss_sum / seen:.4f}  "
            f"test acc {acc:.4f}  elapsed {time.perf_counter() - t0:6.1f}s",
            flush=True,
        )
    return model, time.perf_counter() - t0


def write_calib_toml(
    path: Path, npz_path: Path, seed: int, indices: np.ndarray, y_train: np.ndarray
) -> None:
    counts = np.bincount(y_train[indices], minlength=len(CLASS_NAMES))
    rows = [
        "    " + ", ".join(str(int(i)) for i in indices[j : j + 16]) + ","
        for j in range(0, len(indices), 16)
    ]
    text = "\n".join(
        [
            "# Calibration set of the bundled example (written by scripts/build_example.py).",
            f"# Class-balanced fixed random choice; per-class counts: {counts.tolist()}",
            'name = "fashion-mnist-example"',
            f'file = "{npz_path.name}"',
            'package = "edgekd.example"',
            f'sha256 = "{sha256(npz_path)}"',
            'split = "train"',
            'array = "x_train"',
            f"seed = {seed}",
            f"num_samples = {len(indices)}",
            "indices = [",
            *rows,
            "]",
            "",
        ]
    )
    path.write_text(text)


def write_readme(path: Path, info: dict) -> None:
    text = f"""# Bundled example

What `edgekd compress` runs when given no `--teacher` and no `--data`. Built from the official
Fashion-MNIST files (MIT licence; Debian package `dataset-fashion-mnist`) by
`scripts/build_example.py`; do not edit these files by hand, rerun the script.

- `{NPZ_NAME}`: `x_train` uint8 ({info["n_train"]}, 28, 28) and `y_train` int64, a
  class-balanced random subset of the official **train** split; `x_val`, `y_val`
  ({info["n_val"]}), a class-balanced random subset of the official **test** split;
  `class_names`; `train_index`/`val_index`, the subsets' indices into the official splits.
- `{TEACHER_NAME}`: float16 `state_dict` of `edgekd.example.teacher:fashion_cnn`; load it with
  `torch.load(path, weights_only=True)`, then `load_state_dict` into the float32 model.
- `teacher.py`: the teacher architecture (VGG-style CNN, Conv-BN-ReLU,
  {info["params"]:,} parameters).
- `../../calib/{CALIB_NAME}`: the calibration set, {info["n_calib"]} class-balanced
  indices into `x_train`.

Teacher: trained on the full official 60k train split, {info["epochs"]} epoch(s), SGD Nesterov
(momentum 0.9, peak lr {info["lr"]}, batch {info["batch_size"]}, weight decay
{info["weight_decay"]}), per-step cosine decay, random crop (pad 2) + horizontal flip;
{info["train_s"] / 60:.1f} min on {info["threads"]} CPU threads (torch {torch.__version__}).

- Input: (N, 1, 28, 28) float, `x = (uint8 / 255 - {MEAN:.4f}) / {STD:.4f}` (normalisation
  mean {MEAN:.4f}, std {STD:.4f}).
- Test accuracy (float16 weights loaded into float32): **{info["acc_test"]:.2%}** on the full
  official 10k test set, **{info["acc_val"]:.2%}** on the {info["n_val"]}-image `x_val` subset.
- Seeds: `--seed {info["seed"]}` drives the subsets, the calibration choice, initialisation,
  shuffling and augmentation (results can differ slightly across torch versions and CPUs).

Rebuilt with:

```
{info["command"]}
```
"""
    path.write_text(text)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    args.out.mkdir(parents=True, exist_ok=True)
    args.calib_dir.mkdir(parents=True, exist_ok=True)
    x_train_full, y_train_full = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    print(f"official splits: train {x_train_full.shape}, test {x_test.shape}", flush=True)

    # a. the bundled subsets (class-balanced, shuffled, fixed seed)
    rng = np.random.default_rng(args.seed)
    train_index = rng.permutation(balanced_choice(y_train_full, args.n_train, rng))
    val_index = rng.permutation(balanced_choice(y_test, args.n_val, rng))
    npz_path = args.out / NPZ_NAME
    save_npz(
        npz_path,
        x_train=x_train_full[train_index],
        y_train=y_train_full[train_index],
        x_val=x_test[val_index],
        y_val=y_test[val_index],
        class_names=np.array(CLASS_NAMES),
        train_index=train_index.astype(np.int32),
        val_index=val_index.astype(np.int32),
    )

    # e. the calibration manifest (class-balanced choice among the bundled x_train)
    y_small = y_train_full[train_index]
    calib_index = np.sort(balanced_choice(y_small, args.n_calib, rng))
    write_calib_toml(args.calib_dir / CALIB_NAME, npz_path, args.seed, calib_index, y_small)

    # b. train the teacher on the full official train split
    model, train_s = train_teacher(args, x_train_full, y_train_full, x_test, y_test)

    # c. float16 state_dict (tensors only), then check it round-trips into a float32 model
    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    teacher_path = args.out / TEACHER_NAME
    torch.save(state, teacher_path)
    reloaded = fashion_cnn().to(memory_format=torch.channels_last)
    reloaded.load_state_dict(torch.load(teacher_path, weights_only=True))
    with np.load(npz_path) as npz:
        acc_val = accuracy(reloaded, npz["x_val"], npz["y_val"])
    acc_test = accuracy(reloaded, x_test, y_test)
    params = sum(p.numel() for p in reloaded.parameters())

    # d. README
    flags = []  # every option that can change the files' contents (all but the paths)
    for key, value in vars(args).items():
        if key in ("data_dir", "out", "calib_dir") or value is False:
            continue
        flags += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    command = shlex.join(["python", "scripts/build_example.py", *flags])
    write_readme(
        args.out / "README.md",
        dict(
            n_train=args.n_train,
            n_val=args.n_val,
            n_calib=args.n_calib,
            params=params,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            threads=args.threads,
            train_s=train_s,
            acc_test=acc_test,
            acc_val=acc_val,
            seed=args.seed,
            command=command,
        ),
    )

    sizes = {p.name: p.stat().st_size for p in (npz_path, teacher_path)}
    for name, size in sizes.items():
        print(f"{name}: {size / 1e6:.2f} MB", flush=True)
    print(
        f"teacher: {params:,} params, test acc {acc_test:.4f} (10k), val acc {acc_val:.4f} "
        f"({args.n_val}), trained in {train_s / 60:.1f} min",
        flush=True,
    )
    total = sum(sizes.values())
    assert total <= MAX_BYTES, f"npz + teacher.pt = {total / 1e6:.2f} MB > {MAX_BYTES / 1e6} MB"


if __name__ == "__main__":
    main()
