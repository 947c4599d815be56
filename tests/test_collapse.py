"""The collapse check tells a model that has not started learning from one that has collapsed.

The trajectories are the shapes measured on the embedded reviews (2 classes, chance loss ln 2):
from random weights at 1e-4, BERT-mini predicted one class at chance loss for its first few
hundred steps and then learned; at 0.01 a model that had learned fell back to one class.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptm.config import from_conf
from ptm.errors import DivergenceError
from ptm.tasks.collapse import CollapseConfig, CollapseGuard

CHANCE = math.log(2)
ONE_CLASS = np.array([32, 0])  # a batch of 32 all predicted as class 0
BOTH = np.array([20, 12])


def guard(**overrides) -> CollapseGuard:
    values = {"min_steps": 100, "window": 50, "stall_steps": 1000, **overrides}
    cfg = from_conf(CollapseConfig, "finetune", "train.collapse", **values)
    return CollapseGuard(cfg, "sentiment", ["0", "1"], CHANCE, peak_lr=1e-4)


def feed(g: CollapseGuard, start: int, steps: int, loss: float, counts: np.ndarray) -> int:
    """``steps`` training steps at ``loss``, each checked as the fine-tuning loop does."""
    for step in range(start, start + steps):
        g.update(loss, counts)
        g.check_training(step, 1e-4, start=100)
    return start + steps


def test_a_model_that_has_not_started_learning_is_left_alone() -> None:
    """The false alarm of the issue: one class at chance for 400 steps, then learning."""
    g = guard()
    step = feed(g, 0, 400, CHANCE * 1.001, ONE_CLASS)
    g.check_eval(step, 1e-4, 100, CHANCE, ONE_CLASS * 50)  # a dev evaluation then: no verdict
    feed(g, step, 300, 0.35, BOTH)
    assert g.has_learned


def test_a_model_that_learned_and_fell_back_to_one_class_is_stopped_at_once() -> None:
    g = guard()
    step = feed(g, 0, 150, 0.4, BOTH)
    assert g.has_learned
    with pytest.raises(DivergenceError) as caught:
        feed(g, step, 100, CHANCE, ONE_CLASS)
    message = str(caught.value)
    # The window holds >= 90% one-class batches 45 steps into the collapse.
    assert "training collapsed at step 194" in message
    assert "after the training loss had reached 0.400" in message


def test_a_model_that_never_learns_is_stopped_after_the_stall_steps() -> None:
    g = guard(stall_steps=300)
    with pytest.raises(DivergenceError, match=r"at step 300 .* never was in 300 steps"):
        feed(g, 0, 400, CHANCE, ONE_CLASS)


def test_a_collapsed_dev_evaluation_counts_only_once_the_patience_is_over() -> None:
    g = guard(stall_steps=300)
    feed(g, 0, 200, CHANCE, ONE_CLASS)
    g.check_eval(200, 1e-4, 100, CHANCE, np.array([900, 0]))  # never learned, 200 < 300
    with pytest.raises(DivergenceError, match="every dev prediction of task 'sentiment' is '0'"):
        g.check_eval(300, 1e-4, 100, CHANCE, np.array([900, 0]))


def test_the_model_to_export_must_not_be_one_class_at_chance() -> None:
    """After a run that had learned, or one that ran its stall steps, a one-class model at
    chance is not exported; after a short run that never started it comes with a warning."""
    useless = {"loss": CHANCE, "confusion_matrix": [[500, 0], [400, 0]]}
    learned = guard()
    feed(learned, 0, 60, 0.4, BOTH)
    with pytest.raises(DivergenceError, match="at the best dev step, every dev prediction"):
        learned.check_final(60, 0.0, useless)
    stalled = guard(stall_steps=50)
    feed(stalled, 0, 49, CHANCE * 1.001, ONE_CLASS)
    with pytest.raises(DivergenceError, match="never was in 60 steps"):
        stalled.check_final(60, 0.0, useless)
    short = guard()
    feed(short, 0, 60, CHANCE, ONE_CLASS)  # a short run: no training verdict was possible
    warning = short.check_final(60, 0.0, useless)
    assert warning and "has not learned yet" in warning and "'0' at chance loss" in warning
    for g in (learned, short):
        assert (
            g.check_final(60, 0.0, {"loss": CHANCE, "confusion_matrix": [[400, 100], [300, 100]]})
            is None
        )
        assert (
            g.check_final(60, 0.0, {"loss": 0.3, "confusion_matrix": [[500, 0], [400, 0]]}) is None
        )


def test_learned_fraction_must_lie_below_the_chance_band() -> None:
    with pytest.raises(ValueError, match="learned_fraction"):
        from_conf(
            CollapseConfig, "finetune", "train.collapse", learned_fraction=0.97, tolerance=0.05
        )


def test_a_resumed_guard_remembers_that_the_run_had_learned() -> None:
    """Its state (the window and the best windowed loss) goes through a checkpoint: a run that
    learned, stopped and resumed is stopped at once when it then collapses, as the run that never
    stopped is — not left to the stall steps as a run that never learned."""
    g = guard()
    step = feed(g, 0, 150, 0.4, BOTH)
    resumed = guard()
    resumed.load_state_dict(g.state_dict())
    assert resumed.has_learned and list(resumed.recent) == list(g.recent)
    with pytest.raises(DivergenceError, match="training collapsed at step 194"):
        feed(resumed, step, 100, CHANCE, ONE_CLASS)
