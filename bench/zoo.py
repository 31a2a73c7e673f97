#!/usr/bin/env python
"""The model corpus through every stage and scheme on RGB images: the zoo table in
docs/benchmarks.md.

Data: no registry package here ships a real RGB image dataset (Debian's only image dataset is
Fashion-MNIST; PyPI's CIFAR/STL "datasets" are loaders that download at run time), so the RGB set
is made from Fashion-MNIST (Debian's ``dataset-fashion-mnist``): each garment, upscaled to
``--size`` pixels, is painted in a random colour over a random crop of scikit-learn's two bundled
photographs (``load_sample_images``), so that colour and background carry no label.

Teacher: torchvision ResNet-18 (``pretrained=False``) trained here on labels. Students: every
corpus architecture (``tests/corpus.py``) given with ``--student``, distilled once (kd), then per
scheme (onnxruntime: host-cpu, tensorrt: jetson-orin-nano-8gb, qnn: android-snapdragon-8gen3) a
PTQ row and a QAT row with the same schedule, each exported and validated by edgekd (the
per-layer sensitivity pass and the mixed-precision plan are off: their time would double the
run). Columns:
whether trace/export/lint passed, the TensorRT Q/DQ lint count, the fraction of MACs ONNX Runtime
runs in integer kernels after its own graph optimizations, fp32 / PTQ / QAT accuracy on the
validation split, and INT8 / fp32 p90 on ONNX Runtime CPU measured side by side in edgekd's
interleaved rounds (this host: for the tensorrt and qnn rows it is the scheme's arithmetic on a
CPU, not the device). A row that fails records its one-line error and the table goes on.

Usage: python bench/zoo.py [--size 96] [--train 3000] [--val 1000] [--teacher-epochs 6]
                           [--epochs 3] [--qat-epochs 1] [--students a,b] [--schemes a,b]
                           [--threads 2] [--out bench-out/zoo]
Rows already built are reused: delete a row's folder under --out to rebuild it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import corpus  # noqa: E402 - the model corpus lives beside the tests

from edgekd.config import CompressConfig  # noqa: E402
from edgekd.data import read_idx  # noqa: E402
from edgekd.errors import first_line  # noqa: E402
from edgekd.pipeline import open_run, run_in, run_stage  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
SCHEMES = {
    "onnxruntime": "host-cpu",
    "tensorrt": "jetson-orin-nano-8gb",
    "qnn": "android-snapdragon-8gen3",
}
# ONNX Runtime CPU, batch 1: shorter than the targets' own methods (which are meant for devices),
# still >= 256 timed queries per model and round
LATENCY = "[latency]\nwarmup = 20\nmin_queries = 256\nmin_duration_s = 0.5\nthreads = 0\n"
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(next(FASHION.glob(f"{prefix}-images-idx3-ubyte*")))
    y = read_idx(next(FASHION.glob(f"{prefix}-labels-idx1-ubyte*")))
    return x, y.astype(np.int64)


def rgb_fashion(n: int, split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Fashion-MNIST images of ``split`` as ``size``x``size`` RGB composites (uint8 NHWC)."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p, dtype=np.float32) / 255 for p in load_sample_images().images]
    x, y = _fashion(split)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), n, replace=False)
    items = torch.from_numpy(x[idx]).float()[:, None] / 255
    alpha = F.interpolate(items, size=(size, size), mode="bilinear", align_corners=False)
    alpha = alpha[:, 0].numpy()[..., None]  # N, H, W, 1
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        scale = rng.uniform(1.0, 3.0)  # crop side = size * scale, then resized to size
        side = int(min(size * scale, *photo.shape[:2]))
        top = rng.integers(photo.shape[0] - side + 1)
        left = rng.integers(photo.shape[1] - side + 1)
        crop = torch.from_numpy(photo[top : top + side, left : left + side]).permute(2, 0, 1)
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)
        background = crop[0].permute(1, 2, 0).numpy()
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        image = alpha[i] * colour + (1 - alpha[i]) * background  # grey levels as opacity
        out[i] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return out, y[idx]


def make_data(path: Path, size: int, n_train: int, n_val: int) -> None:
    if path.exists():
        return
    x_train, y_train = rgb_fashion(n_train, "train", size, seed=0)
    x_val, y_val = rgb_fashion(n_val, "test", size, seed=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


def _tensors(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as z:
        x = torch.from_numpy(z[f"x_{split}"]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(z[f"y_{split}"])
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (x - mean) / std, y


def train_teacher(data: Path, out: Path, epochs: int) -> dict:
    """ResNet-18 on labels (AdamW, warm-up + cosine, label smoothing 0.1, flips); its state_dict."""
    weights = out / "teacher.pt"
    record = out / "teacher.json"
    if weights.exists():
        return json.loads(record.read_text())
    torch.manual_seed(0)
    model = corpus.build("resnet18")
    x, y = _tensors(data, "train")
    xv, yv = _tensors(data, "val")
    steps = epochs * ((len(x) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(x)).split(64):
            xb = x[b]
            flip = torch.rand(len(b)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), y[b], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((torch.cat([model(b) for b in xv.split(256)]).argmax(1) == yv).float().mean())
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    info = {"val_accuracy": acc, "epochs": epochs, "seconds": time.perf_counter() - t0}
    record.write_text(json.dumps(info))
    return info


def short_target(name: str, out: Path) -> Path:
    """``name``'s profile with this benchmark's latency method."""
    text = (ROOT / "targets" / f"{name}.toml").read_text().split("[latency]")[0] + LATENCY
    path = out / "targets" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def row(base: Path, out: Path, target: Path, qat_epochs: int) -> dict:
    """Copy the float run, quantize for ``target`` (PTQ when ``qat_epochs`` is 0), export,
    validate; the figures of the row."""
    report_path = out / "report.json"
    if not report_path.exists():
        shutil.rmtree(out, ignore_errors=True)
        keep = shutil.ignore_patterns("*.onnx", "*.ort", "student_qat.pt", "quantize*", "report*")
        shutil.copytree(base, out, ignore=keep)
        changes = {"target": str(target), "qat_epochs": qat_epochs, "sensitivity": False}
        run_stage("quantize", out, changes)
        run_stage("export", out)
        run_stage("validate", out)
    report = json.loads(report_path.read_text())
    export = report.get("export") or {}
    coverage = export.get("int8_coverage") or {}
    return {
        "accuracy": report["accuracy"],
        "int8_over_fp32_p90": report["latency_ratio"].get("student_int8_vs_fp32"),
        "where": report["latency_ms"]["student_int8"]["where"],
        "lint": export.get("tensorrt_lint"),
        "int8_mac_fraction": coverage.get("int8_fraction"),
        "parity": export.get("student_int8"),
        "keep_float": (report.get("quantization") or {}).get("keep_float", {}).get("layers"),
    }


def bench_student(args, student: str, data: Path, teacher: Path) -> dict:
    root = args.out / student
    base = root / "float"
    result: dict = {"student": student, "schemes": {}}
    try:
        if not (base / "student.pt").exists():
            shutil.rmtree(base, ignore_errors=True)
            cfg = CompressConfig(
                teacher=f"{ROOT / 'tests' / 'corpus.py'}:resnet18", weights=str(teacher),
                student=f"{ROOT / 'tests' / 'corpus.py'}:{student}", data=str(data),
                mean=MEAN, std=STD, target=str(short_target("host-cpu", args.out)),
                epochs=args.epochs, qat_epochs=args.qat_epochs, batch_size=64, lr=2e-3,
                max_accuracy_drop=100.0, cache_dir=str(args.out / "cache"), sensitivity=False,
            )  # fmt: skip
            t0 = time.perf_counter()
            run_in(open_run(cfg, base), "distill")
            (base / "distill_seconds").write_text(f"{time.perf_counter() - t0:.1f}")
        result["distill_seconds"] = float((base / "distill_seconds").read_text())
    except Exception as e:  # noqa: BLE001 - a failing row is a result, and the table goes on
        result["error"] = f"distill: {type(e).__name__}: {first_line(e)}"
        traceback.print_exc()
        return result
    for scheme in args.schemes:
        target = short_target(SCHEMES[scheme], args.out)
        entry: dict = {}
        for kind, epochs in (("ptq", 0), ("qat", args.qat_epochs)):
            try:
                entry[kind] = row(base, root / f"{scheme}-{kind}", target, epochs)
            except Exception as e:  # noqa: BLE001 - as above
                entry[kind] = {"error": f"{type(e).__name__}: {first_line(e)}"}
                traceback.print_exc()
        result["schemes"][scheme] = entry
    return result


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def table(results: list[dict], teacher: dict) -> str:
    lines = [
        f"teacher: torchvision resnet18, val accuracy {_pct(teacher['val_accuracy'])} %",
        "",
        "| student | scheme | stages | TRT lint | INT8 MACs % | fp32 % | PTQ % | QAT % "
        "| QAT - fp32 pt | INT8/fp32 p90 (QAT) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['student']} | all | {r['error']} | | | | | | | |")
            continue
        for scheme, e in r["schemes"].items():
            ptq, qat = e.get("ptq", {}), e.get("qat", {})
            failed = [f"{k}: {v['error']}" for k, v in e.items() if "error" in v]
            if failed:
                lines.append(f"| {r['student']} | {scheme} | {'; '.join(failed)} | | | | | | | |")
                continue
            fp32 = qat["accuracy"]["student_fp32"]
            q = qat["accuracy"]["student_int8"]
            lint = "—" if qat["lint"] is None else str(len(qat["lint"]))
            ratio = qat["int8_over_fp32_p90"]
            lines.append(
                f"| {r['student']} | {scheme} | ok | {lint} | {_pct(qat['int8_mac_fraction'])} "
                f"| {_pct(fp32)} | {_pct(ptq['accuracy']['student_int8'])} | {_pct(q)} "
                f"| {100 * (q - fp32):+.1f} | {'—' if ratio is None else f'{ratio:.2f}'} |"
            )
    where = next(
        (e["qat"]["where"] for r in results for e in r.get("schemes", {}).values()
         if "where" in e.get("qat", {})), "",
    )  # fmt: skip
    lines.append(f"\nlatency: {where}; batch 1, >= 256 queries and >= 0.5 s per model and round, "
                 "p90 over edgekd's 3 interleaved rounds")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=1)
    cheap_first = ("shufflenet_v2_x0_5", "mobilenet_v3_small", "mobilenetv3_small_100", "convnet",
                   "mobilenet_v2", "efficientnet_lite0", "regnet_x_400mf", "mobilenet_v3_large",
                   "efficientnet_b0", "resnet18")  # fmt: skip
    default = ",".join(n for n in cheap_first if n in corpus.available())
    p.add_argument("--students", default=default)
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench-out/zoo"))
    args = p.parse_args()
    args.schemes = args.schemes.split(",")
    torch.set_num_threads(args.threads)
    data = args.out / f"rgb-fashion-{args.size}.npz"
    make_data(data, args.size, args.train, args.val)
    teacher = train_teacher(data, args.out / "teacher", args.teacher_epochs)
    print(f"teacher: {teacher}", flush=True)
    results = []
    for student in args.students.split(","):
        results.append(bench_student(args, student, data, args.out / "teacher" / "teacher.pt"))
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        md = table(results, teacher)
        (args.out / "table.md").write_text(md + "\n")
        print(md, flush=True)


if __name__ == "__main__":
    main()
