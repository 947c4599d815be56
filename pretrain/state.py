"""What a pretraining run carries from one step to the next, in one object whose
``state_dict()`` / ``load_state_dict()`` are the only code that saves and restores it.

The data position needs no state of its own: the samples of step ``s`` are positions
``s * batch .. (s + 1) * batch`` of `SampleOrder`, a function of the seed; their masks and
dropout derive from ``(seed, step, micro-batch)`` (`stream_seed`). So the step number is the
data position, and a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ptm.training.guard import DivergenceGuard
from ptm.training.loop import Clock


def stream_seed(seed: int, step: int, chunk: int) -> int:
    """One RNG seed per (step, micro-batch): independent of how many processes share the work."""
    return (seed * 1_000_003 + step) * 10_007 + chunk


class SampleOrder:
    """Global sample positions -> segment indices: a fresh seeded permutation every epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, np.arange(0)

    def take(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for i, pos in enumerate(range(start, start + count)):
            epoch, within = divmod(pos, self.n)
            if epoch != self._epoch:
                self._epoch = epoch
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            out[i] = self._perm[within]
        return out


class PretrainState:
    """Model, optimizer, scaler and guard, with the step, the tokens seen and the time spent;
    and what the run's metrics collect along the way: the held-out scores before training (a
    continued model) and the downstream probe's history."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        guard: DivergenceGuard,
        batch_size: int,
    ) -> None:
        self.model, self.optimizer, self.scaler, self.guard = model, optimizer, scaler, guard
        self.batch_size = batch_size
        self.step, self.tokens = 0, 0
        self.clock = Clock()
        self.start_metrics: dict[str, float] = {}
        self.probe_history: list[dict[str, float]] = []  # the probe's own list (rank 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "guard": self.guard.state_dict(),
            "step": self.step,
            "tokens": self.tokens,
            "elapsed": self.clock.elapsed(),
            "samples": self.step * self.batch_size,
            "rng": {"torch": torch.get_rng_state()},
            "start_metrics": self.start_metrics,
            "probe_history": list(self.probe_history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state["guard"])
        self.step, self.tokens = state["step"], state["tokens"]
        self.clock = Clock(state["elapsed"])
        torch.set_rng_state(state["rng"]["torch"])
        self.start_metrics = dict(state.get("start_metrics", {}))  # older checkpoints lack them
        self.probe_history[:] = state.get("probe_history", [])
