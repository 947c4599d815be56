"""The fine-tuning loop. Reads top to bottom: set LR -> evaluate on dev, keep the best ->
checkpoint -> stop check -> micro-steps -> clip/step/zero -> guards -> log; a ``last_step`` flag
runs the final evaluation. After the loop the best state (by each task's primary dev metric —
macro-F1, entity F1 for token tasks; their mean for multi-task runs) is restored, the test files
are predicted and the model is exported. What differs between kinds of task is the kind's
(`ptm.tasks.kinds`); what every training loop shares is `ptm.training.loop`'s.

One step trains one task: with several tasks, a seeded draw picks which (P(task) proportional to
its batches per epoch ^ 1/``mix_temperature``), every process drawing the same, so DDP stays in
step. Evaluation and export run on rank 0 only (dev sets are small); the decision to stop is
shared with the other ranks.

Exact resume: a checkpoint (``train.save_every``; by default at every evaluation, and at the end)
holds the model, optimizer, scaler, every process's RNG, the data position of every task's batch
stream and of the task mix, the guards, the best-so-far state with its score and dev decisions,
the early-stopping counter and the history; ``resume=<run dir>`` continues from the newest intact
one to the same dev and test metrics and the same exported weights as a run never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from finetune.config import FinetuneConfig
from ptm.config import flatten, to_plain
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import DivergenceError, InputError
from ptm.models.dropout import use_fast_dropout
from ptm.models.finetuned import export
from ptm.models.heads import TaskModel, build_head, check_vocab, encoder_config, load_encoder
from ptm.progress import format_count, format_duration
from ptm.tasks.batching import batch_order, collate
from ptm.tasks.collapse import CollapseGuard
from ptm.tasks.kinds import TaskKind, load_task
from ptm.tasks.loading import TaskConfig, TaskData
from ptm.tasks.metrics import confusion_image
from ptm.tasks.submission import ZIP_NAME, zip_submissions
from ptm.training import dist, loop
from ptm.training.checkpoint import (
    list_checkpoints,
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ptm.training.guard import DivergenceGuard
from ptm.training.llrd import layer_decay_groups
from ptm.training.mfu import encoder_training_flops
from ptm.training.optim import build_adamw, lr_factor
from ptm.training.runtime import grad_scaler, maybe_compile
from ptm.training.tb import TensorBoard

log = logging.getLogger(__name__)
# Losses below this share of the chance level count as that share in the blow-up check, so noise
# around a near-zero loss late in training is not mistaken for divergence.
LOSS_FLOOR = 0.1


class BatchStream:
    """Endless length-grouped training batches of one task, reshuffled every epoch. Its position
    is two numbers (epoch, batches left): the epoch's order is a function of the seed."""

    def __init__(self, task: TaskData, batch_size: int, seed: int, index: int, group: int | None):
        self.lengths = task.splits["train"].lengths
        self.batch_size, self.seed, self.index, self.group = batch_size, seed, index, group
        self.epoch, self.queue = -1, []

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def _order(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.index, self.epoch])
        return batch_order(self.lengths, self.batch_size, rng, self.group)[::-1]

    def next(self) -> np.ndarray:
        if not self.queue:
            self.epoch += 1
            self.queue = self._order()
        return self.queue.pop()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "left": len(self.queue)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]
        self.queue = self._order()[: state["left"]] if self.epoch >= 0 else []


@dataclass
class Best:
    """The best evaluation so far: its dev score, step, weights (CPU), metrics and decisions."""

    score: float = -math.inf
    step: int = -1
    state: dict | None = None
    dev: dict | None = None
    decisions: dict | None = None  # per task, what its kind chose on dev (a threshold)
    bad_evals: int = 0  # evaluations since, none better: early stopping counts these


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune; returns the metrics (also written to ``metrics.json`` in the run folder)."""
    with loop.session(cfg.runtime) as session:
        return _train(cfg, session)


def train_step(
    forward, ddp, kind: TaskKind, task: str, micro: list[dict], n_items: float, world: int,
    scaler, device: torch.device, precision: str, n_labels: int,
) -> torch.Tensor:  # fmt: skip
    """Forward and backward of one optimizer step of ``task`` over its micro-batches; returns
    ``[loss sum, predictions per class...]`` of this process's share, for the log and guards."""
    stats = torch.zeros(1 + n_labels, device=device, dtype=torch.float64)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        logits = forward(task, **batch)
        part = kind.loss_sum(logits, labels)
        stats[0] += part.detach().double()
        stats[1:] += kind.predicted_counts(logits, labels)
        # DDP averages gradients over processes; scale so the result is sum / n_items.
        return part * (world / n_items)

    loop.accumulate(micro, loss_of, ddp, scaler, device, precision)
    return stats


