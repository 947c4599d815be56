"""Honest evaluation: does pretraining help on the embedded tasks? (``make report``)

For every task and seed it fine-tunes the pretrained model, fine-tunes the same architecture
from random weights (everything else equal), and fits a classical baseline; then it writes a
markdown table of the median and spread (min-max over seeds) of each task's metric — the one its
kind selects on: macro-F1, entity F1 for names — on the held-out test split, which no run looked
at, with dev beside it. When the pretrained model does not beat the one trained from scratch, the report
says so in as many words.

The classical baseline is the one the task's kind names (`ptm.tasks.baselines`): TF-IDF +
logistic regression for classification (one-vs-rest, a threshold chosen on dev, for multi-label),
a window tagger for tokens. The text and the plot are rendered by `finetune.report_render`.

A label-efficiency curve comes with it (``budgets``): the same comparison on a few hundred or
thousand training rows — where pretraining should show most — each budget a subset of the
training file drawn from the seed (stratified by label for classification; the same rows for
every model of a seed, the baseline included; `ptm.tasks.loading.label_budget`), dev and test
kept whole. A small budget trains for more epochs, at least ``budget_steps`` optimizer steps,
evaluated ``budget_evals`` times. The curve is a table and, where matplotlib is installed, a PNG
beside ``report.md``.

A run that fails (a divergence, bad input) is recorded with its error and the report goes on;
every cell says how many of its runs failed.

A report takes hours on a CPU, so it resumes: run it again into the same folder
(``hydra.run.dir=...``) and every finished run whose inputs are unchanged — its resolved
fine-tuning config and the model files it reads — is taken from ``report.json`` instead of being
trained again. The same lets the runs that do not need the pretrained model (``modes=[scratch,
tfidf]``, given any model folder of the same config and vocabulary) go first, while it pretrains.

python -m finetune.report                                   # = make report
python -m finetune.report 'seeds=[1,2,3,4,5]' 'tasks=[sentiment]'
python -m finetune.report 'finetune_overrides=["train.epochs=2","head=mean"]' model_path=PATH
python -m finetune.report 'budgets=[null]'                  # every training row only: no curve
python -m finetune.report hydra.run.dir=outputs/report/mine  # again: resumes, finished runs reused
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.config import FinetuneConfig, build_config
from finetune.report_render import CURVE_PNG, MODES, budget_order, plot_curves, render
from finetune.train import run as finetune
from ptm.config import PathsConfig, override_key, register_resolvers, resolve, to_dataclass
from ptm.errors import DivergenceError, InputError, exit_on_input_error
from ptm.records import RECORD, RunClock, plain, write_record
from ptm.tasks.baselines import fit_baseline
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import kind_named
from ptm.tasks.loading import task_table
from ptm.training.checkpoint import file_sha256, list_checkpoints
from ptm.training.rundir import point_latest
from ptm.training.stop import exit_resumable_when_stopped

log = logging.getLogger(__name__)
FINGERPRINT = "report-fingerprint"  # in a run's folder: the inputs it runs with


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    paths: PathsConfig
    model_path: Path
    tasks: list[str]
    seeds: list[int]
    modes: list[str]
    finetune_overrides: list[str]
    budgets: list[int | None]  # training rows; None: all
    budget_steps: int  # a budget run trains at least this many optimizer steps
    budget_evals: int  # dev evaluations of a budget run
    run_dir: Path = Path(".")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise ValueError(f"modes {unknown} are unknown; use some of {list(MODES)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not self.budgets or any(b is not None and b < 1 for b in self.budgets):
            raise ValueError(f"budgets={self.budgets}; give row counts >= 1 (null: every row)")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"budgets={self.budgets} repeats a value")
        if self.budget_steps < 1 or self.budget_evals < 1:
            raise ValueError("budget_steps and budget_evals must be positive")


Compose = Callable[[list[str]], dict[str, Any]]


def run(cfg: ReportConfig, compose: Compose) -> dict:
    """Every (task, budget, mode, seed) run, then ``report.md`` / ``report.json`` (and the curve's
    PNG) in ``cfg.run_dir``.

    ``compose`` turns fine-tuning overrides into the resolved fine-tuning config (Hydra's compose
    API in the entry point, the test helper in tests)."""
    started = RunClock.start()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = _finished_runs(run_dir / "report.json")
    results: list[dict] = []
    for task_name in cfg.tasks:
        for budget in budget_order(cfg.budgets):
            for mode in cfg.modes:
                for seed in cfg.seeds:
                    args = (cfg, compose, task_name, budget, mode, seed, run_dir, finished)
                    results.append(_one_run(*args))
                    log.info("report: %s", json.dumps(results[-1]))
                    (run_dir / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    plot = plot_curves(results, run_dir / CURVE_PNG)
    text = render(results, cfg, plot)
    (run_dir / "report.md").write_text(text)
    _write_record(cfg, results, started)
    point_latest(run_dir)
    log.info("report written to %s\n%s", run_dir / "report.md", text)
    return {"results": results, "report": str(run_dir / "report.md")}


def _write_record(cfg: ReportConfig, results: list[dict], started: RunClock) -> None:
    """``record.json``: every run's row (its dev and test scores, seed, budget, seconds) with the
    report's command, commit, machine and settings, for the docs' tables (`ptm.records`). The
    wall and CPU time are this invocation's: runs reused from an earlier one keep their own
    ``seconds``."""
    tasks = {r["task"]: {"metric_label": kind_named(r["kind"]).metric_label} for r in results}
    write_record(
        Path(cfg.run_dir) / RECORD,
        kind="report",
        config=plain(cfg),
        metrics={"split": "test", "tasks": tasks},
        clock=started,
        per_seed=results,
    )


def _finished_runs(path: Path) -> dict[str, dict]:
    """The rows of an earlier report in this folder that finished (a failed run is tried again:
    its cause may have been fixed), by fingerprint; an unreadable file means starting over, with
    a warning."""
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())
        return {r["fingerprint"]: r for r in rows if "fingerprint" in r and r["status"] == "ok"}
    except (ValueError, TypeError, KeyError) as e:
        log.warning("report: %s is not a report's results (%s); every run starts over", path, e)
        return {}


def fingerprint(data: dict[str, Any], mode: str) -> str:
    """What decides a run's result: its resolved fine-tuning config (the folders it writes to and
    the model's path aside), the files the config names (the task's data) and the model files it
    reads — all of them to fine-tune the pretrained weights, all but the weights from scratch,
    none for the classical baseline."""
    config = {k: v for k, v in data.items() if k not in ("run_dir", "paths")}
    model_dir = Path(config["model"]["path"])
    config["model"] = {**config["model"], "path": None}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for value in sorted(set(_strings(config))):
        if Path(value).is_file():
            digest.update(value.encode() + b"\0" + _file_sha256(Path(value)).encode())
    if mode != "tfidf" and model_dir.is_dir():
        for file in sorted(p for p in model_dir.iterdir() if p.is_file()):
            if mode == "scratch" and file.suffix in (".safetensors", ".bin"):
                continue
            digest.update(file.name.encode() + b"\0" + _file_sha256(file).encode())
    return digest.hexdigest()[:16]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


@functools.lru_cache(maxsize=256)
def _hash_of(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _file_sha256(path: Path) -> str:
    """A file's sha256, computed once per version of the file (a report names the same data
    files in every run)."""
    st = path.stat()
    return _hash_of(path.resolve(), st.st_size, st.st_mtime_ns)


def _one_run(
    cfg: ReportConfig,
    compose: Compose,
    task_name: str,
    budget: int | None,
    mode: str,
    seed: int,
    run_dir: Path,
    finished: dict[str, dict],
) -> dict:
    """One fine-tuning run or baseline fit — or its row from ``finished`` when a run with the same
    fingerprint ended there; a divergence or bad input is recorded, not raised, so one failed run
    does not cost the others (as a failed job of a sweep does not)."""
    base = [
        f"task={task_name}",
        f"paths.root={cfg.paths.root}",
        f"paths.data_dir={cfg.paths.data_dir}",
        f"paths.output_dir={cfg.paths.output_dir}",
        f"model.path={cfg.model_path}",
        f"model.init={'scratch' if mode == 'scratch' else 'pretrained'}",
        f"train.seed={seed}",
        *overrides_for(task_name, cfg.finetune_overrides),
    ]
    data = compose(base)
    if budget is not None:
        data = compose(base + _budget_overrides(cfg, task_name, budget, seed, data["train"]))
    name = "all" if budget is None else f"rows-{budget}"
    data["run_dir"] = str(run_dir / task_name / name / mode / f"seed-{seed}")
    ft = build_config(data)
    task = next(t for t in ft.tasks if t.name == task_name)
    row = {"task": task_name, "kind": task.kind, "mode": mode, "seed": seed, "budget": budget}
    row["fingerprint"] = fingerprint(data, mode)
    if row["fingerprint"] in finished:
        log.info("report: %s, %s, %s, seed %d: reused", task_name, name, MODES[mode], seed)
        return finished[row["fingerprint"]]
    start = time.perf_counter()
    log.info(
        "report: %s, %s, %s, seed %d ...",
        task_name,
        "every training row" if budget is None else f"{budget} training rows",
        MODES[mode],
        seed,
    )
    try:
        row["rows"] = _train_rows(task, ft.train.limit_examples)
        if mode == "tfidf":
            scores = fit_baseline(task, seed, ft.train.limit_examples)
        else:
            metrics = finetune(_continued(ft, row["fingerprint"]))["tasks"][task_name]
            scores = {s: metrics[s][metrics["metric"]] for s in ("dev", "test") if s in metrics}
    except (DivergenceError, InputError) as e:
        log.error("report: %s, %s, seed %d failed: %s", task_name, MODES[mode], seed, e)
        return {**row, "status": "failed", "error": str(e)}
    seconds = round(time.perf_counter() - start, 1)
    return {**row, "status": "ok", **scores, "seconds": seconds}


def _continued(ft: FinetuneConfig, fingerprint: str) -> FinetuneConfig:
    """A run the report started before and that stopped (a SIGTERM, Ctrl-C, a killed job) goes
    on from its checkpoints — when they were written with the same inputs (its folder keeps
    the fingerprint it ran with); anything else in the folder is an older run's, set aside."""
    folder = Path(ft.run_dir)
    mark = folder / FINGERPRINT
    same = mark.is_file() and mark.read_text().strip() == fingerprint
    if same and list_checkpoints(folder / "checkpoints"):
        log.info("report: continuing the stopped run in %s", folder)
        return dataclasses.replace(ft, resume=folder)
    if folder.exists():
        shutil.rmtree(folder)  # an older run's (other inputs): never mixed with this one
    folder.mkdir(parents=True)
    mark.write_text(fingerprint + "\n")
    return ft


