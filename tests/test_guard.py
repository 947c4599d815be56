"""The divergence guard: a non-finite loss or a loss average that climbs well above its best
stops the run with a message naming the step, the learning rate and the fix
(`ptm.training.guard`)."""

from __future__ import annotations

import math

import pytest

from ptm.config import from_conf
from ptm.errors import DivergenceError
from ptm.training.guard import DivergenceGuard, GuardConfig


def guard(**values) -> DivergenceGuard:
    """The pretraining guard (conf/train/mlm.yaml) with ``values`` changed."""
    return DivergenceGuard(from_conf(GuardConfig, "pretrain", "train.guard", **values))


def test_a_non_finite_loss_stops_at_once_with_the_fix() -> None:
    g = guard(min_steps=100)
    g.check(1, 2.0, 1e-3)
    for bad in (math.nan, math.inf):
        with pytest.raises(DivergenceError) as e:
            g.check(2, bad, 1e-3)
        message = str(e.value)
        assert message.startswith(
            f"training diverged at step 2 (learning rate 1.00e-03): the loss is {bad}"
        )
        assert "try 1e-04" in message and "No model was exported" in message


def test_a_blow_up_counts_only_after_min_steps() -> None:
    g = guard(min_steps=3, ema=0.0, blowup_factor=1.5)  # ema 0: the average is the last loss
    for step, loss in enumerate([1.0, 10.0, 1.0, 1.2, 1.4], start=1):
        g.check(step, loss, 1e-4)  # 10.0 comes before min_steps; 1.4 < 1.5 x 1.0
    assert g.best == 1.0
    with pytest.raises(DivergenceError, match=r"step 6 .* rose to 1\.600 from a best of 1\.000"):
        g.check(6, 1.6, 1e-4)


def test_the_average_is_an_exponential_moving_average() -> None:
    g = guard(min_steps=1, ema=0.9, blowup_factor=100.0)
    for loss in (4.0, 2.0, 2.0):
        g.check(0, loss, 1e-4)
    assert g.average == pytest.approx(0.9 * (0.9 * 4.0 + 0.1 * 2.0) + 0.1 * 2.0)
    assert g.best == pytest.approx(g.average)


def test_a_disabled_guard_never_stops() -> None:
    g = guard(enabled=False, min_steps=1)
    for step, loss in enumerate([1.0, 1000.0, math.nan]):
        g.check(step, loss, 1.0)
    assert g.seen == 0 and g.average is None


def test_a_restored_guard_goes_on_as_the_original() -> None:
    """Resuming restores the average, the best and the step count, a fresh guard included."""
    fresh = guard(min_steps=2, ema=0.5)
    restored = guard(min_steps=2, ema=0.5)
    restored.load_state_dict(fresh.state_dict())  # NaN stands for "no average yet"
    assert restored.average is None and restored.best == math.inf
    original = guard(min_steps=2, ema=0.5)
    for step, loss in enumerate([3.0, 2.0, 2.5], start=1):
        original.check(step, loss, 1e-4)
    restored.load_state_dict(original.state_dict())
    for g in (original, restored):
        g.check(4, 2.2, 1e-4)
    assert restored.state_dict() == original.state_dict()
    with pytest.raises(DivergenceError):
        restored.check(5, 100.0, 1e-4)
