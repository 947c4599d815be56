"""The report's text (``report.md``) and its label-efficiency plot, from the rows of its runs
(`finetune.report` runs them and keeps them in ``report.json``).

A row is ``{"task", "kind", "mode", "seed", "budget", "rows", "status", "dev", "test",
"seconds"}`` (a failed one has ``error`` instead of scores). What differs between kinds — the
metric's name, the classical baseline's name — is asked of the kind (`ptm.tasks.kinds`,
`ptm.tasks.baselines`).
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from ptm.config import CONF_DIR, flatten, override_key
from ptm.plots import draw_curves, matplotlib_or_none
from ptm.tasks.baselines import BASELINES
from ptm.tasks.kinds import kind_named

if TYPE_CHECKING:
    from finetune.report import ReportConfig

log = logging.getLogger(__name__)
MODES = {
    "pretrained": "pretrained -> fine-tuned",
    "scratch": "same model from scratch",
    "tfidf": "classical baseline",
}
CURVE_PNG = "label_efficiency.png"


def budget_order(budgets: list[int | None]) -> list[int | None]:
    """Smallest first, every row (None) last: the cheap runs report early."""
    return sorted(budgets, key=lambda b: math.inf if b is None else b)


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _model_name(kind: str, mode: str) -> str:
    """A row's model: the mode's name, or for the baseline the name of the kind's own."""
    baseline = kind_named(kind).baseline
    return BASELINES[baseline].label if mode == "tfidf" and baseline else MODES[mode]


def _baseline_notes(results: list[dict]) -> str:
    """`` The TF-IDF model ... agree; the window tagger (SGD) is seeded.``: how the seeds of the
    baselines in the report differ, or nothing without baseline runs."""
    used = dict.fromkeys(kind_named(r["kind"]).baseline for r in results if r["mode"] == "tfidf")
    text = "; ".join(BASELINES[b].note for b in used if b is not None)
    return f" {text[0].upper()}{text[1:]}." if text else ""


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
    """``report.md``: the headline table (every training row, or the largest budget), the verdict
    per task, the label-efficiency curve where there are several budgets, the failed runs."""
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
        + "."
        + _baseline_notes(results),
        "",
        f"| task | metric | model | {split} median | {split} spread | dev median | "
        f"per-seed {split} | seconds / run | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for task in dict.fromkeys(r["task"] for r in results):
        kind = next(r["kind"] for r in results if r["task"] == task)
        metric = kind_named(kind).metric_label
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
        for budget in budget_order(list({r.get("budget") for r in results if r["task"] == task})):
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
    plt = matplotlib_or_none()
    if plt is None:
        log.info(
            "report: matplotlib is not installed, so the label-efficiency curve is a table only"
        )
        return None
    split = "test" if all("test" in r for r in ok) else "dev"
    curves: dict[str, dict[str, list[list[float]]]] = {}
    ylabels = {}
    for task in dict.fromkeys(r["task"] for r in results):
        runs = [r for r in ok if r["task"] == task]
        if not runs:
            continue
        kind = runs[0]["kind"]
        ylabels[task] = f"{split} {kind_named(kind).metric_label}"
        for mode in dict.fromkeys(r["mode"] for r in runs):
            points: dict[int, list[float]] = {}
            for r in runs:
                if r["mode"] == mode:
                    points.setdefault(r["rows"], []).append(r[split])
            curves.setdefault(task, {})[_model_name(kind, mode)] = [
                [x, *_stats(points[x])] for x in sorted(points)
            ]
    return draw_curves(plt, curves, ylabels, path)


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
