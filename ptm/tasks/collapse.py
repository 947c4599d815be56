"""Catch a classifier that has silently stopped learning — without stopping one that has not
started yet.

At a learning rate like 0.01 a fine-tuned BERT rarely produces NaN (gradient clipping and
LayerNorm keep the numbers finite); it collapses instead: every input gets the same class and
the loss sits at the level of guessing the class frequencies. That run ends "successfully" with a
useless model — the failure of the well-known write-up that fine-tuned at 0.01 for three epochs.
`ptm.training.guard.DivergenceGuard` watches for NaN and blow-ups; this watches for the collapse.

The symptom alone — one predicted class at chance-level loss (the entropy of the training labels,
``ln C`` for balanced classes) — is also what a healthy model looks like before it has learned
anything: a randomly initialised BERT-mini fine-tuned on the reviews at 1e-4 predicted one class
at chance loss for well over 100 steps and then learned normally. So the guard tells the two
apart by the run's own history:

* **collapsed** — the run had learned (its windowed training loss once fell clearly below chance,
  ``learned_fraction`` x chance) and is now back at chance with one class: stop at once (after
  ``min_steps`` and warm-up);
* **not started** — it has never been below chance: only after ``stall_steps`` is that a failure
  worth stopping for (a from-scratch encoder, or an almost untrained one, needs that long);
* **the model to export** — the best dev step's model predicting one class on every dev item at
  chance loss is useless: after a run that had learned, or one that has run ``stall_steps``, the
  run fails rather than export it; after a short run that never started (a smoke run, a few
  steps from random weights) it is exported with a warning that says so, since stopping there
  would be the false alarm again.

For token tasks the "class" is the tag of each labelled token (collapse = all ``O``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ptm.errors import DivergenceError

USUAL_LR = "2e-5 to 1e-4 are usual for BERT fine-tuning, up to 3e-4 for very small models"


@dataclass(frozen=True, kw_only=True)
class CollapseConfig:
    enabled: bool
    min_steps: int  # no verdict before this step (nor before warm-up has ended)
    window: int  # training steps of one task judged together
    collapsed_fraction: float  # share of the window's batches predicting a single class
    tolerance: float  # "at chance level": loss >= (1 - tolerance) * chance
    learned_fraction: float  # "has learned": a window's loss once fell below this x chance
    stall_steps: int  # a run never below chance is stopped only after this many steps

    def __post_init__(self) -> None:
        if not 0.0 < self.learned_fraction < 1.0 - self.tolerance:
            raise ValueError(
                f"learned_fraction={self.learned_fraction} must be in (0, 1 - tolerance): "
                "below the chance band, or no run could ever count as having learned"
            )


class CollapseGuard:
    """One per task. ``update`` after every training step of the task; ``check_*`` raise."""

    def __init__(
        self, cfg: CollapseConfig, task: str, labels: list[str], chance: float, peak_lr: float
    ) -> None:
        self.cfg, self.task, self.labels, self.chance = cfg, task, labels, chance
        self.peak_lr = peak_lr
        self.recent: deque[tuple[float, int]] = deque(maxlen=cfg.window)
        self.best = float("inf")  # lowest mean training loss over a full window so far

    def state_dict(self) -> dict:
        """The window and the best windowed loss (whether the run ever learned), for exact
        resume."""
        return {"recent": list(self.recent), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(tuple(x) for x in state["recent"])
        self.best = float(state["best"])

    def update(self, loss: float, counts: np.ndarray) -> None:
        """``counts``: how often each class was predicted over the step's labelled items."""
        classes = np.flatnonzero(counts)
        self.recent.append((loss, int(classes[0]) if len(classes) == 1 else -1))
        if len(self.recent) == self.cfg.window:
            self.best = min(self.best, float(np.mean([v for v, _ in self.recent])))

    @property
    def has_learned(self) -> bool:
        return self.best < self.cfg.learned_fraction * self.chance

    def _at_chance(self, loss: float) -> bool:
        return loss >= (1.0 - self.cfg.tolerance) * self.chance

    def _patience_over(self, step: int, start: int) -> bool:
        """``start``: the first step a verdict may come (min_steps, after warm-up)."""
        return step >= (start if self.has_learned else max(start, self.cfg.stall_steps))

    def check_training(self, step: int, lr: float, start: int) -> None:
        if not self.cfg.enabled or len(self.recent) < self.cfg.window:
            return
        if not self._patience_over(step, start):
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
        if not self.cfg.enabled or not self._patience_over(step, start):
            return
        self._check_dev(step, lr, loss, counts, "every dev prediction")

    def check_final(self, step: int, lr: float, dev: dict) -> str | None:
        """The model about to be exported (the best dev step's). One that predicts one class on
        every dev item at chance loss stops the run when the run had learned or has run
        ``stall_steps``; after a shorter run that never started, the same verdict comes back as a
        warning to log instead. ``dev``: its dev metrics (``loss`` and ``confusion_matrix``, rows
        truth, columns prediction; a kind without one, multi-label, is not judged here)."""
        if not self.cfg.enabled or dev.get("loss") is None or "confusion_matrix" not in dev:
            return None
        counts = np.asarray(dev["confusion_matrix"]).sum(0)
        lead = "at the best dev step, every dev prediction"
        if self.has_learned or step >= self.cfg.stall_steps:
            self._check_dev(step, lr, dev["loss"], counts, lead)
            return None
        try:
            self._check_dev(step, lr, dev["loss"], counts, lead)
        except DivergenceError as e:
            return (
                f"the exported model of task '{self.task}' has not learned yet: {lead} is "
                f"'{self.labels[int(np.flatnonzero(counts)[0])]}' at chance loss after {step} "
                f"steps (a run is only stopped for this after {self.cfg.stall_steps}). Train "
                f"longer, or see: {e}"
            )
        return None

    def _check_dev(self, step: int, lr: float, loss: float, counts: np.ndarray, lead: str) -> None:
        classes = np.flatnonzero(counts)
        if counts.sum() == 0 or len(classes) > 1 or not self._at_chance(loss):
            return
        what = (
            f"{lead} of task '{self.task}' is '{self.labels[int(classes[0])]}', and the dev loss "
            f"{loss:.3f}"
        )
        raise DivergenceError(self._message(step, lr, what))

    def _message(self, step: int, lr: float, what: str) -> str:
        peak = f"train.lr={self.peak_lr:g}"
        if self.has_learned:
            state = (
                f"training collapsed at step {step} (learning rate {lr:.2e}, peak {peak}): "
                f"{what} is no better than predicting the class frequencies (chance level "
                f"{self.chance:.3f}), after the training loss had reached {self.best:.3f}. The "
                "model has stopped learning."
            )
        else:
            state = (
                f"training collapsed at step {step} (learning rate {lr:.2e}, peak {peak}): "
                f"{what} is no better than predicting the class frequencies (chance level "
                f"{self.chance:.3f}), and it never was in {step} steps. The model has not "
                "learned anything."
            )
        if self.peak_lr > 2e-4:
            fix = f"lower {peak} (try 1e-4 or below; {USUAL_LR})"
        else:
            fix = (
                "check that the labels belong to the texts and that the tokenizer matches the data "
                "(see the unknown-token count logged at the start); a model trained from scratch "
                f"may need more steps (train.epochs) or another {peak} ({USUAL_LR})"
            )
        return (
            f"{state} Likely fix: {fix}; keep train.warmup_fraction > 0 and train.grad_clip on. "
            "No model was exported for this run."
        )
