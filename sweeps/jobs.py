"""A Hydra multirun sweep folder read into one row per job, ranked by the stage's target metric.

Hydra lays a sweep out as one folder per job, numbered, holding ``.hydra/config.yaml`` and
``.hydra/overrides.yaml``; its grid sweeper also writes ``<sweep>/multirun.yaml`` first, the
Optuna sweeper does not (it writes ``optimization_results.yaml`` when the study ends). Our stages add ``metrics.json`` when a run
finishes and, in a multirun, ``status.json``: ``ok``, or ``failed`` with the one-line error
(`ptm.errors.exit_on_input_error`), so one diverging job does not end the sweep. A job folder
with neither file is still running or was killed: it is reported ``incomplete``, never guessed.

Rows are sorted by the target metric (pretrain: held-out MLM loss, lower is better; finetune: the
dev score the run selected its best step on — each task's kind names its primary metric: macro-F1,
entity F1 for token tasks; their mean for multi-task runs — higher is better), then jobs without it, then incomplete ones, then failed
ones, so the best job is always the first row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ptm.config import flatten, override_key
from ptm.errors import STATUS_FILE, InputError
from ptm.progress import format_duration
from ptm.training.rundir import MULTIRUN_FILE, sweep_started

MODES = ("min", "max")


@dataclass(frozen=True)
class Target:
    """The metric a sweep is ranked by: a key of the jobs' flattened ``metrics.json``."""

    metric: str
    mode: str  # min | max
    what: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; use one of {list(MODES)}")

    @property
    def arrow(self) -> str:
        return "↓" if self.mode == "min" else "↑"


STAGE_TARGETS = {
    "pretrain": Target("eval/loss", "min", "held-out MLM loss"),
    "finetune": Target("best.dev_score", "max", "dev score of the selected step"),
}
# Where a stage records the step its target was measured at; pretraining evaluates and exports
# the last step only, so there is no "best" step to report.
BEST_STEP = {"finetune": "best.step"}


@dataclass(frozen=True)
class Job:
    name: str  # the job's folder name: Hydra's job number
    dir: Path
    overrides: dict[str, str]  # key (without + / ++ / ~) -> value, as Hydra recorded them
    typed: list[str]  # the overrides themselves, to copy onto a command line
    status: str  # ok | failed | incomplete
    error: str  # first line of the failure (or why the job's files could not be read)
    metrics: dict[str, Any]  # metrics.json flattened with dots ({} when there is none)
    stage: str | None  # pretrain | finetune | None (unknown)


@dataclass(frozen=True)
class Sweep:
    dir: Path
    stage: str | None
    jobs: list[Job]


def latest_sweep(output_dir: Path) -> Path:
    """The most recently started sweep under ``<output_dir>/*-multirun/``."""
    started = {p: sweep_started(p) for p in Path(output_dir).glob("*-multirun/*/")}
    found = {p: t for p, t in started.items() if t is not None}
    if not found:
        raise InputError(
            output_dir,
            "no sweep found under *-multirun/",
            "run one first (python -m pretrain -m train.lr=5e-4,1e-3) or pass dir=<sweep folder>",
        )
    return max(found, key=lambda p: (found[p], p.name))


