"""What a fine-tuning run reports: dev evaluation with the choice of the best step and early
stopping, then — after the loop — the best state restored, the test files predicted, the model
exported and ``metrics.json`` written.

The best step is chosen on each task's primary dev metric (its kind's: macro-F1, entity F1 for
token tasks), their mean for multi-task runs. Evaluation and export run on rank 0 only (dev sets
are small); the decision to stop is shared with the other ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from finetune.config import FinetuneConfig
from finetune.state import Best, FinetuneState
from ptm.config import flatten, to_plain
from ptm.errors import DivergenceError
from ptm.models.card import CardInfo
from ptm.models.finetuned import export
from ptm.progress import format_count, format_duration
from ptm.records import command_line
from ptm.tasks.inference import Prediction
from ptm.tasks.metrics import confusion_image
from ptm.tasks.splits import TaskData
from ptm.tasks.submission import ZIP_NAME, write_probabilities, zip_submissions
from ptm.training import dist, loop

if TYPE_CHECKING:
    from finetune.train import Finetuning

log = logging.getLogger(__name__)


def predict(f: Finetuning, model: torch.nn.Module, task: TaskData, split: str) -> Prediction:
    t, device = f.cfg.train, f.ctx.device
    return task.kind.predict(
        model, task, task.splits[split], device, f.ctx.precision, t.eval_batch_size, f.pad_id,
        padding=f.cfg.runtime.padding,
    )  # fmt: skip


def evaluate_and_select(
    f: Finetuning, state: FinetuneState, lr: float, collapse_from: int, last_step: bool
) -> None:
    """Evaluate on dev (rank 0), keep the best state, count evaluations without progress, and
    stop early after ``train.patience`` of them (every process agrees); a collapse seen on dev
    stops the run."""
    t, step = f.cfg.train, state.step
    status = torch.zeros(2, device=f.ctx.device)  # (stop early, collapsed)
    problem = None
    if f.session.is_main:
        dev, decisions, problem = evaluate_dev(f, state, lr, collapse_from)
        dev_score = float(np.mean([dev[x.name][x.kind.metric] for x in f.tasks]))
        epoch = step / f.steps_per_epoch
        state.history.append({"step": step, "epoch": epoch, "score": dev_score})
        f.tb.scalars(step, {"dev/score": dev_score, "train/epoch": epoch})
        best = state.best
        if dev_score > best.score + t.min_delta or best.state is None:
            state.best = Best(dev_score, step, _cpu_state(state.model), dev, decisions, 0)
            log.info("step %d | new best dev score %.4f", step, dev_score)
        else:
            best.bad_evals += 1
            if t.patience is not None and best.bad_evals >= t.patience:
                status[0] = 1
        status[1] = float(problem is not None)
    dist.all_reduce_sum(status)
    state.evaluated_at = step
    if status[1] > 0:
        raise problem or DivergenceError("training collapsed (see rank 0's message)")
    if status[0] > 0 and not last_step:
        state.stopped = "early_stopping"
        log.info(
            "step %d | no better dev score in %d evaluations: stopping early (best %.4f at step %d)",
            step,
            t.patience,
            state.best.score,
            state.best.step,
        )


def evaluate_dev(
    f: Finetuning, state: FinetuneState, lr: float, collapse_from: int
) -> tuple[dict, dict, DivergenceError | None]:
    """Dev metrics of every task and what its kind chose on dev (rank 0), logged; a collapse is
    returned, not raised."""
    results, decisions, problem = {}, {}, None
    step = state.step
    for task in f.tasks:
        dev, name = task.splits["dev"], task.name
        pred = predict(f, state.model, task, "dev")
        decisions[name] = task.kind.tune(task, dev, pred)
        metrics = task.kind.score(task, dev, pred, decisions[name])
        results[name] = metrics
        f.tb.scalars(
            step,
            {
                f"dev/{name}/{k}": float(v)
                for k, v in metrics.items()
                if isinstance(v, float) and v is not None
            },
        )
        if f.tb.writer is not None and "confusion_matrix" in metrics:
            image = confusion_image(np.array(metrics["confusion_matrix"]), task.labels)
            f.tb.writer.add_image(f"dev/{name}/confusion_matrix", image, step)
        kind = task.kind
        log.info(
            "step %d | dev %s | %s %.4f | %s %.4f | loss %.4f",
            step,
            name,
            kind.metric,
            metrics[kind.metric],
            kind.secondary,
            metrics[kind.secondary],
            metrics["loss"],
        )
        if problem is None:
            try:
                state.collapse[name].check_eval(
                    step, lr, collapse_from, metrics["loss"], pred.counts
                )
            except DivergenceError as e:
                problem = e
    return results, decisions, problem


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def finish(f: Finetuning, state: FinetuneState, lr: float, start_examples: int) -> dict:
    """The run's metrics; on rank 0 also the best state restored, the test files predicted, the
    model exported, ``metrics.json`` and TensorBoard's hyperparameters written."""
    wall = state.clock.since_start()
    best, tasks = state.best, f.tasks
    final = {
        "best": {
            "step": best.step,
            "epoch": best.step / f.steps_per_epoch,
            "dev_score": best.score,
        },
        "selected_on": "dev "
        + " / ".join(f"{x.name} {x.kind.metric}" for x in tasks)
        + (" (mean)" if len(tasks) > 1 else ""),
        "stopped": state.stopped,
        "steps": state.step,
        "examples": state.examples,
        "wall_seconds": round(wall, 2),
        "examples_per_s": round((state.examples - start_examples) / max(wall, 1e-9), 1),
        "tasks": {},
        "history": state.history,
    }
    if f.resumed_at is not None:
        final["resumed_at"] = f.resumed_at
    if f.session.is_main:
        for task in tasks:  # a one-class model at chance loss is not worth exporting
            warning = state.collapse[task.name].check_final(state.step, lr, best.dev[task.name])
            if warning:
                log.warning("%s", warning)
                final.setdefault("warnings", []).append(warning)
        state.model.load_state_dict(best.state)
        _predict_test(f, state, final)
        model_dir = f.run_dir / "model"
        meta = _export_meta(f.cfg, tasks, best.decisions)
        config = loop.resolved_config(f.cfg, f.session)
        card = CardInfo(kind="finetune", command=command_line(), config=config, metrics=final)
        hf_class = export(state.model, f.tokenizer, meta, model_dir, card)
        final["model"] = {"dir": str(model_dir), "hf_class": hf_class}
        loop.write_metrics(f.run_dir, final)
        loop.write_record(f.run_dir, "finetune", config, _recorded(final), f.started, f.session)
        f.tb.hparams(
            flatten({k: v for k, v in to_plain(f.cfg).items() if k in ("model", "head", "train")}),
            _headline(final),
        )
        _report(f.run_dir, final, tasks)
    f.tb.close()
    return final


