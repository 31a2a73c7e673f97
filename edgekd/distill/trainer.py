"""The training loop: a student learns from cached teacher logits and labels.

Inputs are deterministic (no random augmentation), so the teacher runs once over the training
set and its logits are reused every epoch: the teacher's forward pass would otherwise dominate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekd.atomic import write_with
from edgekd.data import Split
from edgekd.progress import log, progress


@dataclass(frozen=True)
class TrainConfig:
    """How one training stage runs."""

    epochs: int
    lr: float
    batch_size: int = 128
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    amp: bool = True  # mixed precision, used only on CUDA


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """Logits of ``model`` for every row of ``x`` (eval mode, on CPU)."""
    was_training = model.training
    model.eval()
    out = [
        model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, as a multiplier of the base lr."""
    if step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


def fit(
    student: nn.Module,
    train: Split,
    teacher_logits: torch.Tensor,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    *,
    device: torch.device,
    val: Split | None = None,
    checkpoint: Path | None = None,
    label: str = "train",
    before_epoch: Callable[[nn.Module, int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``student`` in place; returns one record per epoch (loss, accuracies, seconds).

    With ``checkpoint``, state is saved atomically after every epoch and, if the file exists,
    training resumes from it.
    """
    # channels-last convolutions train ~1.3x faster on CPU (oneDNN) and suit CUDA tensor cores
    layout = torch.channels_last if train.x.ndim == 4 else torch.contiguous_format
    student.to(device, memory_format=layout)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, int(cfg.warmup_epochs * steps_per_epoch))
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        log(f"{label}: resuming after epoch {start_epoch} from {checkpoint}")
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start_epoch):  # keep the shuffling identical to an uninterrupted run
        torch.randperm(len(train), generator=gen)
    for epoch in range(start_epoch, cfg.epochs):
        if before_epoch is not None:
            before_epoch(student, epoch)
        student.train()
        order = torch.randperm(len(train), generator=gen)
        t0, seen, total_loss, correct = time.perf_counter(), 0, 0.0, 0
        with progress(steps_per_epoch, f"{label} {epoch + 1}/{cfg.epochs}", "batch") as bar:
            for i in range(0, len(train), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                x = train.x[idx].to(device, memory_format=layout)
                y = train.y[idx].to(device)
                t = teacher_logits[idx].to(device)
                with torch.autocast(device.type, enabled=use_amp):
                    out = student(x)
                    loss = loss_fn(out.float(), t, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                total_loss += loss.item() * len(idx)
                correct += (out.argmax(1) == y).sum().item()
                seen += len(idx)
                bar.update(1)
        record = {
            "epoch": epoch + 1,
            "loss": total_loss / seen,
            "train_accuracy": correct / seen,
            "seconds": time.perf_counter() - t0,
        }
        if val is not None:
            record["val_accuracy"] = accuracy(predict(student, val.x, device), val.y)
        history.append(record)
        log(
            f"{label} epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, "
            f"train acc {record['train_accuracy']:.4f}"
            + (f", val acc {record['val_accuracy']:.4f}" if val is not None else "")
            + f" ({record['seconds']:.1f}s)"
        )
        if checkpoint is not None:
            state = {
                "model": student.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
                "epoch": epoch,
            }
            write_with(checkpoint, lambda p, s=state: torch.save(s, p))
    student.to("cpu", memory_format=torch.contiguous_format)
    return history
