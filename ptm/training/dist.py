"""One CPU, one GPU or many through ``torchrun``: reading its environment, rank-zero helpers.

No home-made launcher: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK and we only read them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ptm.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when there is one; ``cuda`` without a GPU is a clear error."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                None,
                "runtime.device=cuda but torch sees no CUDA device",
                "use runtime.device=cpu or auto",
            )
        return torch.device("cuda", local_rank)
    if preference == "cpu":
        return torch.device("cpu")
    raise InputError(None, f"runtime.device={preference!r} is unknown", "use auto, cpu or cuda")


def setup(preference: str) -> DistInfo:
    """Join the process group when launched by ``torchrun``; a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, local_rank, world, device)


@contextmanager
def process_group(preference: str) -> Iterator[DistInfo]:
    """The process's place in a ``torchrun`` job (or rank 0 of 1) for the length of a run.

    Ranks other than 0 log warnings only; the group is left however the run ends.
    """
    info = setup(preference)
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield info
    finally:
        teardown()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Processes of this job: ``torchrun``'s WORLD_SIZE (1 for a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place), a no-op in a single process."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The largest value over all processes (in place), a no-op in a single process."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def micro_steps_per_step(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient-accumulation steps that keep the global batch the same at any process count."""
    per_pass = micro_batch * world_size
    if global_batch % per_pass:
        raise InputError(
            None,
            f"train.batch_size={global_batch} is not divisible by train.micro_batch_size="
            f"{micro_batch} x {world_size} processes",
            "pick a micro batch (or process count) that divides the global batch",
        )
    return global_batch // per_pass