def _train(cfg: FinetuneConfig, session: loop.Session) -> dict:
    t = cfg.train
    info, device, precision = session.info, session.device, session.precision
    run_dir = Path(cfg.run_dir)

    # Model folder, tokenizer and data, checked against each other before anything trains.
    folder = Path(cfg.model.path)
    config = _model_config(folder)
    tokenizer_from = cfg.model.tokenizer or folder
    tokenizer = load_tokenizer(tokenizer_from)
    check_vocab(len(tokenizer), config, tokenizer_from)
    task_cfgs = [_fit_length(tc, config, tc.name in cfg.fixed_lengths) for tc in cfg.tasks]
    tasks = [load_task(tc, tokenizer, t.limit_examples) for tc in task_cfgs]
    _check_fit(tasks, config, t.batch_size)

    torch.manual_seed(t.seed)
    pooled = any(task.kind.head == "sequence" for task in tasks)
    with_pooler = cfg.head.pooling == "pooler" and pooled
    encoder = load_encoder(folder, cfg.model.init == "pretrained", with_pooler, cfg.model.dropout)
    heads = {
        # The encoder's config: its dropout is the run's (model.dropout), which the heads follow.
        task.name: build_head(task.kind.head, encoder.config, len(task.labels), cfg.head)
        for task in tasks
    }
    model = TaskModel(encoder, heads).to(device)
    use_fast_dropout(model)
    # One task per step: the other heads get no gradient, which DDP must be told about.
    wrapped = (
        DistributedDataParallel(model, find_unused_parameters=len(tasks) > 1)
        if info.world_size > 1
        else model
    )
    forward = maybe_compile(wrapped, cfg.runtime, device)
    groups = layer_decay_groups(model, config.num_hidden_layers, t.layer_decay, t.weight_decay)
    optimizer = build_adamw(groups, t.lr, tuple(t.betas), t.eps, device)
    scaler = grad_scaler(device, precision)
    accum = dist.micro_steps_per_step(t.batch_size, t.micro_batch_size, info.world_size)
    pad_id, multiple = tokenizer.pad_token_id, 8 if device.type == "cuda" else 1

    # Budget, schedule and the task mix.
    group = t.length_group if t.group_by_length else None
    streams = [BatchStream(task, t.batch_size, t.seed, i, group) for i, task in enumerate(tasks)]
    steps_per_epoch = sum(len(s) for s in streams)
    total_steps = math.ceil(t.epochs * steps_per_epoch) if t.epochs > 0 else None
    if t.max_steps is not None:
        total_steps = min(total_steps or t.max_steps, t.max_steps)
    budget = loop.Budget(total_steps, None, t.max_minutes * 60 if t.max_minutes else None)
    eval_every = t.eval_every or steps_per_epoch
    weights = np.array(
        [
            task.cfg.weight if task.cfg.weight is not None else len(s) ** (1 / t.mix_temperature)
            for task, s in zip(tasks, streams, strict=True)
        ]
    )
    mix = weights / weights.sum()
    mixer = np.random.default_rng([t.seed, 1 << 20])
    guards = {task.name: DivergenceGuard(t.guard) for task in tasks}
    collapse = {
        task.name: CollapseGuard(t.collapse, task.name, task.labels, task.chance_loss, t.lr)
        for task in tasks
    }

    # Where the run starts: step 0, or the newest intact checkpoint of ``resume``.
    step, examples, elapsed, evaluated_at, stopped = 0, 0, 0.0, -1, "budget"
    best, history = Best(), []
    resumed_at = None
    saved = Path(cfg.resume) / "checkpoints" if cfg.resume else None
    found = load_latest(saved) if saved else None
    if saved and found is None:
        if list_checkpoints(saved):
            raise InputError(saved, "no checkpoint here loads", "start anew without resume=")
        log.warning("resume=%s has no checkpoint yet: starting from scratch", cfg.resume)
    if found is not None:
        path, state = found
        _load_model_state(model, state["model"], path)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        ranks = state["rng"]
        if len(ranks) != info.world_size:
            log.warning(
                "resuming %d processes from a run of %d: dropout draws will differ from an "
                "uninterrupted run",
                info.world_size,
                len(ranks),
            )
        set_rng_state(ranks[info.rank] if len(ranks) == info.world_size else ranks[0])
        for stream, s in zip(streams, state["streams"], strict=True):
            stream.load_state_dict(s)
        mixer.bit_generator.state = state["mixer"]
        for name, g in state["guards"].items():
            guards[name].load_state_dict(g)
        for name, recent in state["collapse"].items():
            collapse[name].recent.extend(recent)
        best = Best(**state["best"])
        step, examples, elapsed = state["step"], state["examples"], state["elapsed"]
        evaluated_at, stopped, history = state["evaluated_at"], state["stopped"], state["history"]
        resumed_at = step
        log.info("resumed from %s at step %d (best dev score %.4f)", path, step, best.score)

    tb = TensorBoard(run_dir / "tb" if info.is_main else None)
    summary = {
        "run_dir": str(run_dir),
        "model": str(folder),
        "init": cfg.model.init,
        "device": str(device),
        "processes": info.world_size,
        "precision": precision,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tasks": {
            task.name: {
                "kind": task.kind.name,
                "labels": task.labels,
                "max_seq_len": task.cfg.max_seq_len,
                "chance_loss": round(task.chance_loss, 4),
                "mix": round(float(m), 4),
                **{name: len(split) for name, split in task.splits.items()},
            }
            for task, m in zip(tasks, mix, strict=True)
        },
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "max_minutes": t.max_minutes,
        "global_batch": t.batch_size,
        "accumulation": accum,
        "pooling": cfg.head.pooling,
        "resumed_at": resumed_at,
    }
    if info.is_main:
        loop.write_run_summary(run_dir, summary, to_plain(cfg))

    def evaluate(step: int, lr: float) -> tuple[dict, dict, DivergenceError | None]:
        """Dev metrics of every task and what its kind chose on dev (rank 0), logged; a
        collapse is returned, not raised."""
        results, decisions, problem = {}, {}, None
        for task in tasks:
            dev = task.splits["dev"]
            pred = _predict(model, task, "dev", device, precision, t.eval_batch_size, pad_id)
            decisions[task.name] = task.kind.tune(task, dev, pred)
            metrics = task.kind.score(task, dev, pred, decisions[task.name])
            results[task.name] = metrics
            name = task.name
            tb.scalars(
                step,
                {
                    f"dev/{name}/{k}": float(v)
                    for k, v in metrics.items()
                    if isinstance(v, float) and v is not None
                },
            )
            if tb.writer is not None and "confusion_matrix" in metrics:
                image = confusion_image(np.array(metrics["confusion_matrix"]), task.labels)
                tb.writer.add_image(f"dev/{name}/confusion_matrix", image, step)
            log.info(
                "step %d | dev %s | %s %.4f | %s %.4f | loss %.4f",
                step,
                name,
                task.kind.metric,
                metrics[task.kind.metric],
                task.kind.secondary,
                metrics[task.kind.secondary],
                metrics["loss"],
            )
            if problem is None:
                try:
                    collapse[name].check_eval(
                        step, lr, collapse_start(step), metrics["loss"], pred.counts
                    )
                except DivergenceError as e:
                    problem = e
        return results, decisions, problem

    def collapse_start(step: int) -> int:
        """Collapse checks count once warm-up is over and ``min_steps`` have passed."""
        warm = budget.progress(step, 0, elapsed_now()) >= t.warmup_fraction
        return t.collapse.min_steps if warm else step + 1

    def elapsed_now() -> float:
        return elapsed + time.perf_counter() - clock

    def checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": loop.gather(rng_state()),
            "streams": [s.state_dict() for s in streams],
            "mixer": mixer.bit_generator.state,
            "guards": {name: g.state_dict() for name, g in guards.items()},
            "collapse": {name: list(c.recent) for name, c in collapse.items()},
            "best": {f.name: getattr(best, f.name) for f in dataclasses.fields(best)},
            "step": step,
            "examples": examples,
            "elapsed": elapsed_now(),
            "evaluated_at": evaluated_at,
            "stopped": stopped,
            "history": history,
        }
        if info.is_main:
            save_checkpoint(run_dir / "checkpoints", step, state, t.keep_checkpoints)

    clock = time.perf_counter()
    start_examples, start_progress = examples, budget.progress(step, 0, elapsed)
    meter = loop.Meter(session.peak, info.world_size)
    model.train()
    while True:
        progress = budget.progress(step, 0, elapsed_now())
        last_step = progress >= 1.0
        lr = t.lr * lr_factor(progress, t.warmup_fraction, t.decay, t.min_lr_fraction)
        loop.set_lr(optimizer, lr)

        evaluating = ((step > 0 and step % eval_every == 0) or last_step) and step != evaluated_at
        if evaluating:
            status = torch.zeros(2, device=device)  # (stop early, collapsed)
            problem = None
            if info.is_main:
                dev, decisions, problem = evaluate(step, lr)
                dev_score = float(np.mean([dev[x.name][x.kind.metric] for x in tasks]))
                history.append({"step": step, "epoch": step / steps_per_epoch, "score": dev_score})
                tb.scalars(step, {"dev/score": dev_score, "train/epoch": step / steps_per_epoch})
                if dev_score > best.score + t.min_delta or best.state is None:
                    best = Best(dev_score, step, _cpu_state(model), dev, decisions, 0)
                    log.info("step %d | new best dev score %.4f", step, dev_score)
                else:
                    best.bad_evals += 1
                    if t.patience is not None and best.bad_evals >= t.patience:
                        status[0] = 1
                status[1] = float(problem is not None)
            dist.all_reduce_sum(status)
            evaluated_at = step
            if status[1] > 0:
                raise problem or DivergenceError("training collapsed (see rank 0's message)")
            if status[0] > 0 and not last_step:
                stopped = "early_stopping"
                log.info(
                    "step %d | no better dev score in %d evaluations: stopping early (best %.4f "
                    "at step %d)",
                    step,
                    t.patience,
                    best.score,
                    best.step,
                )
        ending = last_step or stopped == "early_stopping"
        saving = evaluating if t.save_every is None else step % t.save_every == 0
        if step > 0 and step != resumed_at and (saving or ending):
            checkpoint()
        if ending:
            break

        # One optimizer step on one task: its global batch, split over processes and micro-steps.
        k = int(mixer.choice(len(tasks), p=mix)) if len(tasks) > 1 else 0
        task = tasks[k]
        train = task.splits["train"]
        positions = streams[k].next()
        chunks = [a * info.world_size + info.rank for a in range(accum)]
        micro = [
            collate(
                train,
                positions[c * t.micro_batch_size : (c + 1) * t.micro_batch_size],
                pad_id,
                multiple,
            )
            for c in chunks
        ]
        # Items and tokens of the whole global batch, counted before the copy to the device.
        counted = torch.tensor(
            [
                sum(task.kind.count_items(m["labels"]) for m in micro),
                sum(int(m["attention_mask"].sum()) for m in micro),
                sum(encoder_training_flops(config, *m["input_ids"].shape) for m in micro),
            ],
            dtype=torch.float64,
        ).to(device)
        micro = [{k2: v.to(device, non_blocking=True) for k2, v in m.items()} for m in micro]
        dist.all_reduce_sum(counted)
        n_items, step_tokens = max(counted[0].item(), 1.0), int(counted[1].item())

        stats = train_step(
            forward, wrapped, task.kind, task.name, micro, n_items, info.world_size, scaler,
            device, precision, len(task.labels),
        )  # fmt: skip
        grad_norm = loop.optimizer_step(model, optimizer, scaler, t.grad_clip)

        reduced = dist.all_reduce_sum(stats)
        train_loss = reduced[0].item() / n_items
        loop.check_divergence(
            guards[task.name], step, train_loss, lr, LOSS_FLOOR * task.chance_loss
        )
        collapse[task.name].update(train_loss, reduced[1:].cpu().numpy())
        collapse[task.name].check_training(step, lr, collapse_start(step))
        step += 1
        examples += t.batch_size
        meter.add(t.batch_size, step_tokens, counted[2].item())

        if step % t.log_every == 0:
            rates = meter.lap()
            tb.scalars(
                step,
                {
                    f"train/{task.name}/loss": train_loss,
                    "train/loss": train_loss,
                    "train/lr": lr,
                    "train/grad_norm": float(grad_norm),
                    **{f"train/{k}": v for k, v in rates.items()},
                },
            )
            done = budget.progress(step, 0, elapsed_now())
            fields = (
                f"epoch {step / steps_per_epoch:.2f} | {task.name} loss {train_loss:.4f} | "
                f"lr {lr:.2e}"
            )
            left = loop.eta(time.perf_counter() - clock, done, start_progress)
            rate = f"{format_count(rates['examples_per_s'])} ex/s"
            log.info(loop.progress_line(step, fields, rate, rates.get("mfu"), done, left))

    wall = time.perf_counter() - clock
    final = {
        "best": {"step": best.step, "epoch": best.step / steps_per_epoch, "dev_score": best.score},
        "selected_on": "dev "
        + " / ".join(f"{x.name} {x.kind.metric}" for x in tasks)
        + (" (mean)" if len(tasks) > 1 else ""),
        "stopped": stopped,
        "steps": step,
        "examples": examples,
        "wall_seconds": round(wall, 2),
        "examples_per_s": round((examples - start_examples) / max(wall, 1e-9), 1),
        "tasks": {},
        "history": history,
    }
    if resumed_at is not None:
        final["resumed_at"] = resumed_at
    if info.is_main:
        for task in tasks:  # a one-class model at chance loss is not worth exporting
            warning = collapse[task.name].check_final(step, lr, best.dev[task.name])
            if warning:
                log.warning("%s", warning)
                final.setdefault("warnings", []).append(warning)
        model.load_state_dict(best.state)
        for task in tasks:
            decision = best.decisions[task.name]
            entry = {
                "kind": task.kind.name,
                "metric": task.kind.metric,
                "metric_label": task.kind.metric_label,
                "labels": task.labels,
                "dev": best.dev[task.name],
            }
            if "test" in task.splits:
                test = task.splits["test"]
                pred = _predict(model, task, "test", device, precision, t.eval_batch_size, pad_id)
                entry["predictions"] = task.kind.write_submission(
                    run_dir / "predictions" / task.name, task, pred, decision
                )
                if test.has_answers:
                    entry["test"] = task.kind.score(task, test, pred, decision)
            final["tasks"][task.name] = entry
        predictions = [e.get("predictions", {}) for e in final["tasks"].values()]
        jsonl = [p["submission_jsonl"] for p in predictions if "submission_jsonl" in p]
        bundle = zip_submissions(run_dir / "predictions" / ZIP_NAME, jsonl)
        if bundle:
            final["submission_zip"] = bundle
        if len(tasks) > 1:
            final["mean"] = _mean_scores(final["tasks"])
        model_dir = run_dir / "model"
        hf_class = export(model, tokenizer, _export_meta(cfg, tasks, best.decisions), model_dir)
        final["model"] = {"dir": str(model_dir), "hf_class": hf_class}
        loop.write_metrics(run_dir, final)
        tb.hparams(
            flatten({k: v for k, v in to_plain(cfg).items() if k in ("model", "head", "train")}),
            _headline(final),
        )
        _report(run_dir, final, tasks)
    tb.close()
    return final


