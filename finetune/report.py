"""Honest evaluation: does pretraining help on the embedded tasks? (``make report``)

For every task and seed it fine-tunes the pretrained model, fine-tunes the same architecture
from random weights (everything else equal), and fits a classical baseline; then it writes a
markdown table of the median and spread (min-max over seeds) of each task's metric — macro-F1 for
classification, entity F1 for names — on the held-out test split, which no run looked at, with
dev beside it. When the pretrained model does not beat the one trained from scratch, the report
says so in as many words.

The classical baselines (scikit-learn):
* classification — TF-IDF of ID unigrams and bigrams + logistic regression, C chosen on dev;
* tokens — per-ID logistic regression (SGD) on hashed features of the ID and its neighbours
  (+-2 IDs and the two bigrams around it), the classic window tagger, decoded to valid BIO
  sequences as the fine-tuned taggers are (`ptm.tasks.bio`).

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

import functools
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from finetune.config import build_config
from finetune.train import run as finetune
from ptm.config import (
    CONF_DIR,
    PathsConfig,
    flatten,
    override_key,
    register_resolvers,
    resolve,
    to_dataclass,
)
from ptm.errors import DivergenceError, InputError, exit_on_input_error
from ptm.tasks.bio import bio_decode, bio_transitions
from ptm.tasks.loading import TaskConfig, label_budget, natural_order, tag_order, task_table
from ptm.tasks.metrics import classification_metrics, primary, token_metrics
from ptm.tasks.tables import Table
from ptm.training.checkpoint import file_sha256
from ptm.training.rundir import point_latest

log = logging.getLogger(__name__)
MODES = {
    "pretrained": "pretrained -> fine-tuned",
    "scratch": "same model from scratch",
    "tfidf": "classical baseline",
}
BASELINES = {
    "classification": "TF-IDF + logistic regression",
    "pair": "TF-IDF + logistic regression",
    "tokens": "window features + logistic regression",
}
METRIC_NAMES = {"macro_f1": "macro-F1", "entity_f1": "entity F1"}


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
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = _finished_runs(run_dir / "report.json")
    results: list[dict] = []
    for task_name in cfg.tasks:
        for budget in _budget_order(cfg.budgets):
            for mode in cfg.modes:
                for seed in cfg.seeds:
                    args = (cfg, compose, task_name, budget, mode, seed, run_dir, finished)
                    results.append(_one_run(*args))
                    log.info("report: %s", json.dumps(results[-1]))
                    (run_dir / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    plot = plot_curves(results, run_dir / CURVE_PNG)
    text = render(results, cfg, plot)
    (run_dir / "report.md").write_text(text)
    point_latest(run_dir)
    log.info("report written to %s\n%s", run_dir / "report.md", text)
    return {"results": results, "report": str(run_dir / "report.md")}


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


def _budget_order(budgets: list[int | None]) -> list[int | None]:
    """Smallest first, every row (None) last: the cheap runs report early."""
    return sorted(budgets, key=lambda b: math.inf if b is None else b)


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
            scores = classical_baseline(task, seed, ft.train.limit_examples)
        else:
            metrics = finetune(ft)["tasks"][task_name]
            scores = {s: metrics[s][metrics["metric"]] for s in ("dev", "test") if s in metrics}
    except (DivergenceError, InputError) as e:
        log.error("report: %s, %s, seed %d failed: %s", task_name, MODES[mode], seed, e)
        return {**row, "status": "failed", "error": str(e)}
    seconds = round(time.perf_counter() - start, 1)
    return {**row, "status": "ok", **scores, "seconds": seconds}


def _budget_overrides(
    cfg: ReportConfig, task: str, budget: int, seed: int, train: dict[str, Any]
) -> list[str]:
    """The rows of a label budget (drawn from the seed) and enough epochs for ``budget_steps``
    steps — three epochs of 100 rows are ten steps, too few to tell anything — with
    ``budget_evals`` dev evaluations (one per epoch would be hundreds)."""
    steps_per_epoch = max(1, budget // train["batch_size"])
    epochs = max(float(train["epochs"]), math.ceil(cfg.budget_steps / steps_per_epoch))
    total = math.ceil(epochs * steps_per_epoch)
    return [
        f"tasks.{task}.train_rows={budget}",
        f"tasks.{task}.train_rows_seed={seed}",
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


# ----------------------------------------------------------------------------- the table

CURVE_PNG = "label_efficiency.png"


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _model_name(kind: str, mode: str) -> str:
    return BASELINES[kind] if mode == "tfidf" else MODES[mode]


def _cells(results: list[dict]) -> dict[tuple, list[dict]]:
    """The runs of each (task, budget, mode), in order of appearance."""
    cells: dict[tuple, list[dict]] = {}
    for r in results:
        cells.setdefault((r["task"], r.get("budget"), r["mode"]), []).append(r)
    return cells


def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("status", "ok") == "ok"]


def task_defaults(tasks: list[str], overrides: list[str]) -> str:
    """``sentiment `model.dropout=0.1`; names `train.lr=0.001``` — the settings that
    conf/task_defaults/ gives these tasks and ``overrides`` (the report's ``finetune_overrides``)
    leave alone, which their runs therefore used: report.md then says what fine-tuning ran, not
    only what was overridden."""
    overridden = {override_key(o) for o in overrides}

    def value(v: Any) -> str:  # as it would be written on the command line
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    found = []
    for task in tasks:
        path = CONF_DIR / "task_defaults" / f"{task}.yaml"
        if not path.is_file():
            continue
        pairs = flatten(OmegaConf.to_container(OmegaConf.load(path)))
        settings = [f"`{k}={value(v)}`" for k, v in pairs.items() if k not in overridden]
        if settings:
            found.append(f"{task} " + " ".join(settings))
    return "; ".join(found)


def render(results: list[dict], cfg: ReportConfig, plot: Path | None = None) -> str:
    ok = _ok(results)
    split = "test" if ok and all("test" in r for r in ok) else "dev"
    budgets = {r.get("budget") for r in results}
    top = None if None in budgets else max(budgets)  # the headline: every training row
    cells = _cells(results)
    tuned = [r["task"] for r in results if r["mode"] != "tfidf"]  # the baselines use none
    own = task_defaults(list(dict.fromkeys(tuned)), list(cfg.finetune_overrides))
    lines = [
        "# Does pretraining help? An honest evaluation",
        "",
        f"Pretrained model: `{cfg.model_path}`; seeds {', '.join(map(str, cfg.seeds))}. Every "
        "fine-tuning run keeps its checkpoint with the best dev score, so dev numbers are "
        f"optimistic; the headline is the **{split}** split, which no run looked at. Spread = "
        "min-max over seeds. Fine-tuning overrides: "
        f"`{' '.join(cfg.finetune_overrides) or 'none (the defaults)'}`"
        + (f"; the tasks' own defaults: {own}" if own else "")
        + ". The TF-IDF model (lbfgs) is deterministic, so its seeds agree; the window tagger "
        "(SGD) is seeded.",
        "",
        f"| task | metric | model | {split} median | {split} spread | dev median | "
        f"per-seed {split} | seconds / run | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for task in dict.fromkeys(r["task"] for r in results):
        kind = next(r["kind"] for r in results if r["task"] == task)
        metric = METRIC_NAMES[primary(kind)]
        per_seed = {}
        for (t, budget, mode), runs in cells.items():
            if t != task or budget != top:
                continue
            good = _ok(runs)
            per_seed[mode] = {r["seed"]: r[split] for r in good}
            failed = f"{len(runs) - len(good)} of {len(runs)}"
            name = _model_name(kind, mode)
            if not good:
                lines.append(f"| {task} | {metric} | {name} | — | — | — | — | — | {failed} |")
                continue
            med, lo, hi = _stats([r[split] for r in good])
            lines.append(
                f"| {task} | {metric} | {name} | {med:.4f} | {lo:.4f}–{hi:.4f} | "
                f"{statistics.median(r['dev'] for r in good):.4f} | "
                f"{', '.join(f'{r[split]:.4f}' for r in good)} | "
                f"{statistics.median(r['seconds'] for r in good):.0f} | {failed} |"
            )
        verdicts.append(_verdict(task, metric, split, per_seed))
    lines += ["", "## Verdict", "", *verdicts, ""]
    if len(budgets) > 1:
        lines += _curve_section(results, cells, split, plot)
    failures = [r for r in results if r.get("status", "ok") != "ok"]
    if failures:
        lines += ["## Failed runs", ""]
        lines += [
            f"- {r['task']}, {_budget_name(r.get('budget'))}, {MODES[r['mode']]}, seed "
            f"{r['seed']}: {r['error']}"
            for r in failures
        ]
        lines.append("")
    return "\n".join(lines)


def _budget_name(budget: int | None) -> str:
    return "every training row" if budget is None else f"{budget} training rows"


def _curve_section(
    results: list[dict], cells: dict[tuple, list[dict]], split: str, plot: Path | None
) -> list[str]:
    """The label-efficiency table: a row per (task, budget), a column per model, and the gap
    between the pretrained and the from-scratch medians."""
    modes = list(dict.fromkeys(r["mode"] for r in results))
    lines = [
        "## Label efficiency",
        "",
        f"{split} score by the number of labelled training rows: median (min–max over seeds); "
        "each budget is drawn from the seed, the same rows for every model of that seed "
        "(stratified by label for classification); dev and test are whole.",
        "",
        f"| task | training rows | {' | '.join(MODES[m] for m in modes)} | pretrained − scratch |",
        "|---|---|" + "---|" * len(modes) + "---|",
    ]
    for task in dict.fromkeys(r["task"] for r in results):
        for budget in _budget_order(list({r.get("budget") for r in results if r["task"] == task})):
            runs_at = {m: cells.get((task, budget, m), []) for m in modes}
            rows = [r.get("rows") for rs in runs_at.values() for r in rs if r.get("rows")]
            label = f"{max(rows):,}" if rows else _budget_name(budget)
            if budget is None:
                label = f"all ({label})"
            texts, medians = [], {}
            for mode in modes:
                runs = runs_at[mode]
                good = _ok(runs)
                text = "—"
                if good:
                    med, lo, hi = _stats([r[split] for r in good])
                    medians[mode] = med
                    text = f"{med:.4f} ({lo:.4f}–{hi:.4f})"
                if len(good) < len(runs):
                    text += f", {len(runs) - len(good)} of {len(runs)} failed"
                texts.append(text)
            gap = (
                f"{medians['pretrained'] - medians['scratch']:+.4f}"
                if "pretrained" in medians and "scratch" in medians
                else "—"
            )
            lines.append(f"| {task} | {label} | {' | '.join(texts)} | {gap} |")
    lines.append("")
    if plot is not None:
        lines += [f"![{split} score by labelled training rows]({plot.name})", ""]
    return lines


def plot_curves(results: list[dict], path: Path) -> Path | None:
    """The label-efficiency curves as a PNG (a panel per task: median line, min-max band per
    model over the training rows, log scale), or None — with one log line — when there is no
    curve to draw or matplotlib (an optional dependency: ``pip install 'ptm[report]'``) is
    missing; the table says the same in either case."""
    ok = [r for r in _ok(results) if r.get("rows")]
    if len({r.get("budget") for r in results}) < 2 or not ok:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info(
            "report: matplotlib is not installed, so the label-efficiency curve is a table only"
        )
        return None
    split = "test" if all("test" in r for r in ok) else "dev"
    tasks = list(dict.fromkeys(r["task"] for r in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        runs = [r for r in ok if r["task"] == task]
        for mode in dict.fromkeys(r["mode"] for r in runs):
            points: dict[int, list[float]] = {}
            for r in runs:
                if r["mode"] == mode:
                    points.setdefault(r["rows"], []).append(r[split])
            xs = sorted(points)
            med, lo, hi = zip(*(_stats(points[x]) for x in xs), strict=True)
            line = ax.plot(xs, med, marker="o", label=_model_name(runs[0]["kind"], mode))[0]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training rows")
        ax.set_ylabel(f"{split} {METRIC_NAMES[primary(runs[0]['kind'])]}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
    return path


def _verdict(task: str, metric: str, split: str, per_seed: dict[str, dict[int, float]]) -> str:
    """ "Helps" only when every pretrained seed beats every from-scratch seed: a median ahead by
    less than the seed-to-seed spread is noise, and is reported as such. Seeds that failed in
    either mode are left out of the head-to-head count."""
    if not per_seed.get("pretrained") or not per_seed.get("scratch"):
        return (
            f"- {task}: pretrained and from-scratch runs that finished are both needed for a "
            "verdict."
        )
    pre_runs, scr_runs = per_seed["pretrained"], per_seed["scratch"]
    pre, scr = statistics.median(pre_runs.values()), statistics.median(scr_runs.values())
    both = sorted(set(pre_runs) & set(scr_runs))
    wins = sum(pre_runs[s] > scr_runs[s] for s in both)
    numbers = (
        f"{split} {metric} {pre:.4f} against {scr:.4f} from scratch ({pre - scr:+.4f} median; "
        f"ahead in {wins} of {len(both)} seeds)"
    )
    base = ""
    if per_seed.get("tfidf"):
        tf = statistics.median(per_seed["tfidf"].values())
        base = (
            f" The classical baseline scores {tf:.4f}: the pretrained model is "
            f"{'above' if pre > tf else '**not above**'} it ({pre - tf:+.4f})."
        )
    advice = " Pretrain longer, or check that the pretraining corpus matches this task."
    if min(pre_runs.values()) > max(scr_runs.values()):
        return f"- {task}: pretraining helps: {numbers}, beyond the spread of the seeds.{base}"
    if pre > scr:
        return (
            f"- {task}: **pretraining does not clearly beat training from scratch**: {numbers} — "
            f"within the spread of the seeds.{advice}{base}"
        )
    return (
        f"- {task}: **pretraining does not beat training from scratch**: {numbers}.{advice}{base}"
    )


# ----------------------------------------------------------------------------- baselines


def _read(table: Table, columns: list[str], keep: np.ndarray | None = None) -> list[list[str]]:
    idx = [table.column(c) for c in columns]
    return [[row[i] for i in idx] for _, rows in table.batches(keep) for row in rows]


def _split_rows(task: TaskConfig, limit: int | None) -> dict[str, list[list[str]]]:
    """Raw ``[text, answer]`` rows of train / dev / test, as the fine-tuning runs see them."""
    text, answer = task.text_column, task.label_column
    if task.kind == "pair":
        raise InputError(None, f"task {task.name}: no classical baseline for pairs", "drop tfidf")
    spread = {p: task_table(task, p).spread(limit) for p in (task.train, task.dev, task.test) if p}
    rows = {"train": _read(task_table(task, task.train), [text, answer], spread[task.train])}
    if task.train_rows is not None:  # the label budget's rows: the fine-tuning runs' own
        labels = [r[1] for r in rows["train"]]
        strata = None if task.kind == "tokens" else np.unique(labels, return_inverse=True)[1]
        keep = label_budget(strata, len(labels), task.train_rows, task.train_rows_seed)
        rows["train"] = [rows["train"][i] for i in keep]
    if task.dev is None:
        raise InputError(None, f"task {task.name} has no dev file", "give tasks.<name>.dev")
    rows["dev"] = _read(task_table(task, task.dev), [text, answer], spread[task.dev])
    if task.test is not None and (task.kind == "tokens" or task.test_labels is not None):
        if task.kind == "tokens":
            rows["test"] = _read(task_table(task, task.test), [text, answer], spread[task.test])
        else:
            texts = _read(task_table(task, task.test), [text], spread[task.test])
            labels = _read(Table(task.test_labels), [answer], spread[task.test])
            rows["test"] = [[t[0], a[0]] for t, a in zip(texts, labels, strict=True)]
    return rows


def classical_baseline(task: TaskConfig, seed: int, limit: int | None = None) -> dict[str, float]:
    rows = _split_rows(task, limit)
    if task.kind == "tokens":
        return _window_tagger(rows, seed)
    return _tfidf(rows, seed)


def _tfidf(rows: dict[str, list[list[str]]], seed: int) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = natural_order({r[1] for r in rows["train"]})
    index = {label: i for i, label in enumerate(labels)}
    vectorizer = TfidfVectorizer(
        token_pattern=r"[^ _]+", ngram_range=(1, 2), sublinear_tf=True, min_df=2
    )
    x = {
        s: (vectorizer.fit_transform if s == "train" else vectorizer.transform)([r[0] for r in v])
        for s, v in rows.items()
    }
    y = {s: np.array([index.get(r[1], -1) for r in v]) for s, v in rows.items()}
    best, best_dev = None, -1.0
    for c in (0.25, 1.0, 4.0, 16.0):  # C chosen on dev, as the fine-tuned models choose a step
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
            x["train"], y["train"]
        )
        dev = classification_metrics(y["dev"], model.predict(x["dev"]), labels)["macro_f1"]
        if dev > best_dev:
            best, best_dev = model, dev
    out = {"dev": best_dev}
    if "test" in x:
        out["test"] = classification_metrics(y["test"], best.predict(x["test"]), labels)["macro_f1"]
    return out


def _window_features(ids: list[str]) -> list[list[str]]:
    padded = ["<s>", "<s>", *ids, "</s>", "</s>"]
    out = []
    for i in range(2, len(padded) - 2):
        w = padded[i - 2 : i + 3]
        out.append(
            [f"w{k - 2}={w[k]}" for k in range(5)] + [f"b-={w[1]}_{w[2]}", f"b+={w[2]}_{w[3]}"]
        )
    return out


def _window_tagger(rows: dict[str, list[list[str]]], seed: int) -> dict[str, float]:
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import SGDClassifier

    tags = tag_order({t for r in rows["train"] for t in r[1].split()} | {"O"})
    index = {t: i for i, t in enumerate(tags)}
    hasher = FeatureHasher(n_features=1 << 20, input_type="string", alternate_sign=False)

    def featurize(split_rows):
        feats = [f for r in split_rows for f in _window_features(r[0].split())]
        return hasher.transform(feats), [r[1].split() for r in split_rows]

    x_train, y_train = featurize(rows["train"])
    model = SGDClassifier(loss="log_loss", alpha=1e-6, max_iter=10, tol=None, random_state=seed)
    model.fit(x_train, [index[t] for row in y_train for t in row])
    start, step = bio_transitions(tags)
    out = {}
    for split in ("dev", "test"):
        if split not in rows:
            continue
        x, truth = featurize(rows[split])
        flat = np.full((x.shape[0], len(tags)), -np.inf)  # tags train never had: impossible
        flat[:, model.classes_] = model.predict_log_proba(x)
        guess, at = [], 0
        for row in truth:  # decoded as the fine-tuned taggers are: valid BIO sequences
            guess.append([tags[i] for i in bio_decode(flat[at : at + len(row)], start, step)])
            at += len(row)
        out[split] = token_metrics(truth, guess, tags)["entity_f1"]
    return out


# ----------------------------------------------------------------------------- entry point


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
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
