"""Fine-tuning checkpoints and exact resume: a run killed with SIGKILL mid-epoch, or stopped by
SIGTERM, and resumed ends with the same dev and test metrics, submission and exported weights as a
run never stopped; a damaged newest checkpoint is skipped for the newest intact one."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.train import run
from ptm.errors import InputError
from ptm.training.stop import EXIT_RESUMABLE
from tests.conftest import run_module
from tests.finetune_helpers import (
    finetune_config,
    finetune_overrides,
    task_overrides,
    tiny_model_dir,
    write_classification,
)

# 160 rows / 16 = 10 steps an epoch, 3 epochs; dev evaluated every 4 steps, a checkpoint every 3
# (the newest 2 kept), 2 micro-batches a step: accumulation, dropout and the best-so-far state
# all have to survive the kill. The tiny task is learnt early (dev macro-F1 1.0), so every
# evaluation counts as better (min_delta -1): the exported weights are then the last step's and
# depend on every step after the resume.
SCHEDULE = (
    "train.epochs=3",
    "train.eval_every=4",
    "train.save_every=3",
    "train.micro_batch_size=8",
    "train.min_delta=-1",
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tiny_model_dir(tmp_path / "base")


def task(tmp_path: Path) -> list[str]:
    files = write_classification(tmp_path / "data")
    return task_overrides("cls", files, "classification", max_seq_len=64)


def outcome(run_dir: Path) -> dict:
    """Everything a run leaves that must not depend on having been interrupted."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    entry = metrics["tasks"]["cls"]
    return {
        "best": metrics["best"],
        "steps": metrics["steps"],
        "stopped": metrics["stopped"],
        "history": metrics["history"],
        "dev": entry["dev"],
        "test": entry["test"],
        "submission": (run_dir / "predictions" / "cls" / "submission.csv").read_text(),
        "probabilities": (run_dir / "predictions" / "cls" / "probabilities.csv").read_text(),
    }


def same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "heads.safetensors"):
        wa, wb = load_file(a / "model" / name), load_file(b / "model" / name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_a_run_killed_mid_epoch_resumes_to_the_same_metrics_and_weights(
    tmp_path: Path, model_dir: Path
) -> None:
    overrides = [*task(tmp_path), *SCHEDULE]
    straight = tmp_path / "straight"
    run(finetune_config(tmp_path, model_dir, straight, *overrides))

    # SIGKILL right after the 14th optimizer step: mid-epoch 2, the newest checkpoint at step 12.
    killed = tmp_path / "killed"
    args = [*finetune_overrides(tmp_path, model_dir, *overrides), f"hydra.run.dir={killed}"]
    result = run_module(
        "tests.sigkill", "14", "ptm.training.loop.optimizer_step", "finetune", *args
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (killed / "model").exists() and not (killed / "metrics.json").exists()
    assert [p.name for p in sorted((killed / "checkpoints").glob("*.pt"))] == [
        "step-00000009.pt",
        "step-00000012.pt",
    ]

    result = run_module("finetune", *args, f"resume={killed}")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "resumed from" in output and "step-00000012.pt at step 12" in output
    assert json.loads((killed / "metrics.json").read_text())["resumed_at"] == 12
    assert outcome(killed) == outcome(straight)
    same_weights(killed, straight)


def test_sigterm_mid_epoch_saves_at_the_next_step_and_resumes_to_the_same_outcome(
    tmp_path: Path, model_dir: Path
) -> None:
    """What a scheduler's SIGTERM does: the run finishes the step it is in, writes a checkpoint
    at step 14 (none was due), exits with 75, and its resume ends as the straight run."""
    overrides = [*task(tmp_path), *SCHEDULE]
    straight = tmp_path / "straight"
    run(finetune_config(tmp_path, model_dir, straight, *overrides))

    stopped = tmp_path / "stopped"
    args = [*finetune_overrides(tmp_path, model_dir, *overrides), f"hydra.run.dir={stopped}"]
    result = run_module(
        "tests.sigkill", "SIGTERM", "14", "ptm.training.loop.optimizer_step", "finetune", *args
    )
    assert result.returncode == EXIT_RESUMABLE, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"stopped: stopped by SIGTERM at step 14, checkpoint {stopped / 'checkpoints'}")
    )
    assert [p.name for p in sorted((stopped / "checkpoints").glob("*.pt"))] == [
        "step-00000012.pt",
        "step-00000014.pt",
    ]
    assert not (stopped / "model").exists()

    result = run_module("finetune", *args, f"resume={stopped}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((stopped / "metrics.json").read_text())["resumed_at"] == 14
    assert outcome(stopped) == outcome(straight)
    same_weights(stopped, straight)


def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*task(tmp_path), *SCHEDULE]
    straight = tmp_path / "straight"
    run(finetune_config(tmp_path, model_dir, straight, *overrides))
    again = tmp_path / "again"
    (again / "checkpoints").mkdir(parents=True)
    for step in (27, 30):  # the two the finished run kept; the newest is then cut in half
        name = f"step-{step:08d}.pt"
        data = (straight / "checkpoints" / name).read_bytes()
        (again / "checkpoints" / name).write_bytes(data if step == 27 else data[: len(data) // 2])

    run(finetune_config(tmp_path, model_dir, again, *overrides, f"resume={again}"))
    assert "step-00000030.pt is damaged" in caplog.text and "skipped" in caplog.text
    metrics = json.loads((again / "metrics.json").read_text())
    assert metrics["resumed_at"] == 27
    assert outcome(again) == outcome(straight)
    same_weights(again, straight)


def test_resuming_with_another_model_or_no_intact_checkpoint_is_one_line(
    tmp_path: Path, model_dir: Path
) -> None:
    overrides = [*task(tmp_path), "train.epochs=1"]
    first = tmp_path / "first"
    run(finetune_config(tmp_path, model_dir, first, *overrides))
    other = tiny_model_dir(tmp_path / "other", max_positions=128)
    with pytest.raises(InputError, match="the checkpoint does not fit this run's model"):
        run(finetune_config(tmp_path, other, tmp_path / "x", *overrides, f"resume={first}"))
    for saved in (first / "checkpoints").glob("*.pt"):
        saved.write_bytes(saved.read_bytes()[:64])
    with pytest.raises(InputError, match="no checkpoint here loads — start anew without resume="):
        run(finetune_config(tmp_path, model_dir, tmp_path / "y", *overrides, f"resume={first}"))