def _model_config(folder: Path):
    if not folder.exists():
        hint = (
            "run `make pretrain` first, or set model.path to a model folder"
            if "pretrain" in str(folder)
            else "check model.path"
        )
        raise InputError(folder, "no such model folder", hint)
    return encoder_config(folder)


def _fit_length(task: TaskConfig, config, fixed: bool) -> TaskConfig:
    """A task's length follows the model it fine-tunes: a length from the task file that the
    model has no positions for is capped at the model's (logged); one the user set on the command
    line (``fixed``) is kept, and one too long is an error."""
    positions = config.max_position_embeddings
    if task.max_seq_len <= positions:
        return task
    if fixed:
        raise InputError(
            None,
            f"tasks.{task.name}.max_seq_len={task.max_seq_len} exceeds the model's {positions} "
            "positions",
            f"set tasks.{task.name}.max_seq_len={positions} or less",
        )
    log.info(
        "task %s: max_seq_len %d capped at the model's %d positions (set tasks.%s.max_seq_len to "
        "choose another length)",
        task.name,
        task.max_seq_len,
        positions,
        task.name,
    )
    return dataclasses.replace(task, max_seq_len=positions)


def _check_fit(tasks: list[TaskData], config, batch_size: int) -> None:
    for task in tasks:
        task.kind.check_model(task, config)
        n = len(task.splits["train"])
        if n < batch_size:
            raise InputError(
                task.splits["train"].path,
                f"{n} training examples are fewer than train.batch_size={batch_size}",
                "lower train.batch_size (and train.micro_batch_size)",
            )


def _load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # another model, head or label set than this run builds
        first = str(e).splitlines()[0]
        raise InputError(
            path,
            f"the checkpoint does not fit this run's model ({first})",
            "resume with the settings of the run that wrote it (model, tasks, head)",
        ) from e


def _predict(model, task: TaskData, split: str, device, precision, batch_size, pad_id):
    return task.kind.predict(model, task, task.splits[split], device, precision, batch_size, pad_id)


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
