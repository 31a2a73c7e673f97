"""The training loop: a student learns from its teacher(s) and the labels, on one or many processes.

The teacher side comes from a :data:`TeacherSource`: cached outputs read by sample index (the usual
case: inputs are deterministic, so the teacher runs once) or teachers run live on augmented inputs.
Under ``torch.distributed`` every rank takes its share of each global batch and DDP averages the
gradients, so N processes follow the single-process run up to BatchNorm batch statistics.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgekd import faults
from edgekd.atomic import write_torch
from edgekd.data import Split
from edgekd.distill.augment import Augmentation, Labels, MixedLabels
from edgekd.distill.features import FeatureTap
from edgekd.distill.losses import Objective, Outputs
from edgekd.errors import BadInput
from edgekd.models.batchnorm import reestimate_bn
from edgekd.progress import log, progress

OPTIMIZERS = ("adamw", "sgd")

# (sample indices, the inputs as the student sees them) -> the teacher's outputs for them
TeacherSource = Callable[[torch.Tensor, torch.Tensor], Outputs]
# (sample indices, the inputs and the labels as the student sees them): one call per batch
BatchObserver = Callable[[torch.Tensor, torch.Tensor, Labels], None]


@dataclass(frozen=True)
class TrainConfig:
    """How one training stage runs."""

    epochs: int
    lr: float
    batch_size: int = 128  # the global batch, split across processes
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    amp: bool = True  # mixed precision, used only on CUDA
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD (Nesterov)
    # BatchNorm running-statistics momentum while training; None keeps the model's own.
    # torchvision's MobileNets and EfficientNets use 0.01 (tuned for long ImageNet runs): in a
    # short schedule their running statistics stay near initialisation and eval is at chance.
    bn_momentum: float | None = 0.1
    # weight decay on BatchNorm/LayerNorm affines and biases too: without it the bundled example's
    # student lost 0.9 pt (fp32 91.2 vs 92.1 %), and MobileNetV2 gained nothing outside the noise
    decay_norm_and_bias: bool = True
    # After each epoch, BatchNorm statistics recomputed (exact average) over this many training
    # samples; 0: keep the running averages, which lag the weights in a short schedule.
    bn_recalibration: int = 1024


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``auto`` and ``cuda`` without an index take
    the process's local GPU (one per rank under --nproc or torchrun)."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        return torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))
    return torch.device(name)


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether training runs under autocast (float16 on CUDA, with a gradient scaler)."""
    return cfg.amp and device.type == "cuda"


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the stage's outputs (rank 0, or the only process)."""
    return rank() == 0


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


def logits_source(logits: torch.Tensor) -> TeacherSource:
    """A teacher given as precomputed logits for every training sample."""
    return lambda idx, x: Outputs(logits[idx], [])


