"""Data-parallel training processes: spawned by ``--nproc N`` or launched by ``torchrun``.

Gloo for CPU tensors, NCCL for CUDA tensors. Rank 0 writes every output; the other ranks only
train.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from edgekd.errors import EdgekdError


def backend() -> str:
    """Gloo alone without CUDA; with CUDA, NCCL for CUDA tensors and gloo for CPU ones (the
    per-epoch loss sums, or a model trained with --device cpu on a GPU machine)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment; False when not launched so."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend())
        _quiet_unless_main()
    return True


def _quiet_unless_main() -> None:
    if dist.get_rank() != 0:
        os.environ["EDGEKD_QUIET"] = "1"  # one progress log per job, from rank 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, nproc: int, port: int, threads: int, fn: Callable[..., Any], args: tuple
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
    )
    torch.set_num_threads(threads)
    dist.init_process_group(backend(), rank=rank, world_size=nproc)
    _quiet_unless_main()
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn(nproc: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes joined in one process group; wait for all.

    ``fn`` must be importable by name (a module-level function). CPU threads are shared out so
    the processes do not oversubscribe the cores.
    """
    threads = max(1, (os.cpu_count() or 1) // nproc)
    try:
        mp.spawn(_worker, args=(nproc, _free_port(), threads, fn, args), nprocs=nproc, join=True)
    except mp.ProcessRaisedException as e:
        # the worker's traceback ends with "ExceptionType: message"; keep that line only
        last = str(e).strip().splitlines()[-1]
        raise EdgekdError(f"a training process failed: {last}") from None
    except mp.ProcessExitedException as e:
        raise EdgekdError(f"a training process exited: {e}") from None
