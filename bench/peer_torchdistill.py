#!/usr/bin/env python
"""The peer tool on edgekd's kd task: torchdistill trains edgekd's ConvNet from the bundled teacher.

Runs inside the peer venv made by bench/setup_peer.sh (torchdistill 1.1.x), on full Fashion-MNIST
(IDX files, train = 60k, test = t10k), normalised with the example's mean/std, no augmentation.
torchdistill does the training: its DistillationBox built from a config dict, its WeightedSumLoss
over its KDLoss (T=4, CE weight 0.1, KL weight 0.9 times T^2), AdamW (lr 3e-3, wd 5e-4), batch 128,
and a per-step LambdaLR with edgekd's schedule (linear warm-up for half an epoch, cosine to 0).
The teacher runs on every batch (torchdistill keeps no cache of its outputs).

Prints one JSON line: tool, version, test_accuracy, train_seconds, samples_per_s, epochs, width,
depth, seed.

Usage: .peer-venv/bin/python bench/peer_torchdistill.py --epochs E --width W --depth D
           [--seed 0] [--threads 2] [--limit N] [--data /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchdistill
from torch import nn
from torch.utils.data import RandomSampler, TensorDataset
from torchdistill.common.main_util import set_seed
from torchdistill.core.distillation import DistillationBox

from edgekd.example.teacher import fashion_cnn
from edgekd.models.students import ConvNet

MEAN, STD = 0.2860, 0.3530  # edgekd.config.EXAMPLE_MEAN / EXAMPLE_STD
BATCH, LR, WEIGHT_DECAY, WARMUP_EPOCHS = 128, 3e-3, 5e-4, 0.5
TEMPERATURE, CE_WEIGHT = 4.0, 0.1
CPU = torch.device("cpu")


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, 1, 28, 28) float32 images and int64 labels of ``split`` (train or t10k)."""

    def idx(stem: str) -> np.ndarray:
        raw = gzip.decompress((root / f"{split}-{stem}-ubyte.gz").read_bytes())
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)

    x = torch.from_numpy(idx("images-idx3").astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(idx("labels-idx1").astype(np.int64))
    return (x - MEAN) / STD, y


def load_teacher() -> nn.Module:
    """The bundled FashionCNN with its fp16 weights cast to float32, frozen in eval mode."""
    with resources.as_file(resources.files("edgekd.example") / "teacher.pt") as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = fashion_cnn()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def warmup_cosine(total: int, warmup: int):
    """edgekd's per-step lr multiplier: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train_config(epochs: int, n_train: int, seed: int) -> dict:
    """torchdistill's training config for one kd stage (the dict its YAML files would hold)."""
    steps_per_epoch = math.ceil(n_train / BATCH)
    total, warmup = epochs * steps_per_epoch, int(WARMUP_EPOCHS * steps_per_epoch)
    kd = {
        "student_module_path": ".",
        "student_module_io": "output",
        "teacher_module_path": ".",
        "teacher_module_io": "output",
        "temperature": TEMPERATURE,
        "alpha": CE_WEIGHT,  # torchdistill's alpha weighs the CE term
        "beta": 1.0 - CE_WEIGHT,  # and beta the KL term, which it multiplies by T^2
        "reduction": "batchmean",
    }
    return {
        "num_epochs": epochs,
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {
                "class_or_func": RandomSampler,
                "kwargs": {"generator": torch.Generator().manual_seed(seed)},
            },
            "kwargs": {"batch_size": BATCH, "num_workers": 0, "drop_last": False},
        },
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {"key": "AdamW", "kwargs": {"lr": LR, "weight_decay": WEIGHT_DECAY}},
        "scheduler": {
            "key": "LambdaLR",
            "kwargs": {"lr_lambda": warmup_cosine(total, warmup)},
            "scheduling_step": 1,
        },
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {
                "sub_terms": {"kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}
            },
        },
    }


@torch.no_grad()
def test_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return (pred == y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--width", type=float, required=True)
    p.add_argument("--depth", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="train on the first N samples (smoke)")
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = p.parse_args()
    if args.epochs < 1 or (args.limit is not None and args.limit < 1):
        p.error("--epochs and --limit must be at least 1")
    torch.set_num_threads(args.threads)

    x_train, y_train = read_split(args.data, "train")
    x_test, y_test = read_split(args.data, "t10k")
    x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    set_seed(args.seed)
    student = ConvNet(1, 10, width=args.width, depth=args.depth)
    box = DistillationBox(
        load_teacher(),
        student,
        {"train": TensorDataset(x_train, y_train)},
        train_config(args.epochs, len(x_train), args.seed),
        CPU,
        None,
        False,
        1,
    )

    # torchdistill's own training loop (examples/torchvision/image_classification.py), sans logging
    t0 = time.perf_counter()
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
        box.post_epoch_process()
        print(f"epoch {epoch + 1}/{box.num_epochs}: last loss {loss.item():.4f}", file=sys.stderr)
    seconds = time.perf_counter() - t0

    result = {
        "tool": "torchdistill",
        "version": torchdistill.__version__,
        "test_accuracy": test_accuracy(student, x_test, y_test),
        "train_seconds": seconds,
        "samples_per_s": args.epochs * len(x_train) / seconds,
        "epochs": args.epochs,
        "width": args.width,
        "depth": args.depth,
        "seed": args.seed,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