class Distiller(nn.Module):
    """The student with its feature taps and the objective, whose adapters train along with it.

    One module, so that DDP sees (and averages) every trainable parameter.
    """

    def __init__(
        self,
        student: nn.Module,
        objective: Objective,
        layers: list[str] = (),
        embedding: bool = False,
    ):
        super().__init__()
        self.student = student
        self.objective = objective
        self.tap = FeatureTap(student, list(layers), embedding=embedding)

    def forward(
        self, x: torch.Tensor, teacher: Outputs, labels: Labels
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        logits = self.student(x)
        features, embedding = self.tap.take()
        loss, parts = self.objective(Outputs(logits.float(), features, embedding), teacher, labels)
        return loss, logits, parts


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, as a multiplier of the base lr."""
    if step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


def _param_groups(params: list[nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """Weight decay on weight matrices and kernels only, unless ``cfg.decay_norm_and_bias``:
    decaying the 1-d normalisation scales and the biases shrinks what BatchNorm learnt to
    undo, without regularising anything (the usual recipe for mobile networks)."""
    if cfg.decay_norm_and_bias:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@contextmanager
def _bn_momentum(model: nn.Module, momentum: float | None) -> Iterator[None]:
    """Train ``model``'s BatchNorm layers with ``momentum`` (None: as they are), restoring
    their own values afterwards (a user's model leaves as it came)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    if momentum is not None:
        for m in norms:
            m.momentum = momentum
    try:
        yield
    finally:
        for m, value in zip(norms, saved, strict=True):
            m.momentum = value


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(params, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise BadInput(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def _to(t: Outputs, device: torch.device) -> Outputs:
    return Outputs(
        t.logits.to(device),
        [f.to(device) for f in t.features],
        None if t.embedding is None else t.embedding.to(device),
    )


def _labelled_hits(logits: torch.Tensor, labels: Labels) -> tuple[int, int]:
    """(correct, labelled) top-1 over the labelled samples; a mixed image counts against its
    dominant label (the larger share)."""
    target = labels.dominant() if isinstance(labels, MixedLabels) else labels
    labelled = target >= 0
    return int((logits.argmax(1) == target)[labelled].sum()), int(labelled.sum())


def _sum_across_ranks(*values: float) -> list[float]:
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _rng_state(order: torch.Generator, device: torch.device) -> dict:
    """Every random stream a training epoch draws from (dropout, the data order, numpy's and
    Python's), as tensors and plain values that ``torch.load(weights_only=True)`` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "order": order.get_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, order: torch.Generator, device: torch.device) -> None:
    """Restore what :func:`_rng_state` saved, so that the next epoch draws what it drew."""
    torch.set_rng_state(state["torch"])
    order.set_state(state["order"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def fit(
    student: nn.Module,
    train: Split,
    teacher: TeacherSource | torch.Tensor,
    objective: Objective,
    cfg: TrainConfig,
    *,
    device: torch.device,
    val: Split | None = None,
    checkpoint: Path | None = None,
    label: str = "train",
    layers: list[str] = (),
    embedding: bool = False,
    augment: Augmentation | None = None,
    before_epoch: Callable[[nn.Module, int], None] | None = None,
    batches: BatchObserver | None = None,
) -> list[dict[str, float]]:
    """Train ``student`` in place; returns one record per epoch (loss and its terms, accuracies, s).

    ``train_accuracy`` is top-1 over the epoch's labelled samples (absent when it has none; a
    mixed image counts against its dominant label). ``layers``/``embedding`` name what the
    objective needs from the student (taps); the teacher source supplies the same from the
    teacher. ``augment`` draws once per batch: the teacher, the student and the label term see
    the same (mixed) batch, which ``batches`` is shown too. With ``checkpoint``, state is saved atomically
    after every epoch (by rank 0: weights, optimizer, scheduler, gradient scaler and every random
    stream) and, if the file exists, training resumes from it, bit-identical to a run that was
    never interrupted.
    """
    if isinstance(teacher, torch.Tensor):
        teacher = logits_source(teacher)
    # channels-last convolutions train ~1.3x faster on CPU (oneDNN) and suit CUDA tensor cores
    layout = torch.channels_last if train.x.ndim == 4 else torch.contiguous_format
    model = Distiller(student, objective, layers, embedding).to(device)
    student.to(memory_format=layout)
    ddp = DistributedDataParallel(model) if dist.is_initialized() else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(params, cfg)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, int(cfg.warmup_epochs * steps_per_epoch))
    )
    use_amp = amp_enabled(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, float]] = []
    start_epoch = 0
    gen = torch.Generator().manual_seed(cfg.seed)  # the data order, the same on every rank
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], gen, device)
        history = state["history"]
        start_epoch = state["epoch"] + 1
        log(f"{label}: resuming after epoch {start_epoch} from {checkpoint}")
    me, n_ranks = rank(), world_size()
    step = ddp if ddp is not None else model
    try:
        with _bn_momentum(student, cfg.bn_momentum):
            for epoch in range(start_epoch, cfg.epochs):
                if before_epoch is not None:
                    before_epoch(student, epoch)
                model.train()
                order = torch.randperm(len(train), generator=gen)
                # per (seed, epoch, rank): a resumed epoch augments as the uninterrupted one did
                aug_gen = torch.Generator().manual_seed(cfg.seed + 7919 * (me + 1) + 104729 * epoch)
                t0, seen, total_loss, correct, labelled = time.perf_counter(), 0, 0.0, 0, 0
                parts_sum: dict[str, float] = {}
                with progress(steps_per_epoch, f"{label} {epoch + 1}/{cfg.epochs}", "batch") as bar:
                    for i in range(0, len(train), cfg.batch_size):
                        idx = order[i : i + cfg.batch_size][me::n_ranks]
                        x, y = train.x[idx], train.y[idx]
                        if augment is not None:
                            x, y = augment(x, y, aug_gen)
                        if batches is not None:
                            batches(idx, x, y)
                        t = _to(teacher(idx, x), device)
                        x = x.to(device, memory_format=layout)
                        y = y.to(device)
                        with torch.autocast(device.type, enabled=use_amp):
                            loss, out, parts = step(x, t, y)
                        opt.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                        sched.step()
                        total_loss += loss.item() * len(idx)
                        for k, v in parts.items():
                            parts_sum[k] = parts_sum.get(k, 0.0) + v * len(idx)
                        hits, n = _labelled_hits(out.detach(), y)
                        correct, labelled = correct + hits, labelled + n
                        seen += len(idx)
                        bar.update(1)
                        faults.point(label, "batch")
                if cfg.bn_recalibration:  # the same samples on every rank: equal statistics
                    sample = torch.randperm(
                        len(train), generator=torch.Generator().manual_seed(cfg.seed)
                    )
                    x_bn = train.x[sample[: cfg.bn_recalibration]]
                    reestimate_bn(student, (b.to(device) for b in x_bn.split(256)))
                keys = sorted(parts_sum)
                total_loss, correct, labelled, seen, *part_values = _sum_across_ranks(
                    total_loss, correct, labelled, seen, *(parts_sum[k] for k in keys)
                )
                record = {"epoch": epoch + 1, "loss": total_loss / seen}
                if labelled:
                    record["train_accuracy"] = correct / labelled
                record["seconds"] = time.perf_counter() - t0
                record.update(
                    {f"loss_{k}": v / seen for k, v in zip(keys, part_values, strict=True)}
                )
                if val is not None:
                    record["val_accuracy"] = accuracy(predict(student, val.x, device), val.y)
                history.append(record)
                log(
                    f"{label} epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}"
                    + (f", train acc {record['train_accuracy']:.4f}" if labelled else "")
                    + (f", val acc {record['val_accuracy']:.4f}" if val is not None else "")
                    + f" ({record['seconds']:.1f}s)"
                )
                if checkpoint is not None and is_main():
                    state = {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": _rng_state(gen, device),
                        "history": history,
                        "epoch": epoch,
                    }
                    write_torch(checkpoint, state)
                    faults.point(label, "epoch")
                if dist.is_initialized():
                    dist.barrier()
    finally:
        model.tap.close()
    student.to("cpu", memory_format=torch.contiguous_format)
    return history