def _predict_test(f: Finetuning, state: FinetuneState, final: dict) -> None:
    """Every task's dev metrics, its test predictions and submission (scored where the answers
    are known), and the zip of the tasks' JSON-lines submissions."""
    for task in f.tasks:
        decision = state.best.decisions[task.name]
        entry = {
            "kind": task.kind.name,
            "metric": task.kind.metric,
            "metric_label": task.kind.metric_label,
            "labels": task.labels,
            "dev": state.best.dev[task.name],
        }
        if task.kind.averaged:  # what cross-validation and ensembles average
            entry["predictions"] = _write_held_out(f, state, task)
        if "test" in task.splits:
            test = task.splits["test"]
            pred = predict(f, state.model, task, "test")
            entry["predictions"] = {
                **entry.get("predictions", {}),
                **task.kind.write_submission(
                    f.run_dir / "predictions" / task.name, task, pred, decision
                ),
            }
            if test.has_answers:
                entry["test"] = task.kind.score(task, test, pred, decision)
        final["tasks"][task.name] = entry
    predictions = [e.get("predictions", {}) for e in final["tasks"].values()]
    jsonl = [p["submission_jsonl"] for p in predictions if "submission_jsonl" in p]
    bundle = zip_submissions(f.run_dir / "predictions" / ZIP_NAME, jsonl)
    if bundle:
        final["submission_zip"] = bundle
    if len(f.tasks) > 1:
        final["mean"] = _mean_scores(final["tasks"])


