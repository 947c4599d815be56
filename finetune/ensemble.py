"""Ensembles: ``python -m finetune.ensemble 'runs=[RUN,RUN,...]'`` averages the class
probabilities of several fine-tuning runs — the folds of a cross-validation, seeds, different
models — into one submission, and scores the ensemble on dev and test where the answers are
known.

Every fine-tuning run of a task with one label per text (`TaskKind.averaged`) leaves its best
model's probabilities: ``predictions/<task>/probabilities.csv`` for the test file (a row per
test row, in order) and ``dev_probabilities.csv`` (each dev row with its file line). The ensemble
is their mean, row by row, decided by its largest entry — what the published top solutions of
the Tianchi news competition submitted. Runs must share the task's labels and test file; dev is
scored only where the runs selected on the same dev rows (cross-validation folds without a dev
file each selected on their own held-out part: ``finetune.cv`` scores those out of fold).

python -m finetune.ensemble 'runs=[outputs/finetune/a,outputs/finetune/b]'
python -m finetune.ensemble 'runs=[outputs/finetune/cv/fold-0,...]' output=outputs/ensemble/mine
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.config import FinetuneConfig
from finetune.train import load_tasks
from ptm.config import PathsConfig, register_resolvers, resolve, to_dataclass
from ptm.errors import InputError, exit_on_input_error
from ptm.records import RECORD, RunClock, write_record
from ptm.tasks.inference import Prediction
from ptm.tasks.splits import TaskData
from ptm.tasks.submission import ZIP_NAME, read_probabilities, zip_submissions
from ptm.training import loop

log = logging.getLogger(__name__)
TEST_FILE, DEV_FILE = "probabilities.csv", "dev_probabilities.csv"


@dataclass(frozen=True, kw_only=True)
class EnsembleConfig:
    paths: PathsConfig
    runs: list[Path]  # fine-tuning run folders (or folds of a cross-validation)
    tasks: list[str] | None  # null: every task the first run has
    run_dir: Path = Path(".")  # Hydra's run folder: the ensemble's outputs; set by the entry point

    def __post_init__(self) -> None:
        if len(self.runs) < 2:
            raise ValueError(f"runs={list(map(str, self.runs))}: give two runs or more")


def run(cfg: EnsembleConfig) -> dict:
    """The ensemble of ``cfg.runs``: ``predictions/<task>/`` (submission and probabilities) and
    ``metrics.json`` / ``record.json`` in ``cfg.run_dir``."""
    started = RunClock.start()
    run_dir = Path(cfg.run_dir)
    first = run_config(cfg.runs[0])
    # Read with the first run's own model folder (its tokenizer and positions): the model it
    # started from may have moved since.
    model = dataclasses.replace(first.model, path=Path(cfg.runs[0]) / "model", tokenizer=None)
    _, _, tasks = load_tasks(dataclasses.replace(first, model=model))
    chosen = [t for t in tasks if cfg.tasks is None or t.name in cfg.tasks]
    if not chosen:
        raise InputError(cfg.runs[0], f"none of the tasks {cfg.tasks}", "name tasks it has")
    out: dict[str, Any] = {"runs": [str(r) for r in cfg.runs], "tasks": {}}
    jsonl = []
    for task in chosen:
        if not task.kind.averaged:
            raise InputError(
                cfg.runs[0],
                f"task {task.name} is of kind {task.kind.name}: not one probability row per text",
                "ensemble classification or pair tasks",
            )
        entry = {"metric": task.kind.metric, "metric_label": task.kind.metric_label}
        entry |= average(task, cfg.runs, TEST_FILE, run_dir / "predictions" / task.name) or {}
        if "submission_jsonl" in entry.get("predictions", {}):
            jsonl.append(entry["predictions"]["submission_jsonl"])
        dev = _dev_score(task, cfg.runs)
        if dev is not None:
            entry["dev"] = dev
        entry["members"] = [_member_scores(r, task.name) for r in cfg.runs]
        out["tasks"][task.name] = entry
        _log(task, entry)
    bundle = zip_submissions(run_dir / "predictions" / ZIP_NAME, jsonl)
    if bundle:
        out["submission_zip"] = bundle
    loop.write_metrics(run_dir, {"ensemble": out})
    write_record(
        run_dir / RECORD, kind="ensemble", config=cfg, metrics={"ensemble": out}, clock=started
    )
    return {"ensemble": out}


def run_config(run_dir: Path) -> FinetuneConfig:
    """The config a fine-tuning run ran with (its ``run.json``)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file() or not (Path(run_dir) / "metrics.json").is_file():
        raise InputError(
            run_dir,
            "not a finished fine-tuning run folder (no run.json or metrics.json)",
            "give runs= the folders of finished runs (the folds of a CV run: <cv run>/fold-k)",
        )
    return to_dataclass(FinetuneConfig, json.loads(path.read_text())["config"])


