"""The pieces every training loop shares, so each loop keeps only what is its own.

A loop still reads top to bottom as nanoGPT's ``train.py`` does — set LR, evaluate, checkpoint,
stop check, micro-steps, clip/step/zero, guard, log — and calls these for the steps that are the
same in pretraining and fine-tuning:

* `session` — the process group (``torchrun`` or one process) and the runtime prologue: device,
  precision, backends, and the accelerator's peak for model FLOPs utilisation;
* `Budget` — how far a run is through its step, token and time limits (the LR schedule and the
  stop check read it);
* `set_lr` — the scheduled rate into every parameter group (times its ``lr_scale``, if any);
* `StepContext` — what every step uses and none changes (forward, DDP module, scaler, device);
* `accumulate` — forward and backward over the micro-batches of one optimizer step, gradients
  synchronised on the last one only (DDP's ``no_sync``), under autocast;
* `optimizer_step` — unscale, clip, step, update the scaler, zero the gradients;
* `check_divergence` — the divergence guard on the step's loss;
* `Meter` and `progress_line` — throughput, MFU and ETA since the last log line, and the line;
* `Clock` — a run's seconds so far, across resumes (the time budget and the checkpoint read it);
* `save_state` / `resume_point` — a run state written to a checkpoint, and the checkpoint a run
  continues from: the only two places a loop's state meets a file;
* `gather` — a value of every process (their RNG states, for a checkpoint);
* `write_run_summary` / `write_metrics` — the one-screen summary at the start (log + run.json)
  and the metrics at the end.

Nothing here knows what is being trained: the step's loss is the caller's function of a batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ptm import records
from ptm.errors import InputError
from ptm.progress import format_duration
from ptm.records import RunClock
from ptm.training import dist, runtime
from ptm.training.checkpoint import list_checkpoints, load_latest, save_checkpoint
from ptm.training.guard import DivergenceGuard
from ptm.training.mfu import peak_flops, utilisation
from ptm.training.rundir import point_latest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """Where a run executes: its place in the process group, precision and accelerator peak."""

    info: dist.DistInfo
    precision: str  # fp32 | bf16 | fp16, as resolved for this device
    peak: float | None  # dense peak FLOP/s at that precision (MFU); None when unknown (CPU)

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def world_size(self) -> int:
        return self.info.world_size


@contextmanager
def session(cfg: runtime.RuntimeConfig) -> Iterator[Session]:
    """Join the process group (left however the run ends) and prepare the runtime."""
    with dist.process_group(cfg.device) as info:
        precision = runtime.prepare(cfg, info.device)
        peak = peak_flops(info.device, precision, cfg.tf32, cfg.peak_tflops)
        yield Session(info, precision, peak)


@dataclass(frozen=True)
class Budget:
    """A run ends at whichever limit it reaches first; None turns a limit off."""

    max_steps: int | None
    max_tokens: int | None = None
    max_seconds: float | None = None

    def agreed_seconds(self, clock: Clock, device: torch.device) -> float:
        """``clock``'s seconds, the same on every process when the budget has a time limit (the
        slowest one's): each process reading its own clock could end, evaluate or set the
        learning rate a step apart from the others, and their collectives would not match."""
        seconds = clock.elapsed()
        if self.max_seconds is None or not torch.distributed.is_initialized():
            return seconds
        agreed = torch.tensor([seconds], dtype=torch.float64, device=device)
        return float(dist.all_reduce_max(agreed).item())

    def progress(self, step: int, tokens: int = 0, seconds: float = 0.0) -> float:
        """Fraction of the budget used: the furthest along of the limits that are set."""
        parts = [step / self.max_steps if self.max_steps else 0.0]
        parts.append(tokens / self.max_tokens if self.max_tokens else 0.0)
        parts.append(seconds / self.max_seconds if self.max_seconds else 0.0)
        return max(parts)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled rate into every group, scaled by the group's ``lr_scale`` (layer-wise
    decay) where it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr


@dataclass(frozen=True)
class StepContext:
    """What every optimizer step of a run uses and none changes: the forward pass (compiled or
    not), the module DDP wraps (for ``no_sync``), the scaler, device, precision and the number of
    processes sharing the global batch."""

    forward: Callable[..., Any]
    ddp: nn.Module
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str
    world_size: int


def accumulate(
    ctx: StepContext, micro: Sequence[Any], loss_of: Callable[[Any], torch.Tensor]
) -> None:
    """Forward and backward of every micro-batch of one optimizer step.

    ``loss_of(batch)`` runs the forward pass and returns the loss to differentiate, already
    scaled so that the sum over micro-batches (and DDP's mean over processes) is the step's loss.
    Gradients are all-reduced on the last micro-batch only (``no_sync`` before it); the backward
    pass runs outside autocast, as PyTorch recommends.
    """
    for i, batch in enumerate(micro):
        sync = i == len(micro) - 1 or not isinstance(ctx.ddp, DistributedDataParallel)
        with (
            nullcontext() if sync else ctx.ddp.no_sync(),
            runtime.autocast(ctx.device, ctx.precision),
        ):
            loss = loss_of(batch)
        ctx.scaler.scale(loss).backward()


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> torch.Tensor:
    """Unscale, clip the global gradient norm (``grad_clip`` <= 0: no clipping, the norm is still
    measured), step, update the scaler, zero the gradients; returns the norm before clipping."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), grad_clip if grad_clip > 0 else float("inf")
    )
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


