"""Cross-validation: ``python -m finetune cv.folds=5`` fine-tunes one model per fold and scores
them the way competitors trust.

Every task's training file is cut into ``cv.folds`` stratified folds (`ptm.tasks.loading.
fold_of_rows`, seeded by ``cv.seed``). Fold ``k``'s run — ``<run>/fold-<k>``, a fine-tuning run
of its own, resumable as any — trains on the other folds and predicts fold ``k``. Its dev split
is the task's dev file when it has one (every fold selects its best step on the same rows);
without one, fold ``k`` selects on its own held-out part. Then:

* **out-of-fold** (``oof``): every training row predicted by the one model that did not train on
  it, scored with the task's metric over the whole training file — the estimate of what a model
  trained this way scores on new data, from every row rather than one dev split;
* **the submission**: the test file's class probabilities averaged over the folds
  (`finetune.ensemble`), written as a run writes its own, and scored where the answers are known.

A CV run continued with ``resume=<its folder>`` reuses the folds that finished and resumes the
one that stopped. ``cv.fold=k`` runs fold ``k`` alone: on a cluster, one job per fold, each into
``hydra.run.dir=<cv folder>/fold-<k>``; ``resume=<cv folder>`` with ``cv.folds`` then finds them
all finished and collects. For tasks with one label per text (`TaskKind.averaged`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import FinetuneConfig
from finetune.ensemble import average, nll
from finetune.train import load_tasks, run
from ptm.errors import InputError
from ptm.records import RECORD, RunClock, plain, write_record
from ptm.tasks.inference import Prediction
from ptm.tasks.splits import TaskData
from ptm.tasks.submission import ZIP_NAME, read_probabilities, zip_submissions
from ptm.training import dist, loop
from ptm.training.checkpoint import list_checkpoints
from ptm.training.rundir import point_latest
from ptm.training.stop import Stopped

log = logging.getLogger(__name__)
FOLD_DIR = "fold-{}"


def run_folds(cfg: FinetuneConfig) -> dict:
    """Every fold's run (finished ones reused, a stopped one resumed), then `collect`."""
    if dist.world_size() > 1:
        raise InputError(
            None,
            "cross-validation runs its folds one after another in one process",
            "start it without torchrun, or run each fold with torchrun as cv.fold=k "
            "hydra.run.dir=<cv run>/fold-k, then collect them with cv.folds=K resume=<cv run>",
        )
    started = RunClock.start()
    run_dir = Path(cfg.run_dir)
    folds = []
    for k in range(cfg.cv.folds):
        fold_dir = run_dir / FOLD_DIR.format(k)
        folds.append(fold_dir)
        if (fold_dir / "metrics.json").is_file():
            log.info("cv: fold %d of %d finished before: %s", k + 1, cfg.cv.folds, fold_dir)
            continue
        log.info("cv: fold %d of %d -> %s", k + 1, cfg.cv.folds, fold_dir)
        resume = fold_dir if list_checkpoints(fold_dir / "checkpoints") else None
        fold = dataclasses.replace(cfg.cv, fold=k)
        try:
            run(dataclasses.replace(cfg, cv=fold, run_dir=fold_dir, resume=resume))
        except Stopped as e:  # continuing the CV run continues this fold
            raise e.resumed_in(run_dir) from e
    return collect(cfg, folds, started)


