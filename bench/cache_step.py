#!/usr/bin/env python
"""Time per training step: kd with the teacher cache vs cross-entropy only, same student, one run.

Epochs of the four alternate (CE, cached kd, live kd, plain live kd, CE, ...) so that machine
noise hits them alike; the figure is the ratio of median step times. "live kd" runs the teacher
every step as edgekd does for augmented inputs (``LiveTeacher``: inference mode, channels-last);
"plain live kd" runs it under ``no_grad`` in the default memory format, the reference for what
those two buy. Student: bench/students.py:convnet_half; teacher: the bundled FashionCNN;
data: the first N images of full Fashion-MNIST's training set.

Usage: python bench/cache_step.py [--samples 12800] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch

from edgekd.config import EXAMPLE_MEAN, EXAMPLE_STD, EXAMPLE_TEACHER
from edgekd.data import Split, load_dataset
from edgekd.distill.cache import cache_key, teacher_outputs
from edgekd.distill.losses import Outputs, make_objective
from edgekd.distill.teachers import CachedTeacher, LiveTeacher
from edgekd.distill.trainer import TrainConfig, fit
from edgekd.models.teacher import load_model

sys.path.insert(0, str(Path(__file__).parent))
from students import convnet_half  # noqa: E402

CPU = torch.device("cpu")


class PlainLiveTeacher:
    """The teacher run every step the straightforward way: ``no_grad``, contiguous tensors."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Outputs:
        with torch.no_grad():
            return Outputs(self.model(x), [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=12800)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, mean=EXAMPLE_MEAN, std=EXAMPLE_STD)
    train = Split(data.train.x[: args.samples], data.train.y[: args.samples])
    teacher = load_model(EXAMPLE_TEACHER, str(resources.files("edgekd.example") / "teacher.pt"))
    with tempfile.TemporaryDirectory() as cache:
        key = cache_key("bench-teacher", f"first-{args.samples}", [], False)
        outputs = teacher_outputs(teacher, train.x, key=key, cache_dir=Path(cache))
        logits = torch.tensor(outputs.logits)  # a copy: memmaps are read-only
        cached = CachedTeacher(logits, outputs)
        live = LiveTeacher([teacher], None, 4.0, CPU)
        plain_teacher = load_model(
            EXAMPLE_TEACHER, str(resources.files("edgekd.example") / "teacher.pt")
        )  # its own copy: LiveTeacher moved the first one to channels-last
        zeros = torch.zeros(len(train), 10)
        runs = {
            "ce": (zeros, make_objective("ce")),
            "kd_cached": (cached, make_objective("kd")),
            "kd_live": (live, make_objective("kd")),
            "kd_live_plain": (PlainLiveTeacher(plain_teacher), make_objective("kd")),
        }
        steps = -(-len(train) // args.batch_size)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for name, (source, objective) in runs.items():
                torch.manual_seed(0)
                history = fit(convnet_half(), train, source, objective,
                              TrainConfig(epochs=1, lr=3e-3, batch_size=args.batch_size, seed=r),
                              device=CPU, label=name)  # fmt: skip
                times[name].append(1000 * history[0]["seconds"] / steps)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "where": f"measured: PyTorch {torch.__version__} CPU, {args.threads} threads, "
        f"batch {args.batch_size}, median of {args.rounds} interleaved epochs of {steps} steps",
        "ms_per_step": median,
        "kd_cached_vs_ce": median["kd_cached"] / median["ce"],
        "kd_live_vs_ce": median["kd_live"] / median["ce"],
        "kd_live_plain_vs_ce": median["kd_live_plain"] / median["ce"],
        "kd_live_vs_plain": median["kd_live"] / median["kd_live_plain"],
        "all_ms_per_step": times,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
