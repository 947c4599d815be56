"""Stopping a run when the scheduler asks: a checkpoint at the next step boundary, then an exit
that says the run can be resumed.

Clusters stop jobs with a signal and a grace period before the kill: SLURM sends ``SIGTERM`` (and,
with ``--signal``, ``SIGUSR1`` or submitit's ``SIGUSR2`` some minutes before the time limit);
a user presses Ctrl-C. Any of them — the first only; a second Ctrl-C interrupts at once — sets a
flag that the loop reads between two optimizer steps: it writes a checkpoint exactly as a
scheduled one (so ``resume=`` goes on as if the run had never stopped) and raises `Stopped`.
The stage's entry point turns that into one line and exit status 75 (``EX_TEMPFAIL``: "try
again"), which a wrapper script can test for to resubmit the job.

Under Hydra's submitit launcher (``+launcher=slurm``) the preemption signal belongs to submitit,
whose handler requeues the job and exits on the spot, wherever the run happens to be. Here the
handler waits instead: the run saves first, then hands the signal to submitit's handler, which
requeues the job; the requeued job starts in the same run folder and continues from the
checkpoint it finds there (`resume_when_requeued`, in the stages' entry points).

With several ``torchrun`` processes the flag is summed over them at every step, so all stop at
the same step even when the signal reaches them at different times.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import torch

from ptm.training import dist

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
EXIT_RESUMABLE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, the user is invited to retry
# SIGTERM: what schedulers send before a kill; SIGUSR1: SLURM's ``--signal`` warning; SIGUSR2:
# submitit's preemption and time-limit signal; SIGINT: Ctrl-C.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class Stopped(Exception):
    """A run stopped on a signal after writing its checkpoint; it can be resumed."""

    def __init__(self, signame: str, step: int, checkpoint: Path | None, run_dir: Path) -> None:
        self.signame, self.step, self.checkpoint = signame, step, checkpoint
        saved = f"checkpoint {checkpoint}" if checkpoint else "its newest checkpoint"
        super().__init__(
            f"stopped by {signame} at step {step}, {saved} written — continue with "
            f"resume={run_dir} (and the same other overrides)"
        )

    def resumed_in(self, run_dir: Path) -> Stopped:
        """The same stop, continued from ``run_dir`` (a cross-validation run whose fold it
        was: resuming the CV run resumes the fold)."""
        return Stopped(self.signame, self.step, self.checkpoint, run_dir)


class StopRequest:
    """The signal a run was asked to stop with (None until one arrives)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}  # the handlers ours replaced, while installed
        self.previous_released: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "none"

    def handle(self, signum: int, frame: object) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        if self.signum is None:
            self.signum = signum
            log.warning(
                "%s received: writing a checkpoint at the next step boundary, then stopping "
                "(a second Ctrl-C stops at once)",
                signal.Signals(signum).name,
            )

    def agreed(self, device: torch.device) -> bool:
        """Whether any process was asked to stop: every process gets the same answer."""
        if not torch.distributed.is_initialized():
            return self.signum is not None
        flag = torch.tensor([0.0 if self.signum is None else 1.0], device=device)
        return bool(dist.all_reduce_sum(flag).item() > 0)

    def release(self) -> None:
        """The loop is over: from here a signal goes to the handlers there were before (a
        scheduler's requeue acts at once; a job killed while exporting resumes from the last
        checkpoint and exports again), and one that came meanwhile is handed over now."""
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous_released, self.previous = self.previous, {}
        if self.signum is not None and self.signum != signal.SIGINT:
            previous = self.previous_released.get(self.signum)
            if callable(previous):
                previous(self.signum, None)

    def hand_over(self) -> None:
        """After the checkpoint: give the signal to the handler that was there before ours when
        that handler is a scheduler's own (submitit's requeue), which may exit the process."""
        if self.signum is None or self.signum == signal.SIGINT:
            return
        previous = self.previous.get(self.signum)
        if callable(previous):
            previous(self.signum, None)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Catch the stop signals for the length of a run; the earlier handlers come back after.
    Signal handlers belong to the main thread: elsewhere (a launcher's worker thread) the run
    goes on without them, and says so."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        log.info("not the main thread: SIGTERM / Ctrl-C stop this run without a checkpoint")
        yield request
        return
    for signum in SIGNALS:
        request.previous[signum] = signal.signal(signum, request.handle)
    try:
        yield request
    finally:
        for signum, previous in request.previous.items():
            signal.signal(signum, previous)


def resume_when_requeued(resume: str | None, run_dir: str | Path) -> str | None:
    """``resume=`` as given, or — in a job that submitit started (``+launcher=slurm`` / ``local``)
    whose folder already holds checkpoints, i.e. one it requeued after a preemption or the time
    limit — the job's own folder, so it continues where it stopped. A fresh job's folder has no
    checkpoints; outside submitit nothing changes."""
    if resume is not None or not os.environ.get("SUBMITIT_EXECUTOR"):
        return resume
    if not any((Path(run_dir) / "checkpoints").glob("step-*.pt")):
        return None
    log.info("a requeued job: continuing from the checkpoints in %s", run_dir)
    return str(run_dir)


def exit_resumable_when_stopped(fn: Callable[P, R]) -> Callable[P, R]:
    """A stage's entry point: a `Stopped` run prints one line and exits with status 75."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Stopped as e:
            print(f"stopped: {e}", file=sys.stderr)
            raise SystemExit(EXIT_RESUMABLE) from e

    return wrapper