def read_sweep(folder: Path) -> Sweep:
    """Every job of the sweep in ``folder``; a folder that is not a sweep is a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder", "pass dir=<sweep folder> or dir=latest")
    if sweep_started(folder) is None:
        raise InputError(
            folder,
            f"not a Hydra multirun sweep (no {MULTIRUN_FILE}, no job folders)",
            _hint(folder),
        )
    jobs = [
        read_job(p)
        for p in sorted(folder.iterdir(), key=_job_order)
        # Skip links: a stage points ``<runs>/latest`` at its newest run, inside the sweep too.
        if p.is_dir() and not p.is_symlink() and (p / ".hydra").is_dir()
    ]
    if not jobs:
        raise InputError(
            folder, "the sweep has no job folders yet", "wait for its first job to start"
        )
    stages = {j.stage for j in jobs if j.stage is not None}
    if len(stages) > 1:
        raise InputError(
            folder, f"jobs of different stages {sorted(stages)}", "summarise one sweep at a time"
        )
    return Sweep(folder, next(iter(stages), None), jobs)


def read_job(folder: Path) -> Job:
    hydra_dir = folder / ".hydra"
    typed = [str(item) for item in _read_yaml(hydra_dir / "overrides.yaml") or []]
    config = _read_yaml(hydra_dir / "config.yaml") or {}
    metrics, error = _read_json(folder / "metrics.json")
    status, status_error = _read_json(folder / STATUS_FILE)
    if status:
        state = status.get("status", "incomplete")
        error = (str(status.get("error", "")).strip().splitlines() or [""])[0]
    elif metrics:
        state = "ok"  # a run from before status files, or a single run moved into the folder
    else:
        logs = sorted(folder.glob("*.log"))
        see = f": see {logs[0]}" if logs else ""
        state = "incomplete"
        error = status_error or error or f"no result yet (running, or it stopped{see})"
    flat = flatten(metrics or {})
    return Job(
        folder.name,
        folder,
        _parse_overrides(typed),
        typed,
        state,
        error,
        flat,
        _stage(config, flat),
    )


def target_for(stage: str | None, metric: str | None, mode: str | None) -> Target:
    """The stage's target, or ``metric``/``mode`` from the user (mode guessed from the name)."""
    if metric is None:
        if stage is None:
            raise InputError(
                None,
                "cannot tell which stage wrote this sweep (no tasks/data in .hydra/config.yaml)",
                "name the metric to rank by: metric=<key of metrics.json> mode=min|max",
            )
        default = STAGE_TARGETS[stage]
        return Target(default.metric, mode or default.mode, default.what)
    if mode is None:
        lower = ("loss", "perplexity", "seconds", "error")
        mode = "min" if any(word in metric for word in lower) else "max"
    return Target(metric, mode)


def rank(jobs: list[Job], target: Target) -> list[Job]:
    """Best first; jobs without a finite metric follow, then incomplete ones, then failed ones."""

    def key(job: Job) -> tuple:
        value = _number(job.metrics.get(target.metric))
        if job.status == "failed":
            return (3, 0.0, _job_order(job.dir))
        if job.status != "ok":
            return (2, 0.0, _job_order(job.dir))
        if value is None:
            return (1, 0.0, _job_order(job.dir))
        return (0, value if target.mode == "min" else -value, _job_order(job.dir))

    return sorted(jobs, key=key)


def best_job(ranked: list[Job], target: Target) -> Job | None:
    first = ranked[0] if ranked else None
    if first is None or first.status != "ok":
        return None
    return first if _number(first.metrics.get(target.metric)) is not None else None


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (all of them for a single job)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    if len(jobs) == 1:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def common_overrides(jobs: list[Job]) -> list[str]:
    varying = set(varying_keys(jobs))
    return [item for item in jobs[0].typed if override_key(item) not in varying]


@dataclass(frozen=True)
class Summary:
    """The ranked table of a sweep, ready to print or write."""

    sweep: Sweep
    target: Target
    jobs: list[Job]  # ranked
    keys: list[str]  # override columns
    best: Job | None

    @property
    def best_model(self) -> Path | None:
        if self.best is None:
            return None
        model = self.best.dir / "model"
        return model if model.is_dir() else None

    def rows(self) -> list[dict[str, Any]]:
        """One plain record per job (raw numbers; what ``summary.csv`` holds)."""
        step_key = BEST_STEP.get(self.sweep.stage or "")
        out = []
        for job in self.jobs:
            model = job.dir / "model"
            out.append(
                {
                    "job": job.name,
                    **{k: job.overrides.get(k, "") for k in self.keys},
                    self.target.metric: job.metrics.get(self.target.metric, ""),
                    "best_step": job.metrics.get(step_key, "") if step_key else "",
                    "steps": job.metrics.get("steps", ""),
                    "wall_seconds": job.metrics.get("wall_seconds", ""),
                    "status": job.status,
                    "error": job.error,
                    "model": str(model) if model.is_dir() else "",
                }
            )
        return out

    def csv(self) -> str:
        rows = self.rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def markdown(self) -> str:
        t = self.target
        what = f" ({t.what})" if t.what else ""
        better = "lower" if t.mode == "min" else "higher"
        lines = [
            f"# Sweep {self.sweep.dir}",
            "",
            f"Stage: {self.sweep.stage or 'unknown'}; ranked by `{t.metric}`{what}, "
            f"{better} is better.",
        ]
        common = common_overrides(self.sweep.jobs)
        if common:
            lines.append("Every job: " + " ".join(f"`{c}`" for c in common))
        header = ["job", *self.keys, f"{t.metric} {t.arrow}", "best step", "steps", "wall"]
        header.append("status")
        lines += ["", _md_row(header), _md_row(["---"] * len(header))]
        for row in self.rows():
            status = row["status"] + (f": {row['error']}" if row["error"] else "")
            cells = [
                row["job"],
                *(row[k] for k in self.keys),
                _fmt(row[t.metric]),
                row["best_step"],
                row["steps"],
                _duration(row["wall_seconds"]),
                status,
            ]
            lines.append(_md_row([str(c) for c in cells]))
        lines.append("")
        lines.append(self.verdict())
        counts = {s: sum(j.status == s for j in self.jobs) for s in ("ok", "failed", "incomplete")}
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".")
        return "\n".join(lines) + "\n"

    def verdict(self) -> str:
        if self.best is None:
            return f"No job has `{self.target.metric}` yet: no best job."
        value = _fmt(self.best.metrics[self.target.metric])
        model = self.best_model
        where = f"model: {model}" if model else f"no model folder in {self.best.dir}"
        return f"Best: job {self.best.name} ({self.target.metric} {value}) — {where}"