def average(task: TaskData, runs: list[Path], name: str, out: Path) -> dict | None:
    """The mean of the runs' test probabilities, written as a run writes its own (the
    submission and ``probabilities.csv`` in ``out``), and its test scores where the answers are
    known; None when the task has no test file."""
    if "test" not in task.splits:
        return None
    test = task.splits["test"]
    probs = np.mean(
        [_test_probabilities(r / "predictions" / task.name / name, task) for r in runs], 0
    )
    if len(probs) != test.n_rows:
        raise InputError(
            runs[0] / "predictions" / task.name / name,
            f"{len(probs)} rows for the {test.n_rows} of {test.path}",
            "combine runs of the same test file",
        )
    labels = test.row_labels() if test.has_answers else None
    prediction = _prediction(probs, labels, len(task.labels))
    written = task.kind.write_submission(out, task, prediction, {})
    result: dict[str, Any] = {"predictions": written}
    if labels is not None:
        result["test"] = task.kind.score(task, test, prediction, {})
    return result


def _test_probabilities(path: Path, task: TaskData) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "no such file", "finish the run (it writes it at the end)")
    with path.open() as f:
        header = f.readline().rstrip("\n").split("\t")
    if header != task.labels:
        raise InputError(
            path,
            f"columns {header} are not the labels {task.labels}",
            "combine runs of one task",
            1,
        )
    return np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)


def _dev_score(task: TaskData, runs: list[Path]) -> dict | None:
    """The ensemble's dev scores, when every run predicted the same dev rows."""
    paths = [Path(r) / "predictions" / task.name / DEV_FILE for r in runs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:  # runs made before they wrote their dev probabilities
        log.info("ensemble %s: no dev probabilities in %s: no dev score", task.name, missing)
        return None
    read = [read_probabilities(p, task.labels) for p in paths]
    dev = task.splits["dev"]
    if any(not np.array_equal(lines, dev.lines) for lines, _ in read):
        log.info("ensemble %s: the runs selected on different dev rows: no dev score", task.name)
        return None
    probs = np.mean([p for _, p in read], 0)
    return task.kind.score(task, dev, _prediction(probs, dev.row_labels(), len(task.labels)), {})


def _prediction(probs: np.ndarray, labels: np.ndarray | None, n_labels: int) -> Prediction:
    loss = None if labels is None else nll(probs, labels)
    return Prediction(loss, np.bincount(probs.argmax(1), minlength=n_labels), probs=probs)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (the loss a run reports), from
    probabilities written to six decimals (floored at 1e-6)."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-6, None)).mean())


def _member_scores(run_dir: Path, task: str) -> dict:
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())["tasks"][task]
    metric = metrics["metric"]
    return {"run": str(run_dir), **{s: metrics[s][metric] for s in ("dev", "test") if s in metrics}}


def _log(task: TaskData, entry: dict) -> None:
    metric = task.kind.metric
    members = [m.get("test", m.get("dev")) for m in entry["members"]]
    log.info(
        "ensemble %s of %d runs: %s%s (members %s)",
        task.name,
        len(members),
        f"dev {metric} {entry['dev'][metric]:.4f}" if "dev" in entry else "no dev score",
        f", test {entry['test'][metric]:.4f}" if "test" in entry else "",
        " ".join(f"{m:.4f}" for m in members if m is not None),
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="ensemble")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    data = resolve(cfg)
    data["run_dir"] = HydraConfig.get().runtime.output_dir
    run(to_dataclass(EnsembleConfig, data))


if __name__ == "__main__":
    register_resolvers()
    main()
