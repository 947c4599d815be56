"""The ``validation`` block of ``make docs`` (`docs.render`): cross-validation and ensembles
against one model, from their records.

    <!-- generated: validation TASK single=R1,R2,R3 cv=C1,C2,C3 [ensemble=E] [decimals=3] -->

A row per way of training, over the seeds' records: what the method estimates its test score to
be before looking at test (one model: its dev score, on the split it selected its best step on;
cross-validation: the out-of-fold score over every training row) and its test score, each as
median (min-max), with the per-seed gap between estimate and test. An ensemble record of the
single models (``finetune.ensemble``) adds a row scored on dev and test.
"""

from __future__ import annotations

import statistics
from typing import Any

ROW_NAMES = {
    "single": "one model (its dev split)",
    "cv": "{folds}-fold cross-validation (out of fold; test: the folds' average)",
    "ensemble": "ensemble of the {n} single models (dev; test)",
}


def validation_table(
    task: str,
    single: list[tuple[str, dict]],
    cv: list[tuple[str, dict]],
    ensemble: tuple[str, dict] | None = None,
    decimals: int = 3,
) -> str:
    """The table (see the module docstring); records as ``(name, record)``."""
    rows = [_row("single", [_single(r, task) for _, r in single], decimals)]
    if cv:
        folds = {r["metrics"]["cv"]["folds"] for _, r in cv}
        name = ROW_NAMES["cv"].format(folds="/".join(map(str, sorted(folds))))
        rows.append(_row(name, [_cv(r, task) for _, r in cv], decimals))
    if ensemble is not None:
        name = ROW_NAMES["ensemble"].format(n=len(ensemble[1]["metrics"]["ensemble"]["runs"]))
        rows.append(_row(name, [_ensemble(ensemble[1], task)], decimals))
    metric = _metric_label(single[0][1], task)
    head = ["training", f"estimate ({metric})", f"test ({metric})", "estimate − test", "runs"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _row(name: str, pairs: list[tuple[float | None, float | None]], decimals: int) -> list[str]:
    name = ROW_NAMES.get(name, name)
    estimates = [e for e, _ in pairs if e is not None]
    tests = [t for _, t in pairs if t is not None]
    gaps = [f"{e - t:+.{decimals}f}" for e, t in pairs if e is not None and t is not None]
    return [
        name,
        _spread(estimates, decimals),
        _spread(tests, decimals),
        ", ".join(gaps) or "—",
        str(len(pairs)),
    ]


def _spread(values: list[float], decimals: int) -> str:
    if not values:
        return "—"
    median = f"{statistics.median(values):.{decimals}f}"
    if len(values) == 1:
        return median
    return f"{median} ({min(values):.{decimals}f}–{max(values):.{decimals}f})"


def _entry(tasks: dict[str, Any], task: str, where: str) -> dict:
    if task not in tasks:
        raise ValueError(f"the {where} record has no task {task!r} (it has {sorted(tasks)})")
    return tasks[task]


def _single(record: dict, task: str) -> tuple[float | None, float | None]:
    if record["kind"] != "finetune":
        raise ValueError(f"single= names a {record['kind']} record; give finetune records")
    t = _entry(record["metrics"]["tasks"], task, "finetune")
    return t["dev"][t["metric"]], t.get("test", {}).get(t["metric"])


def _cv(record: dict, task: str) -> tuple[float | None, float | None]:
    if record["kind"] != "cv":
        raise ValueError(f"cv= names a {record['kind']} record; give cv records")
    t = _entry(record["metrics"]["cv"]["tasks"], task, "cv")
    return t["oof"][t["metric"]], t.get("test", {}).get(t["metric"])


def _ensemble(record: dict, task: str) -> tuple[float | None, float | None]:
    if record["kind"] != "ensemble":
        raise ValueError(f"ensemble= names a {record['kind']} record; give an ensemble record")
    t = _entry(record["metrics"]["ensemble"]["tasks"], task, "ensemble")
    return t.get("dev", {}).get(t["metric"]), t.get("test", {}).get(t["metric"])


def _metric_label(record: dict, task: str) -> str:
    t = record["metrics"]["tasks"][task]
    return t.get("metric_label", t["metric"])
