"""Optuna search (``+search=optuna``, ``+search=optuna_pretrain``): real studies over the tiny
fine-tuning and pretraining tasks optimise the target the sweep summary ranks by, in the right
direction, and go on past a diverging trial; the search spaces are ones Optuna accepts, over keys
the configs have."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf
from optuna.distributions import LogUniformDistribution

from ptm.config import from_conf
from sweeps.summary import SummaryConfig, run
from tests.conftest import CONF_DIR, compose_config, tiny_pretrain_sweep
from tests.finetune_helpers import run_finetune_sweep, the_sweep

# Three trials of a three-way choice that draw each value once: optuna 2.10's random sampler with
# this seed draws the choices' indices 1, 0, 2. (The grid sampler would too, but with it the
# plugin crashes when the last trial it reports is a failed one: GridSampler then calls
# Study.stop outside an optimize loop.)
EACH_VALUE_ONCE = (
    "hydra/sweeper/sampler=random",
    "hydra.sweeper.sampler.seed=1",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.params=null",
)


def test_a_study_maximises_the_dev_score_and_survives_a_diverging_trial(tmp_path: Path) -> None:
    # A seeded random sampler that draws each learning rate once, so the test knows its trials;
    # the rest (direction, storage, failure handling) is the preset's.
    result = run_finetune_sweep(
        tmp_path,
        "+search=optuna",
        *EACH_VALUE_ONCE,
        "train.lr=choice(1e-5,2e-3,1e4)",
        "train.batch_size=16",
        "train.grad_clip=0",
        "train.guard.min_steps=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = the_sweep(tmp_path)
    assert not (sweep / "multirun.yaml").exists()  # the grid sweeper's file: Optuna writes none
    assert not (sweep / "latest").exists()  # yet the jobs know they are a sweep's

    summary = run(
        from_conf(SummaryConfig, "summary", overrides=(f"paths.output_dir={tmp_path}",))
    )  # the newest sweep: this one
    assert summary.sweep.dir == sweep
    jobs = {job.overrides["train.lr"]: job for job in summary.jobs}
    assert sorted(jobs) == ["0.002", "10000.0", "1e-05"]
    assert jobs["10000.0"].status == "failed"
    assert jobs["10000.0"].error.startswith("training diverged at step")
    learned, barely = (jobs[lr].metrics["best.dev_score"] for lr in ("0.002", "1e-05"))
    assert learned > barely  # so a study minimising would have picked the other trial

    study = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert study["best_params"] == {"train.lr": 0.002}
    assert study["best_value"] == learned
    assert summary.best is jobs["0.002"]  # the summary and the study agree


@pytest.mark.parametrize(
    ("preset", "stage"), [("optuna", "finetune"), ("optuna_pretrain", "pretrain")]
)
def test_the_search_space_is_optuna_distributions_over_real_keys(preset: str, stage: str) -> None:
    path = Path(CONF_DIR) / "search" / f"{preset}.yaml"
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed and set(space) == set(params)
    assert isinstance(space["train.lr"], LogUniformDistribution)
    cfg = compose_config(stage, [f"+search={preset}"])
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, f"{path.name}: no key {key} in {stage}"


def test_a_pretraining_study_minimises_the_held_out_loss(tmp_path: Path, corpus: Path) -> None:
    """``+search=optuna_pretrain``: the study's best trial is the one with the lowest held-out
    MLM loss, the target the summary ranks pretraining jobs by; a diverging trial is failed."""
    result = tiny_pretrain_sweep(
        tmp_path,
        corpus,
        "+search=optuna_pretrain",
        *EACH_VALUE_ONCE,
        "train.lr=choice(1e-5,3e-3,1e4)",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "pretrain-multirun").iterdir()
    summary = run(
        from_conf(
            SummaryConfig, "summary", overrides=(f"paths.output_dir={tmp_path}",), dir=str(sweep)
        )
    )
    jobs = {job.overrides["train.lr"]: job for job in summary.jobs}
    assert sorted(jobs) == ["0.003", "10000.0", "1e-05"]
    assert jobs["10000.0"].status == "failed"
    losses = {lr: jobs[lr].metrics["eval/loss"] for lr in ("0.003", "1e-05")}
    best_lr = min(losses, key=losses.__getitem__)
    study = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert study["best_value"] == losses[best_lr]
    assert study["best_params"] == {"train.lr": float(best_lr)}
    assert summary.best is jobs[best_lr]