def _recorded(final: dict) -> dict:
    """The metrics a record keeps: all but the per-evaluation history (the scores are there)."""
    return {k: v for k, v in final.items() if k != "history"}


def _write_held_out(f: Finetuning, state: FinetuneState, task: TaskData) -> dict[str, str]:
    """The best model's class probabilities on dev and, in a cross-validation fold, on the
    held-out fold (``oof``), each row with its file line: ``predictions/<task>/<split>_
    probabilities.csv``, what `finetune.cv` and `finetune.ensemble` average."""
    out, seen = {}, {}
    for name in ("dev", "oof"):
        split = task.splits.get(name)
        if split is None:
            continue
        if id(split) not in seen:  # a fold without a dev file selects on its held-out part
            seen[id(split)] = predict(f, state.model, task, name).probs
        path = f.run_dir / "predictions" / task.name / f"{name}_probabilities.csv"
        out[f"{name}_probabilities"] = write_probabilities(
            path, task.labels, split.lines, seen[id(split)]
        )
    return out


def _export_meta(cfg: FinetuneConfig, tasks: list[TaskData], decisions: dict) -> dict:
    return {
        "tasks": {
            task.name: task.kind.export_meta(task, cfg.head, decisions[task.name]) for task in tasks
        },
        "base_model": str(cfg.model.path),
        "init": cfg.model.init,
    }


def _mean_scores(entries: dict) -> dict:
    """The mean of every task's selection metric on dev (what the best step was chosen on) and,
    when every task was scored there, on test: the Tianchi multi-task competition ranks by the
    mean of its three macro-F1s."""
    out = {
        "of": {name: e["metric"] for name, e in entries.items()},
        "dev": float(np.mean([e["dev"][e["metric"]] for e in entries.values()])),
    }
    if all("test" in e for e in entries.values()):
        out["test"] = float(np.mean([e["test"][e["metric"]] for e in entries.values()]))
    return out


def _headline(final: dict) -> dict[str, float]:
    out = {"dev_score": final["best"]["dev_score"]}
    for name, entry in final["tasks"].items():
        metric = entry["metric"]
        out[f"{name}/dev_{metric}"] = entry["dev"][metric]
        if "test" in entry:
            out[f"{name}/test_{metric}"] = entry["test"][metric]
    return out


def _report(run_dir: Path, final: dict, tasks: list[TaskData]) -> None:
    """The last lines of the log: the scores, and where every output went."""
    for task in tasks:
        entry = final["tasks"][task.name]
        metric = entry["metric"]
        test = f", test {metric} {entry['test'][metric]:.4f}" if "test" in entry else ""
        log.info("%s: dev %s %.4f%s", task.name, metric, entry["dev"][metric], test)
    if "mean" in final:
        test = f", test {final['mean']['test']:.4f}" if "test" in final["mean"] else ""
        log.info("mean of the tasks: dev %.4f%s", final["mean"]["dev"], test)
    log.info(
        "best step %d of %d (%s), %s, %s ex/s",
        final["best"]["step"],
        final["steps"],
        final["stopped"],
        format_duration(final["wall_seconds"]),
        format_count(final["examples_per_s"]),
    )
    log.info("model:         %s  (%s)", final["model"]["dir"], final["model"]["hf_class"] or "ptm")
    log.info("metrics:       %s", run_dir / "metrics.json")
    for name, entry in final["tasks"].items():
        for what, path in entry.get("predictions", {}).items():
            log.info("%-14s %s (%s)", what + ":", path, name)
    if "submission_zip" in final:
        log.info("%-14s %s", "zip:", final["submission_zip"])
    log.info("tensorboard:   tensorboard --logdir %s", run_dir / "tb")
