"""What a fine-tuning run carries from one step to the next, in one object whose
``state_dict()`` / ``load_state_dict()`` are the only code that saves and restores it: model,
optimizer, scaler, every process's RNG, the data position of every task's batch stream and of
the task mix, the guards, the best-so-far state with its score and dev decisions, the
early-stopping counter and the history. A run resumed from it reaches the same dev and test
metrics and the same exported weights as a run never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ptm.tasks.batching import batch_order
from ptm.tasks.collapse import CollapseGuard
from ptm.tasks.splits import TaskData
from ptm.training import loop
from ptm.training.checkpoint import rng_state, set_rng_state
from ptm.training.guard import DivergenceGuard
from ptm.training.loop import Clock

log = logging.getLogger(__name__)


class BatchStream:
    """Endless length-grouped training batches of one task, reshuffled every epoch. Its position
    is two numbers (epoch, batches left): the epoch's order is a function of the seed."""

    def __init__(self, task: TaskData, batch_size: int, seed: int, index: int, group: int | None):
        self.lengths = task.splits["train"].lengths
        self.batch_size, self.seed, self.index, self.group = batch_size, seed, index, group
        self.epoch, self.queue = -1, []

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def _order(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.index, self.epoch])
        return batch_order(self.lengths, self.batch_size, rng, self.group)[::-1]

    def next(self) -> np.ndarray:
        if not self.queue:
            self.epoch += 1
            self.queue = self._order()
        return self.queue.pop()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "left": len(self.queue)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]
        self.queue = self._order()[: state["left"]] if self.epoch >= 0 else []


@dataclass
class Best:
    """The best evaluation so far: its dev score, step, weights (CPU), metrics and decisions."""

    score: float = -math.inf
    step: int = -1
    state: dict | None = None
    dev: dict | None = None
    decisions: dict | None = None  # per task, what its kind chose on dev (a threshold)
    bad_evals: int = 0  # evaluations since, none better: early stopping counts these


class FinetuneState:
    """Everything a fine-tuning run carries from step to step (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        streams: list[BatchStream],
        mixer: np.random.Generator,
        guards: dict[str, DivergenceGuard],
        collapse: dict[str, CollapseGuard],
        info: Any,
    ) -> None:
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.streams, self.mixer, self.guards, self.collapse = streams, mixer, guards, collapse
        self.info = info  # this process's rank and the world size: whose RNG state is whose
        self.best = Best()
        self.step, self.examples, self.evaluated_at = 0, 0, -1
        self.stopped = "budget"  # or "early_stopping"
        self.history: list[dict] = []
        self.clock = Clock()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's values. Every process must call it: the RNG states are gathered."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": loop.gather(rng_state()),
            "streams": [s.state_dict() for s in self.streams],
            "mixer": self.mixer.bit_generator.state,
            "guards": {name: g.state_dict() for name, g in self.guards.items()},
            "collapse": {name: c.state_dict() for name, c in self.collapse.items()},
            # Field by field: dataclasses.asdict would deep-copy the best weights.
            "best": {f.name: getattr(self.best, f.name) for f in dataclasses.fields(self.best)},
            "step": self.step,
            "examples": self.examples,
            "elapsed": self.clock.elapsed(),
            "evaluated_at": self.evaluated_at,
            "stopped": self.stopped,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        ranks, world = state["rng"], self.info.world_size
        if len(ranks) != world:
            log.warning(
                "resuming %d processes from a run of %d: dropout draws will differ from an "
                "uninterrupted run",
                world,
                len(ranks),
            )
        set_rng_state(ranks[self.info.rank] if len(ranks) == world else ranks[0])
        for stream, s in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(s)
        self.mixer.bit_generator.state = state["mixer"]
        for name, g in state["guards"].items():
            self.guards[name].load_state_dict(g)
        for name, guard in state["collapse"].items():
            self.collapse[name].load_state_dict(guard)
        self.best = Best(**state["best"])
        self.step, self.examples = state["step"], state["examples"]
        self.clock = Clock(state["elapsed"])
        self.evaluated_at, self.stopped = state["evaluated_at"], state["stopped"]
        self.history = state["history"]
