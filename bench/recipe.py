#!/usr/bin/env python
"""Does the training recipe make torchvision's mobile students learn in a short schedule?

The students: torchvision ``mobilenet_v3_small`` and ``mobilenet_v2(width_mult=0.5)``, 10
classes, randomly initialised, as a user would give them with ``--student`` (BatchNorm momentum
0.01 as torchvision builds them). The data: RGB 32x32 images made from the bundled Fashion-MNIST
subset (each 28x28 image padded by 2 and repeated over 3 channels), the first N training and M
validation images. Labels only (cross-entropy): the recipe is about the student, not the teacher.

Recipes, each with edgekd's defaults otherwise (AdamW, lr 3e-3, weight decay 5e-4, half an epoch
of warm-up, cosine decay, batch 128):
  before      the student's own BatchNorm momentum, weight decay on every parameter, the
              running BatchNorm averages as they are (edgekd before the recipe)
  bn          BatchNorm momentum 0.1 while training
  bn+wd       and no weight decay on BatchNorm and biases
  after       and BatchNorm statistics recomputed over 1024 training samples after each epoch
              (TrainConfig's defaults)
  after+ls    as after, with label smoothing 0.1 on the cross-entropy

Usage: OMP_NUM_THREADS=1 python bench/recipe.py [--train 3000] [--val 1000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import Split
from edgekd.distill.losses import Outputs, make_objective
from edgekd.distill.trainer import TrainConfig, fit

RECIPES = {
    "before": {"bn_momentum": None, "decay_norm_and_bias": True, "bn_recalibration": 0},
    "bn": {"decay_norm_and_bias": True, "bn_recalibration": 0},
    "bn+wd": {"bn_recalibration": 0},
    "after": {},
    "after+ls": {},
}


class SmoothedCE(nn.Module):
    """Cross-entropy with label smoothing, in the objective's calling convention."""

    def __init__(self, smoothing: float):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, s: Outputs, t: Outputs, labels: torch.Tensor):
        loss = F.cross_entropy(s.logits, labels, label_smoothing=self.smoothing)
        return loss, {"ce": loss.item()}


def rgb32(x: np.ndarray) -> torch.Tensor:
    """28x28 uint8 images -> normalised 3x32x32 float tensors."""
    t = torch.from_numpy(x).float().div(255).unsqueeze(1)
    t = F.pad(t, (2, 2, 2, 2))
    t = (t - 0.2860) / 0.3530
    return t.repeat(1, 3, 1, 1).contiguous()


def students() -> dict[str, nn.Module]:
    from torchvision.models import mobilenet_v2, mobilenet_v3_small

    return {
        "mobilenet_v3_small": lambda: mobilenet_v3_small(weights=None, num_classes=10),
        "mobilenet_v2(width_mult=0.5)": lambda: mobilenet_v2(
            weights=None, num_classes=10, width_mult=0.5
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    data = np.load(resources.files("edgekd.example") / "fashion_mnist_small.npz")
    train = Split(
        rgb32(data["x_train"][: args.train]), torch.from_numpy(data["y_train"][: args.train])
    )
    val = Split(rgb32(data["x_val"][: args.val]), torch.from_numpy(data["y_val"][: args.val]))
    dummy = torch.zeros(len(train), 10)  # labels-only objective: the teacher logits are unused
    rows = []
    for name, make in students().items():
        for recipe in args.recipes.split(","):
            torch.manual_seed(0)
            model = make()
            cfg = TrainConfig(epochs=args.epochs, lr=3e-3, **RECIPES[recipe])
            objective = SmoothedCE(0.1) if recipe == "after+ls" else make_objective("ce")
            t0 = time.perf_counter()
            history = fit(model, train, dummy, objective, cfg, device=torch.device("cpu"), val=val)
            rows.append({
                "student": name, "recipe": recipe,
                "val_accuracy": [round(h["val_accuracy"], 4) for h in history],
                "seconds": round(time.perf_counter() - t0, 1),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    print(f"{args.train} train / {args.val} val images, {args.epochs} epochs, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip


if __name__ == "__main__":
    main()
