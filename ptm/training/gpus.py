"""A GPU of its own for every job when a sweep runs several jobs at once on one machine.

``+launcher=gpus`` runs a sweep through Hydra's joblib launcher: a pool of worker processes, one
per GPU, each taking job after job. Before its first job a worker claims one free GPU by holding
an exclusive lock (``flock``) on ``<lock_dir>/gpu-<id>.lock``, sets ``CUDA_VISIBLE_DEVICES`` to
that GPU alone, and keeps the lock until the process ends; the kernel drops it then, however the
process ends, so a crashed job never strands a GPU.

Why not "job number modulo GPU count": jobs finish out of order, so job 4 can start while job 0,
on the same GPU, still runs. Why the claim lasts the worker's life and not one job's: CUDA fixes
the devices a process sees when it first initialises, and the pool reuses workers, so a worker
cannot move to another GPU for its next job. The locks are per machine, not per sweep: two sweeps
started at once share the GPUs, and a worker that finds them all held waits for one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ptm.errors import InputError

log = logging.getLogger(__name__)
ENV = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Claim:
    gpu: str  # what CUDA_VISIBLE_DEVICES is set to: an index or a UUID, as the machine names it
    lock: Path


# This process's claim and the open lock file that holds it (closing the file would release it).
_held: tuple[Claim, IO[str]] | None = None


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES``'s entries when it is set, else
    every GPU torch sees. torch counts through NVML where it can, without initialising CUDA, so
    the variable still takes effect when a job sets it afterwards in this process."""
    listed = _listed()
    if listed is not None:
        return listed
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_count() -> int:
    """How many GPUs a sweep can share out (the ``${ptm.gpu_count:}`` resolver)."""
    return len(visible_gpus())


def claim_gpu(gpus: list[str], lock_dir: Path, poll_seconds: float = 1.0) -> Claim:
    """This process's GPU: the one it already holds, else the first of ``gpus`` that no other
    process holds, waiting while every one is held."""
    global _held
    if _held is not None:
        return _held[0]
    if not gpus:
        raise InputError(None, "no GPU to claim", "run the sweep without +launcher=gpus")
    said_waiting = False
    while True:
        for gpu in gpus:
            path = lock_dir / f"gpu-{_file_safe(gpu)}.lock"
            handle = _open_lock(path)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")  # who holds it, for a person looking
            handle.flush()
            _held = (Claim(gpu, path), handle)
            return _held[0]
        if not said_waiting:
            said_waiting = True
            log.info("all %d GPUs are held (locks in %s): waiting for one", len(gpus), lock_dir)
        time.sleep(poll_seconds)


def _open_lock(path: Path) -> IO[str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a+")
    except OSError as e:
        raise InputError(
            path.parent,
            f"cannot keep GPU lock files here ({e.strerror})",
            "set hydra.callbacks.claim_gpu.lock_dir to a folder every job can write",
        ) from e


def _listed() -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES``'s entries, or None when it is not set."""
    value = os.environ.get(ENV)
    return None if value is None else [g.strip() for g in value.split(",") if g.strip()]


def _file_safe(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


class ClaimGPU(Callback):
    """Hydra callback: before each job, give the process running it a GPU of its own.

    ``gpus`` is how many GPUs to share out: the first ``gpus`` entries of the worker's
    ``CUDA_VISIBLE_DEVICES`` when it is set, else GPUs ``0 .. gpus-1``.
    """

    def __init__(self, gpus: int, lock_dir: str) -> None:
        self.gpus = int(gpus)
        self.lock_dir = Path(lock_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.check(OmegaConf.select(config, "hydra.launcher.n_jobs"))
        except InputError as e:
            _stop(e)

    def check(self, n_jobs: Any) -> None:
        """There is a GPU to share, and no more jobs run at once than there are GPUs (the extra
        workers would wait for a GPU held by an idle worker until the pool retires it)."""
        if self.gpus < 1:
            raise InputError(
                None,
                "+launcher=gpus found no GPU (torch sees none; CUDA_VISIBLE_DEVICES="
                f"{os.environ.get(ENV, '(unset)')})",
                "run the sweep without +launcher=gpus, or on the GPU machine",
            )
        if isinstance(n_jobs, int) and not 1 <= n_jobs <= self.gpus:
            raise InputError(
                None,
                f"hydra.launcher.n_jobs={n_jobs} jobs at once, but there are {self.gpus} GPUs",
                f"leave n_jobs to +launcher=gpus (one job per GPU) or set 1..{self.gpus}",
            )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Read before the first claim changes it: what the worker inherited from the sweep.
        gpus = (_listed() or [str(i) for i in range(self.gpus)])[: self.gpus]
        try:
            claim = claim_gpu(gpus, self.lock_dir)
        except Exception as e:  # whatever it is, the job must not run on a GPU it does not own
            _stop(e)
        os.environ[ENV] = claim.gpu
        log.info("GPU %s for this job (held by process %d: %s)", claim.gpu, os.getpid(), claim.lock)


def _stop(error: Exception) -> NoReturn:
    """End the sweep with one line. Hydra turns an exception raised in a callback into a warning
    and carries on, which here would run jobs on GPUs they do not own; ``SystemExit`` is not an
    ``Exception``, so it does end the sweep (raised in a joblib worker, it ends the worker, and
    the sweep with it)."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from error
