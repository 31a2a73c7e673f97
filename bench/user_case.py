#!/usr/bin/env python
"""A user-style run: teacher as ``model.py:Class`` + state_dict, data as an ImageFolder of PNGs.

Writes the bundled Fashion-MNIST subset out as grayscale PNGs (``train/<class>/``,
``val/<class>/``), the teacher's architecture as a standalone ``model.py`` and its weights as a
float32 state_dict, then runs ``edgekd compress`` on them with the teacher's mean/std and
prints the wall time and the report's figures.

Usage: python bench/user_case.py [--work DIR] [--target host-cpu] [extra compress options...]
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgekd.example import teacher as example_teacher


def write_imagefolder(npz: Path, root: Path) -> None:
    with np.load(npz) as z:
        names = [str(n).replace("/", "-") for n in z["class_names"]]
        for split, xs, ys in (
            ("train", z["x_train"], z["y_train"]),
            ("val", z["x_val"], z["y_val"]),
        ):
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                folder = root / split / f"{int(y)}-{names[int(y)]}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x, mode="L").save(folder / f"{i:05d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/user-case"))
    p.add_argument("--target", default="host-cpu")
    args, extra = p.parse_known_args()
    work = args.work.resolve()
    example = resources.files("edgekd.example")
    data = work / "fashion-png"
    if not data.exists():
        write_imagefolder(Path(str(example / "fashion_mnist_small.npz")), data)
    model_py = work / "model.py"
    model_py.write_text(inspect.getsource(example_teacher))  # a standalone copy, as a user has
    weights = work / "weights.pt"
    state = torch.load(str(example / "teacher.pt"), weights_only=True)
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, weights)
    out = work / "run"
    cmd = [
        sys.executable, "-m", "edgekd", "compress",
        "--teacher", f"{model_py}:FashionCNN", "--weights", str(weights),
        "--data", str(data), "--mean", "0.2860", "--std", "0.3530",
        "--target", args.target, "--out", str(out), "--json", *extra,
    ]  # fmt: skip
    print("$", " ".join(cmd), file=sys.stderr)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout) if proc.stdout.strip() else {}
    print(
        json.dumps(
            {"exit_code": proc.returncode, "wall_seconds": round(wall, 1), **summary}, indent=2
        )
    )


if __name__ == "__main__":
    main()
