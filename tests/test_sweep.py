"""Sweep summaries: real two-stage multiruns end to end (a diverging pretrain job, a fine-tuning
grid with failing jobs), and hand-made sweep folders for the edge cases — incomplete jobs, other
metrics, folders that are not sweeps."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
import yaml

from ptm.config import from_conf
from ptm.errors import InputError
from sweeps.jobs import latest_sweep, read_sweep, summarize
from sweeps.summary import SummaryConfig, run
from tests.conftest import run_module, tiny_pretrain_sweep
from tests.finetune_helpers import run_finetune_sweep, the_sweep


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the summary's markdown table, cells stripped."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_pretrain_sweep_with_a_diverging_job(tmp_path: Path, corpus: Path) -> None:
    sweep_run = tiny_pretrain_sweep(tmp_path, corpus, "train.lr=1e-3,1e4")
    assert sweep_run.returncode == 0, sweep_run.stderr[-2000:]
    (sweep,) = (tmp_path / "pretrain-multirun").iterdir()
    # The diverging job is marked failed in its status.json and exports no model; the other runs.
    ok, failed = (json.loads((sweep / n / "status.json").read_text()) for n in ("0", "1"))
    assert ok == {"status": "ok"} and (sweep / "0" / "model" / "config.json").is_file()
    assert failed["status"] == "failed" and "diverged" in failed["error"]
    assert not (sweep / "1" / "model").exists()

    # No dir=: the newest sweep under the outputs folder, as `make summary` runs it.
    result = run_module(
        "sweeps.summary", f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'log'}",
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout
    assert printed.startswith((sweep / "summary.md").read_text())  # then the log's "written:"
    assert "ranked by `eval/loss` (held-out MLM loss), lower is better" in printed
    assert "`+experiment=tiny`" in printed and "`train.grad_clip=0`" in printed  # shared by both

    header = next(line for line in printed.splitlines() if line.startswith("| job"))
    assert header == "| job | train.lr | eval/loss ↓ | best step | steps | wall | status |"
    ok, failed = table_rows(printed)
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert ok[:5] == ["0", "0.001", f"{metrics['eval/loss']:.4f}", "", "20"]
    assert ok[-1] == "ok"
    assert failed[:2] == ["1", "10000.0"] and failed[2] == ""
    assert failed[-1].startswith("failed: training diverged at step")
    assert (
        f"Best: job 0 (eval/loss {metrics['eval/loss']:.4f}) — model: {sweep / '0' / 'model'}"
        in (printed)
    )

    rows = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert float(rows[0]["eval/loss"]) == metrics["eval/loss"]
    assert rows[0]["model"] == str(sweep / "0" / "model") and rows[1]["model"] == ""
    assert rows[1]["status"] == "failed" and "diverged" in rows[1]["error"]


def test_finetune_sweep_ranks_by_dev_score_failed_jobs_last(tmp_path: Path) -> None:
    sweep_run = run_finetune_sweep(
        tmp_path,
        "train.lr=1e-5,2e-3",
        "train.batch_size=16,1000",  # 1000 > 160 examples: fails
    )
    assert sweep_run.returncode == 0, sweep_run.stderr[-2000:]
    sweep = the_sweep(tmp_path)

    summary = run(
        from_conf(
            SummaryConfig, "summary", overrides=(f"paths.output_dir={tmp_path}",), dir=str(sweep)
        )
    )
    assert summary.sweep.stage == "finetune" and summary.target.mode == "max"
    assert summary.keys == ["train.lr", "train.batch_size"]
    scores = {
        n: json.loads((sweep / n / "metrics.json").read_text())["best"]["dev_score"]
        for n in ("0", "2")
    }
    assert scores["2"] > 0.8 > scores["0"]  # lr 2e-3 learns the marker task, 1e-5 does not
    assert [j.name for j in summary.jobs] == ["2", "0", "1", "3"]
    assert [j.status for j in summary.jobs] == ["ok", "ok", "failed", "failed"]
    assert "fewer than train.batch_size=1000" in summary.jobs[2].error
    assert summary.best_model == sweep / "2" / "model"

    text = (sweep / "summary.md").read_text()
    assert "ranked by `best.dev_score` (dev cls macro-F1), higher is better" in text
    best = table_rows(text)[0]
    assert best[:4] == ["2", "0.002", "16", f"{scores['2']:.4f}"]
    assert best[4] == str(json.loads((sweep / "2" / "metrics.json").read_text())["best"]["step"])


# Hand-made sweeps: what Hydra and the stages leave in a sweep folder, without running them.


def make_job(
    sweep: Path,
    num: int,
    overrides: list[str],
    metrics: dict | None = None,
    status: dict | None = None,
    config: dict | None = None,
) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {"data": {}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
        (job / "model").mkdir()
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    return job


def make_sweep(root: Path, name: str = "2026-01-01_00-00-00") -> Path:
    sweep = root / "pretrain-multirun" / name
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_incomplete_jobs_other_metrics_and_the_latest_sweep(tmp_path: Path) -> None:
    old = make_sweep(tmp_path, "2026-01-01_00-00-00")
    make_job(old, 0, ["train.lr=1"], {"eval/loss": 1.0})
    time.sleep(0.01)
    sweep = make_sweep(tmp_path, "2026-01-02_00-00-00")
    make_job(sweep, 0, ["train.lr=1", "train.seed=1"], {"eval/loss": 3.0, "eval/accuracy": 0.5})
    make_job(sweep, 1, ["train.lr=2", "train.seed=1"], {"eval/loss": 2.0, "eval/accuracy": 0.4})
    make_job(sweep, 2, ["train.lr=3", "train.seed=1"])  # still running: no metrics, no status
    make_job(sweep, 3, ["train.lr=4", "train.seed=1"], status={"status": "failed", "error": "x\ny"})
    make_job(sweep, 10, ["train.lr=5", "train.seed=1"], {"eval/loss": 2.5}, {"status": "ok"})
    (sweep / "latest").symlink_to(sweep / "1", target_is_directory=True)  # as the stages leave it

    assert latest_sweep(tmp_path) == sweep
    summary = summarize(read_sweep(sweep))
    assert [j.name for j in summary.jobs] == ["1", "10", "0", "2", "3"]
    assert [j.status for j in summary.jobs] == ["ok", "ok", "ok", "incomplete", "failed"]
    assert summary.jobs[-1].error == "x"
    assert summary.keys == ["train.lr"]  # the seed is the same everywhere
    assert "Every job: `train.seed=1`" in summary.markdown()
    assert summary.best.name == "1" and summary.best_model == sweep / "1" / "model"

    by_accuracy = summarize(read_sweep(sweep), metric="eval/accuracy")  # mode guessed: max
    assert [j.name for j in by_accuracy.jobs][:3] == ["0", "1", "10"]  # 10 has no accuracy
    assert by_accuracy.target.mode == "max"
    forced = summarize(read_sweep(sweep), metric="eval/accuracy", mode="min")
    assert [j.name for j in forced.jobs][:2] == ["1", "0"]
    assert summary.jobs[3].error == "no result yet (running, or it stopped)"
    with pytest.raises(InputError, match=r"has 'eval/acc' — use one of: eval/accuracy, eval/loss$"):
        summarize(read_sweep(sweep), metric="eval/acc")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", r"missing: no such folder — pass dir="),
        (
            "plain",
            r"plain: not a Hydra multirun sweep \(no multirun.yaml, no job folders\) — pass a",
        ),
        ("job", r"0: not a Hydra multirun sweep .* this is one job of the sweep .*: pass dir="),
        (
            "parent",
            r"pretrain-multirun: not a Hydra .* it is a folder of sweeps: pass one, e.g. dir=",
        ),
        ("empty", r"the sweep has no job folders yet"),
    ],
)
def test_folders_that_are_not_sweeps_are_one_line_errors(
    tmp_path: Path, where: str, message: str
) -> None:
    sweep = make_sweep(tmp_path)
    if where != "empty":
        make_job(sweep, 0, ["train.lr=1"], {"eval/loss": 1.0})
    (tmp_path / "plain").mkdir()
    folder = {
        "missing": tmp_path / "missing",
        "plain": tmp_path / "plain",
        "job": sweep / "0",
        "parent": sweep.parent,
        "empty": sweep,
    }[where]
    with pytest.raises(InputError, match=message) as caught:
        read_sweep(folder)
    assert "\n" not in str(caught.value)


def test_no_sweep_yet_and_a_bad_mode(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no sweep found under \*-multirun/"):
        run(from_conf(SummaryConfig, "summary", overrides=(f"paths.output_dir={tmp_path}",)))
    with pytest.raises(ValueError, match=r"mode='best'; use one of \['min', 'max'\]"):
        from_conf(SummaryConfig, "summary", mode="best")


def test_the_selection_is_named_by_each_tasks_kind() -> None:
    from sweeps.jobs import selection

    both = {
        "tasks.sentiment.metric_label": "macro-F1",
        "tasks.names.metric_label": "entity F1",
        "tasks.names.dev.per_type.PER.metric_label": "not a task entry",
        "selected_on": "dev sentiment macro_f1 / names entity_f1 (mean)",
    }
    assert selection(both) == "dev sentiment macro-F1 / names entity F1 (mean)"
    assert selection({"selected_on": "dev cls macro_f1"}) == "dev cls macro_f1"  # an older run
    assert selection({"eval/loss": 6.0}) is None