def check_divergence(
    guard: DivergenceGuard, step: int, loss: float, lr: float, floor: float = 0.0
) -> None:
    """The divergence guard on this step's loss. A finite loss under ``floor`` counts as
    ``floor``, so noise around a near-zero loss late in training is not read as a blow-up."""
    guard.check(step, max(loss, floor) if math.isfinite(loss) else loss, lr)


@dataclass
class Meter:
    """Work since the last log line (rates, MFU) and over the whole run (the final summary)."""

    peak: float | None
    world_size: int
    start: float = field(default_factory=time.perf_counter)
    examples: int = 0
    tokens: int = 0
    flops: float = 0.0
    run_flops: float = 0.0

    def add(self, examples: int = 0, tokens: int = 0, flops: float = 0.0) -> None:
        self.examples += examples
        self.tokens += tokens
        self.flops += flops
        self.run_flops += flops

    def lap(self) -> dict[str, float]:
        """``examples_per_s``, ``tokens_per_s`` and (where the peak is known) ``mfu`` since the
        last lap; starts the next window."""
        now = time.perf_counter()
        seconds = max(now - self.start, 1e-9)
        out = {"examples_per_s": self.examples / seconds, "tokens_per_s": self.tokens / seconds}
        mfu = utilisation(self.flops, now - self.start, self.peak, self.world_size)
        if mfu is not None:
            out["mfu"] = mfu
        self.start, self.examples, self.tokens, self.flops = now, 0, 0, 0.0
        return out


def eta(seconds: float, done: float, done_at_start: float = 0.0) -> float:
    """Seconds left, extrapolating the progress made in the ``seconds`` this process has run
    (a resumed run counts from where it resumed)."""
    return seconds * (1 - done) / max(done - done_at_start, 1e-9)


def progress_line(
    step: int, fields: str, rate: str, mfu: float | None, done: float, left: float
) -> str:
    """``step N | <the loop's fields> | <rate>[ | MFU x%] | pct% | ETA t``."""
    shown = "" if mfu is None else f" | MFU {100 * mfu:.1f}%"
    return (
        f"step {step} | {fields} | {rate}{shown} | {100 * done:3.0f}% | ETA {format_duration(left)}"
    )


class Clock:
    """Seconds a run has trained, counting the time before a resume (``start``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.start, self.started = start, time.perf_counter()

    def restart(self) -> None:
        """Count from now: what came before the first step (setup, a resume) is not training."""
        self.started = time.perf_counter()

    def since_start(self) -> float:
        """Seconds since this process started counting (what throughput and ETA divide by)."""
        return time.perf_counter() - self.started

    def elapsed(self) -> float:
        return self.start + self.since_start()


def save_state(state: Any, run_dir: Path, keep: int, is_main: bool) -> Path | None:
    """A checkpoint of ``state`` (anything with ``step`` and ``state_dict()``) in
    ``<run_dir>/checkpoints``. Every process calls it — a state may gather values from all of
    them — and rank 0 writes."""
    values = state.state_dict()
    if not is_main:
        return None
    return save_checkpoint(run_dir / "checkpoints", state.step, values, keep)


def resume_point(resume: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``resume=<run folder>`` continues from — its newest intact one, newer
    damaged ones skipped with a warning — and its values for the state's ``load_state_dict``;
    None without ``resume`` or when that run wrote no checkpoint yet (a warning)."""
    if resume is None:
        return None
    folder = Path(resume) / "checkpoints"
    found = load_latest(folder)
    if found is None:
        if list_checkpoints(folder):
            raise InputError(folder, "no checkpoint here loads", "start anew without resume=")
        # A launcher that resumes every job from its own folder (conf/launcher/slurm.yaml) meets
        # this at every first start: nothing to warn about.
        log.info("resume=%s has no checkpoint yet: starting from scratch", resume)
    return found


def gather(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (a one-item list in a single process): what a
    checkpoint needs of state that differs between processes, such as RNG states."""
    if not torch.distributed.is_initialized():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def write_run_summary(run_dir: Path, summary: dict, config: dict, latest: bool = True) -> None:
    """The one-screen summary a run starts with: logged, and written with the resolved config
    to ``run.json``; ``<runs>/latest`` names the run. Rank 0 only. It records the intra-op
    threads per process: a CPU run repeats exactly only on as many (bf16 kernels split their
    sums by thread)."""
    summary = {**summary, "threads": torch.get_num_threads()}
    run_dir.mkdir(parents=True, exist_ok=True)
    if latest:  # not a fold of a cross-validation: `latest` names the CV run (finetune.cv)
        point_latest(run_dir)
    log.info("run summary: %s", json.dumps(summary))
    (run_dir / "run.json").write_text(
        json.dumps({"summary": summary, "config": config}, indent=2) + "\n"
    )


def resolved_config(cfg: Any, session: Session) -> dict[str, Any]:
    """A run's config as plain data, with the precision it ran at (``auto`` resolved): what its
    record and model card name."""
    config = records.plain(cfg)
    config["runtime"] = {**config["runtime"], "precision": session.precision}
    return config


def write_record(
    run_dir: Path, kind: str, config: dict, metrics: dict, started: RunClock, session: Session
) -> Path:
    """``record.json``: the run's command, commit, machine (its device and precision), resolved
    config, wall and CPU time and metrics (`ptm.records`); ``make record`` copies it into
    ``results/`` when the docs quote it."""
    return records.write_record(
        run_dir / records.RECORD,
        kind=kind,
        config=config,
        metrics=metrics,
        clock=started,
        machine_info=records.machine(session.device.type, session.precision),
    )


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    """``metrics.json``: what the run measured, as the sweep summary and the report read it."""
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    return path
