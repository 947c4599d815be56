"""Stop a diverging run early, with a message that says what to change.

Hyperparameters are where people fail: a write-up fine-tuned BERT at learning rate 0.01 and got
a broken model without noticing. The guard watches the training loss and raises
`DivergenceError` — before the next checkpoint or the final model is written — when the loss is
not finite, or when its moving average climbs well above the best it has reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptm.errors import DivergenceError

__all__ = ["DivergenceError", "DivergenceGuard", "GuardConfig"]


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    enabled: bool
    blowup_factor: float  # stop when the loss average exceeds this x its best so far
    min_steps: int  # the average needs this many steps before a blow-up counts
    ema: float


class DivergenceGuard:
    def __init__(self, cfg: GuardConfig) -> None:
        self.cfg = cfg
        self.average: float | None = None
        self.best = math.inf
        self.seen = 0

    def state_dict(self) -> dict[str, float]:
        return {
            "average": self.average if self.average is not None else math.nan,
            "best": self.best,
            "seen": self.seen,
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.average = None if math.isnan(state["average"]) else float(state["average"])
        self.best, self.seen = float(state["best"]), int(state["seen"])

    def check(self, step: int, loss: float, lr: float) -> None:
        if not self.cfg.enabled:
            return
        if not math.isfinite(loss):
            raise DivergenceError(self._message(step, lr, f"the loss is {loss}"))
        self.seen += 1
        a = self.cfg.ema
        self.average = loss if self.average is None else a * self.average + (1 - a) * loss
        if self.seen < self.cfg.min_steps:
            return
        self.best = min(self.best, self.average)
        if self.average > self.cfg.blowup_factor * self.best:
            raise DivergenceError(
                self._message(
                    step,
                    lr,
                    f"the loss average rose to {self.average:.3f} from a best of {self.best:.3f}",
                )
            )

    @staticmethod
    def _message(step: int, lr: float, what: str) -> str:
        return (
            f"training diverged at step {step} (learning rate {lr:.2e}): {what}. "
            f"Likely fix: lower train.lr (try {lr / 10:.0e}), lengthen train.warmup_fraction, keep "
            f"train.grad_clip on, or use bf16 rather than fp16. No model was exported for this run."
        )