def summarize(sweep: Sweep, metric: str | None = None, mode: str | None = None) -> Summary:
    target = target_for(sweep.stage, metric, mode)
    selected_on = {selection(job.metrics) for job in sweep.jobs} - {None}
    if metric is None and len(selected_on) == 1:  # finetune: "dev sentiment macro-F1"
        target = Target(target.metric, target.mode, str(selected_on.pop()))
    known = {k for job in sweep.jobs for k in job.metrics}
    if metric is not None and known and metric not in known:
        numeric = sorted(k for k in known if _number_like(k, sweep.jobs))
        shown = ", ".join(numeric[:20]) + (", ..." if len(numeric) > 20 else "")
        raise InputError(None, f"no job's metrics.json has {metric!r}", f"use one of: {shown}")
    ranked = rank(sweep.jobs, target)
    return Summary(sweep, target, ranked, varying_keys(sweep.jobs), best_job(ranked, target))


def selection(metrics: dict[str, Any]) -> str | None:
    """What a fine-tuning job selected its best step on, in the words of each task's kind (its
    primary metric's name, which the run records as ``tasks.<name>.metric_label``): "dev
    sentiment macro-F1", "dev sentiment macro-F1 / names entity F1 (mean)". A run from before
    kinds named their metric: its ``selected_on``."""
    labels = {
        key.split(".")[1]: value
        for key, value in metrics.items()
        if key.startswith("tasks.") and key.endswith(".metric_label") and key.count(".") == 2
    }
    if not labels:
        return metrics.get("selected_on")
    named = " / ".join(f"{task} {label}" for task, label in labels.items())
    return f"dev {named}" + (" (mean)" if len(labels) > 1 else "")


def _hint(folder: Path) -> str:
    if sweep_started(folder.parent) is not None:
        return f"this is one job of the sweep {folder.parent}: pass dir={folder.parent}"
    inside = {p: sweep_started(p) for p in folder.iterdir() if p.is_dir()}
    inside = {p: t for p, t in inside.items() if t is not None}
    if inside:
        newest = max(inside, key=lambda p: (inside[p], p.name))
        return f"it is a folder of sweeps: pass one, e.g. dir={newest}, or dir=latest"
    return "pass a folder under outputs/*-multirun/ (or dir=latest for the newest)"


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 62, path.name)


def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        # ``~key`` deletes a config entry (Hydra records it as ``~key=null``).
        out[override_key(item)] = "(deleted)" if item.startswith("~") else item.partition("=")[2]
    return out


def _stage(config: dict, metrics: dict) -> str | None:
    if "tasks" in config or "best.dev_score" in metrics:
        return "finetune"
    if "data" in config or "eval/loss" in metrics:
        return "pretrain"
    return None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0]
        raise InputError(path, f"not valid YAML ({first})", "was it edited by hand?") from e


def _read_json(path: Path) -> tuple[dict | None, str]:
    """The file's object, or None and why not (a job still writing it reads as incomplete)."""
    if not path.is_file():
        return None, ""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{path.name} unreadable ({e})"
    return (data, "") if isinstance(data, dict) else (None, f"{path.name} is not an object")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _number_like(key: str, jobs: list[Job]) -> bool:
    return any(_number(job.metrics.get(key)) is not None for job in jobs)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _duration(seconds: Any) -> str:
    if _number(seconds) is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