def collect(cfg: FinetuneConfig, folds: list[Path], started: RunClock) -> dict:
    """The out-of-fold scores and the fold-averaged submission of finished fold runs, written to
    ``metrics.json`` (``oof``, ``test``, each fold's own scores) and ``record.json`` in the CV
    run's folder, the submission under its ``predictions/``."""
    run_dir = Path(cfg.run_dir)
    # Every training row, none held out as dev (a task without a dev file would hold 10% out:
    # read that file as dev instead, which nothing here uses).
    whole = [dataclasses.replace(t, dev=t.dev or t.train, train_rows=None) for t in cfg.tasks]
    # Read with the first fold's model folder (its tokenizer and positions): the base model the
    # folds started from may have moved since.
    model = dataclasses.replace(cfg.model, path=folds[0] / "model", tokenizer=None)
    _, _, tasks = load_tasks(dataclasses.replace(cfg, tasks=whole, model=model))
    out: dict[str, Any] = {"folds": len(folds), "seed": cfg.cv.seed, "tasks": {}}
    dev_files = {t.name: t.dev for t in cfg.tasks}
    jsonl = []
    for task in tasks:
        entry = {"metric": task.kind.metric, "metric_label": task.kind.metric_label}
        # Without a dev file each fold also selected its best step on its held-out part: the
        # out-of-fold score then leans optimistic, as any score on a selection set does.
        entry["selected_on"] = "the dev file" if dev_files[task.name] else "each held-out fold"
        entry["oof"] = out_of_fold(task, folds)
        test = average(task, folds, "probabilities.csv", run_dir / "predictions" / task.name)
        if test is not None:
            entry.update(test)
            if "submission_jsonl" in test["predictions"]:
                jsonl.append(test["predictions"]["submission_jsonl"])
        entry["folds"] = [_fold_scores(fold, task.name) for fold in folds]
        out["tasks"][task.name] = entry
        _log_scores(task, entry)
    bundle = zip_submissions(run_dir / "predictions" / ZIP_NAME, jsonl)
    if bundle:
        out["submission_zip"] = bundle
    loop.write_metrics(run_dir, {"cv": out})
    point_latest(run_dir)  # finetune.predict with run=<this> predicts with every fold
    write_record(run_dir / RECORD, kind="cv", config=plain(cfg), metrics={"cv": out}, clock=started)
    log.info("cv: metrics in %s", run_dir / "metrics.json")
    return {"cv": out}


def out_of_fold(task: TaskData, folds: list[Path]) -> dict:
    """Every training row's class probabilities from the fold that held it out, scored with the
    task's metric over the whole training file."""
    train = task.splits["train"]
    at = {int(line): i for i, line in enumerate(train.lines)}
    probs = np.full((train.n_rows, len(task.labels)), np.nan)
    for fold in folds:
        path = fold / "predictions" / task.name / "oof_probabilities.csv"
        if not path.is_file():
            raise InputError(path, "no out-of-fold predictions", "run the fold to its end first")
        lines, p = read_probabilities(path, task.labels)
        rows = [at.get(int(line), -1) for line in lines]
        if min(rows, default=0) < 0 or not np.isnan(probs[rows, 0]).all():
            raise InputError(
                path,
                "its rows are not a fold of this training file's (another file, cv.folds or "
                "cv.seed)",
                "collect folds of one cross-validation run",
            )
        probs[rows] = p
    missing = int(np.isnan(probs[:, 0]).sum())
    if missing:
        raise InputError(
            folds[0].parent,
            f"{missing} training rows of task {task.name} are in no fold's predictions",
            "run every fold (cv.fold=0 .. cv.folds-1) before collecting",
        )
    truth = train.row_labels()
    prediction = Prediction(
        nll(probs, truth), np.bincount(probs.argmax(1), minlength=len(task.labels)), probs=probs
    )
    return task.kind.score(task, train, prediction, {})


def _fold_scores(fold: Path, task: str) -> dict:
    entry = json.loads((fold / "metrics.json").read_text())["tasks"][task]
    metric = entry["metric"]
    return {s: entry[s][metric] for s in ("dev", "test") if s in entry}


def _log_scores(task: TaskData, entry: dict) -> None:
    metric = task.kind.metric
    folds = [f["dev"] for f in entry["folds"]]
    log.info(
        "cv %s: out-of-fold %s %.4f over %d rows (fold dev %s)%s",
        task.name,
        metric,
        entry["oof"][metric],
        task.splits["train"].n_rows,
        " ".join(f"{x:.4f}" for x in folds),
        f"; fold-averaged test {entry['test'][metric]:.4f}" if "test" in entry else "",
    )
