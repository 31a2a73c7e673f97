#!/usr/bin/env python
"""What a teacher's soft targets hold on the training images: its accuracy there and on the test
set, and how peaked its probabilities are at temperature 1 and at T (mean top-1 probability,
mean entropy in nats, over the training images).

A teacher that fits its training images exactly gives near one-hot targets on them, which tell a
student little more than the labels do, however accurate it is on the test set.

Usage: python bench/teacher_targets.py TEACHER [WEIGHTS] [--temperature 4] [--data DIR]
       (TEACHER as edgekd takes it: module:factory, file.py:factory, .pt, .pt2, .onnx)
"""

from __future__ import annotations

import argparse
import json

import torch

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD
from edgekd.data import load_dataset
from edgekd.distill.trainer import accuracy, predict
from edgekd.models.teacher import load_model

CPU = torch.device("cpu")


def peakedness(logits: torch.Tensor, temperature: float) -> dict[str, float]:
    p = torch.softmax(logits / temperature, dim=1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return {"mean_top1_prob": p.max(1).values.mean().item(), "mean_entropy": entropy.mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher")
    p.add_argument("weights", nargs="?")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, mean=EXAMPLE_MEAN, std=EXAMPLE_STD)
    model = load_model(args.teacher, args.weights)
    train = predict(model, data.train.x, CPU)
    result = {
        "teacher": args.teacher,
        "weights": args.weights,
        "train_accuracy": accuracy(train, data.train.y),
        "test_accuracy": accuracy(predict(model, data.val.x, CPU), data.val.y),
        "train_T1": peakedness(train, 1.0),
        f"train_T{args.temperature:g}": peakedness(train, args.temperature),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
