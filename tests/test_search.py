"""Optuna search (``+search=optuna``): a real study over the tiny fine-tuning task maximises the
dev score the sweep summary ranks by and goes on past a diverging trial; the preset's search
space is one Optuna accepts, over keys the fine-tuning config has."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf
from optuna.distributions import LogUniformDistribution

from ptm.config import PathsConfig
from sweeps.summary import SummaryConfig, run
from tests.conftest import CONF_DIR, compose_config
from tests.finetune_helpers import run_finetune_sweep, the_sweep

PRESET = Path(CONF_DIR) / "search" / "optuna.yaml"


def test_a_study_maximises_the_dev_score_and_survives_a_diverging_trial(tmp_path: Path) -> None:
    # The grid sampler tries every value once, so the test knows which trials there are; the
    # rest (direction, storage, failure handling) is the preset's.
    result = run_finetune_sweep(
        tmp_path,
        "+search=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params=null",
        "train.lr=choice(1e-5,2e-3,1e4)",
        "train.batch_size=16",
        "train.grad_clip=0",
        "train.guard.min_steps=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = the_sweep(tmp_path)
    assert not (sweep / "multirun.yaml").exists()  # the grid sweeper's file: Optuna writes none
    assert not (sweep / "latest").exists()  # yet the jobs know they are a sweep's

    summary = run(SummaryConfig(PathsConfig(output_dir=tmp_path)))  # the newest sweep: this one
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


def test_the_search_space_is_optuna_distributions_over_real_keys() -> None:
    params = yaml.safe_load(PRESET.read_text())["hydra"]["sweeper"]["params"]
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed and set(space) == set(params)
    assert isinstance(space["train.lr"], LogUniformDistribution)
    cfg = compose_config("finetune", ["+search=optuna"])
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, f"{PRESET.name}: no key {key} in finetune"
