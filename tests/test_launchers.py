"""Cluster launchers: a sweep through Hydra's submitit launcher runs end to end on this machine
(``+launcher=local``, each job its own process), and the SLURM preset (``+launcher=slurm``)
writes the batch script a cluster expects — checked by a stand-in ``sbatch`` that keeps the
script and refuses it, as there is no cluster here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ptm.config import from_conf
from sweeps.summary import SummaryConfig, run
from tests.conftest import run_module, tiny_pretrain_overrides, write_corpus
from tests.finetune_helpers import run_finetune_sweep, the_sweep


def test_a_submitit_sweep_runs_each_job_in_its_own_process(tmp_path: Path) -> None:
    result = run_finetune_sweep(
        tmp_path,
        "+launcher=local",
        "train.epochs=1",
        "train.batch_size=16,1000",  # 1000 > 160 examples: that job fails, the sweep goes on
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Submitit 'local' sweep output dir" in result.stdout
    sweep = the_sweep(tmp_path)
    summary = run(
        from_conf(
            SummaryConfig, "summary", overrides=(f"paths.output_dir={tmp_path}",), dir=str(sweep)
        )
    )
    assert [(j.name, j.status) for j in summary.jobs] == [("0", "ok"), ("1", "failed")]
    assert "fewer than train.batch_size=1000" in summary.jobs[1].error
    assert summary.best_model == sweep / "0" / "model"
    # submitit's own record of each job: its pickled result and the job process's log.
    results = sorted(sweep.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 2 and len(list(sweep.glob(".submitit/*/*_log.out"))) == 2


def test_the_slurm_preset_asks_for_one_gpu_per_job(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "job.sh"
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: error: no cluster here" >&2\nexit 1\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that srun exists
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    result = run_module(
        "finetune", "-m", "+launcher=slurm",
        "hydra.launcher.partition=gpu-test", f"paths.output_dir={tmp_path}",
        "train.lr=1e-4,2e-4,3e-4",
        timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode != 0 and "sbatch: error: no cluster here" in result.stderr
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script.read_text(), flags=re.M))
    assert flags["array"] == "0-2%3"  # the three jobs of the sweep, as one job array
    assert flags["partition"] == "gpu-test"
    assert flags["gpus-per-node"] == "1" and flags["ntasks-per-node"] == "1"
    assert flags["time"] == "240" and flags["job-name"] == "finetune"
    # submitit's warning before the limit, which a job answers with a checkpoint and a requeue.
    assert flags["signal"] == "USR2@120" and "--requeue" not in flags
    sweep = the_sweep(tmp_path)
    assert flags["output"].startswith(f"{sweep}/.submitit/")
    assert re.search(r"^srun .* -m submitit\.core\._submit ", script.read_text(), flags=re.M)


@pytest.mark.slow
def test_a_job_at_its_time_limit_checkpoints_requeues_and_resumes(tmp_path: Path) -> None:
    """A pretraining job longer than its time limit, under submitit as on SLURM: the signal
    before the limit (30 s before it, locally) makes it write a checkpoint and requeue itself;
    the requeued job continues from that checkpoint in the same folder (conf/launcher/local.yaml
    sets resume to it) and ends. 36 s of training under a 1-minute limit: two or three jobs."""
    corpus = write_corpus(tmp_path / "corpus.txt", 120, words=True)
    result = run_module(
        "pretrain", "-m", "+launcher=local", "hydra.launcher.timeout_min=1",
        *tiny_pretrain_overrides(tmp_path, corpus),
        "train.max_steps=null", "train.max_minutes=0.6", "train.save_every=1000000",
        "train.eval_every=1000000", "train.log_every=500",
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = (tmp_path / "out" / "pretrain-multirun").glob("*/0")
    log = "".join(p.read_text() for p in sorted(job.glob("../.submitit/*/*_log.*")))
    assert "SIGUSR2 received: writing a checkpoint" in log and "Requeued job" in log, log[-3000:]
    assert re.search(r"resumed from .*/0/checkpoints/step-\d+\.pt at step [1-9]", log), log
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["steps"] > 0 and (job / "model" / "model.safetensors").is_file()
