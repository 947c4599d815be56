"""Catch a classifier that has silently stopped learning.

At a learning rate like 0.01 a fine-tuned BERT rarely produces NaN (gradient clipping and
LayerNorm keep the numbers finite); it collapses instead: every input gets the same class and
the loss sits at the level of guessing the class frequencies. That run ends "successfully" with a
useless model — the failure of the well-known write-up that fine-tuned at 0.01 for three epochs.
`ptm.training.guard.DivergenceGuard` watches for NaN and blow-ups; this watches for the collapse:

* training: over a window of steps, (almost) every batch was predicted as one single class *and*
  the mean loss is not below the chance level — the entropy of the training labels, i.e. the loss
  of predicting their frequencies (``ln C`` for balanced classes);
* evaluation: every dev prediction is the same class and the dev loss is at chance level.

Both only count after warm-up and ``min_steps``, so a healthy run's slow start is not mistaken
for a collapse. For token tasks the "class" is the tag of each labelled token (collapse = all O).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ptm.errors import DivergenceError

USUAL_LR = "2e-5 to 1e-4 are usual for BERT fine-tuning, up to 3e-4 for very small models"


@dataclass(frozen=True)
class CollapseConfig:
    enabled: bool = True
    min_steps: int = 100  # no verdict before this step (nor before warm-up has ended)
    window: int = 50  # training steps of one task judged together
    collapsed_fraction: float = 0.9  # share of the window's batches predicting a single class
    tolerance: float = 0.05  # "at chance level": loss >= (1 - tolerance) * chance


class CollapseGuard:
    """One per task. ``update`` after every training step of the task; ``check_*`` raise."""

    def __init__(
        self, cfg: CollapseConfig, task: str, labels: list[str], chance: float, peak_lr: float
    ) -> None:
        self.cfg, self.task, self.labels, self.chance = cfg, task, labels, chance
        self.peak_lr = peak_lr
        self.recent: deque[tuple[float, int]] = deque(maxlen=cfg.window)

    def update(self, loss: float, counts: np.ndarray) -> None:
        """``counts``: how often each class was predicted over the step's labelled items."""
        classes = np.flatnonzero(counts)
        self.recent.append((loss, int(classes[0]) if len(classes) == 1 else -1))

    def _at_chance(self, loss: float) -> bool:
        return loss >= (1.0 - self.cfg.tolerance) * self.chance

    def check_training(self, step: int, lr: float, start: int) -> None:
        if not self.cfg.enabled or step < start or len(self.recent) < self.cfg.window:
            return
        single = [c for _, c in self.recent if c >= 0]
        loss = float(np.mean([v for v, _ in self.recent]))
        if len(single) < self.cfg.collapsed_fraction * len(self.recent) or not self._at_chance(
            loss
        ):
            return
        top = max(set(single), key=single.count)
        what = (
            f"in {len(single)} of the last {len(self.recent)} training batches of task "
            f"'{self.task}' every prediction was one class (mostly '{self.labels[top]}'), and the "
            f"training loss {loss:.3f}"
        )
        raise DivergenceError(self._message(step, lr, what))

    def check_eval(self, step: int, lr: float, start: int, loss: float, counts: np.ndarray) -> None:
        """``counts``: how often each class was predicted over the dev set's labelled items."""
        if not self.cfg.enabled or step < start or counts.sum() == 0:
            return
        classes = np.flatnonzero(counts)
        if len(classes) > 1 or not self._at_chance(loss):
            return
        what = (
            f"every dev prediction of task '{self.task}' is '{self.labels[int(classes[0])]}', and "
            f"the dev loss {loss:.3f}"
        )
        raise DivergenceError(self._message(step, lr, what))

    def _message(self, step: int, lr: float, what: str) -> str:
        peak = f"train.lr={self.peak_lr:g}"
        if self.peak_lr > 2e-4:
            fix = f"lower {peak} (try 1e-4 or below; {USUAL_LR})"
        else:
            fix = (
                "check that the labels belong to the texts and that the tokenizer matches the data "
                f"(see the unknown-token count logged at the start), then try another {peak} "
                f"({USUAL_LR})"
            )
        return (
            f"training collapsed at step {step} (learning rate {lr:.2e}, peak {peak}): {what} is "
            f"no better than predicting the class frequencies (chance level {self.chance:.3f}). "
            f"The model has stopped learning. Likely fix: {fix}; keep train.warmup_fraction > 0 "
            "and train.grad_clip on. No model was exported for this run."
        )