def _budget_overrides(
    cfg: ReportConfig, task: str, budget: int, seed: int, train: dict[str, Any]
) -> list[str]:
    """The rows of a label budget (drawn from the seed) and enough epochs for ``budget_steps``
    steps — three epochs of 100 rows are ten steps, too few to tell anything — with
    ``budget_evals`` dev evaluations (one per epoch would be hundreds). ``++``: a task file
    need not list train_rows (multilabel.yaml, pair.yaml do not)."""
    steps_per_epoch = max(1, budget // train["batch_size"])
    epochs = max(float(train["epochs"]), math.ceil(cfg.budget_steps / steps_per_epoch))
    total = math.ceil(epochs * steps_per_epoch)
    return [
        f"++tasks.{task}.train_rows={budget}",
        f"++tasks.{task}.train_rows_seed={seed}",
        f"train.epochs={epochs:g}",
        f"train.eval_every={max(1, math.ceil(total / cfg.budget_evals))}",
    ]


def _train_rows(task: TaskConfig, limit: int | None) -> int:
    """The training rows a run of ``task`` learns from (the x axis of the curve)."""
    table = task_table(task, task.train)
    keep = table.spread(limit)
    n = table.count_rows() if keep is None else len(keep)
    if task.dev is None:
        n -= max(1, round(n * task.dev_fraction))  # about: hold_out's share
    return n if task.train_rows is None else min(n, task.train_rows)


def overrides_for(task: str, overrides: list[str]) -> list[str]:
    """The overrides that apply to ``task``'s runs: ``tasks.<other>.*`` ones are left out, so one
    list can tune every task (``tasks.sentiment.max_seq_len=64``, ``tasks.names.max_seq_len=64``)."""
    keep = []
    for item in overrides:
        key = override_key(item)
        if key.startswith("tasks.") and not key.startswith(f"tasks.{task}."):
            continue
        keep.append(item)
    return keep


# ----------------------------------------------------------------------------- entry point


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@exit_resumable_when_stopped
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    data = resolve(cfg)
    data["run_dir"] = HydraConfig.get().runtime.output_dir

    def compose(overrides: list[str]) -> dict[str, Any]:
        return resolve(hydra.compose(config_name="finetune", overrides=overrides))

    run(to_dataclass(ReportConfig, data), compose)


if __name__ == "__main__":
    register_resolvers()
    main()
