"""The fine-tuning loop. Reads top to bottom: set LR -> evaluate on dev, keep the best -> stop
check -> micro-steps -> clip/step/zero -> guards -> log; a ``last_step`` flag runs the final
evaluation. After the loop the best state (by dev macro-F1, or entity F1 for token tasks; the
mean over tasks for multi-task runs) is restored, the test files are predicted and the model is
exported.

One step trains one task: with several tasks, a seeded draw picks which (P(task) proportional to
its batches per epoch ^ 1/``mix_temperature``), every process drawing the same, so DDP stays in
step. Evaluation and export run on rank 0 only (dev sets are small); the decision to stop is
shared with the other ranks.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
from ptm.tasks.inference import Prediction, predict, score
from ptm.tasks.loading import IGNORE, TaskData, load_task
from ptm.tasks.metrics import confusion_image, primary
from ptm.training import dist, runtime
from ptm.training.guard import DivergenceGuard
from ptm.training.llrd import layer_decay_groups
from ptm.training.mfu import encoder_training_flops, peak_flops, utilisation
from ptm.training.optim import build_adamw, lr_factor
from ptm.training.rundir import point_latest
from ptm.training.runtime import autocast, grad_scaler, maybe_compile
from ptm.training.tb import TensorBoard

log = logging.getLogger(__name__)
# Losses below this share of the chance level count as that share in the blow-up check, so noise
# around a near-zero loss late in training is not mistaken for divergence.
LOSS_FLOOR = 0.1


class BatchStream:
    """Endless length-grouped training batches of one task, reshuffled every epoch."""

    def __init__(self, task: TaskData, batch_size: int, seed: int, index: int, group: int | None):
        self.lengths = task.splits["train"].lengths
        self.batch_size, self.seed, self.index, self.group = batch_size, seed, index, group
        self.epoch, self.queue = -1, []

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def next(self) -> np.ndarray:
        if not self.queue:
            self.epoch += 1
            rng = np.random.default_rng([self.seed, self.index, self.epoch])
            self.queue = batch_order(self.lengths, self.batch_size, rng, self.group)[::-1]
        return self.queue.pop()


@dataclass
class Best:
    score: float = -math.inf
    step: int = -1
    state: dict | None = None
    dev: dict | None = None
    bad_evals: int = 0


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune; returns the metrics (also written to ``metrics.json`` in the run folder)."""
    with dist.process_group(cfg.runtime.device) as info:
        return _train(cfg, info)


def _train(cfg: FinetuneConfig, info: dist.DistInfo) -> dict:
    t = cfg.train
    device = info.device
    run_dir = Path(cfg.run_dir)
    precision = runtime.prepare(cfg.runtime, device)

    # Model folder, tokenizer and data, checked against each other before anything trains.
    folder = Path(cfg.model.path)
    config = _model_config(folder)
    tokenizer_from = cfg.model.tokenizer or folder
    tokenizer = load_tokenizer(tokenizer_from)
    check_vocab(len(tokenizer), config, tokenizer_from)
    tasks = [load_task(tc, tokenizer, t.limit_examples) for tc in cfg.tasks]
    _check_fit(tasks, config, t.batch_size)

    torch.manual_seed(t.seed)
    sequence_tasks = [task for task in tasks if not task.cfg.is_tokens]
    with_pooler = cfg.head.pooling == "pooler" and bool(sequence_tasks)
    encoder = load_encoder(folder, cfg.model.init == "pretrained", with_pooler)
    heads = {
        task.name: build_head(task.cfg.kind, config, len(task.labels), cfg.head) for task in tasks
    }
    model = TaskModel(encoder, heads).to(device)
    use_fast_dropout(model)
    # One task per step: the other heads get no gradient, which DDP must be told about.
    wrapped = (
        DistributedDataParallel(model, find_unused_parameters=len(tasks) > 1)
        if info.world_size > 1
        else model
    )
    forward = maybe_compile(wrapped, cfg.runtime.compile, device)
    groups = layer_decay_groups(model, config.num_hidden_layers, t.layer_decay, t.weight_decay)
    optimizer = build_adamw(groups, t.lr, tuple(t.betas), t.eps, device)
    scaler = grad_scaler(device, precision)
    peak = peak_flops(device, precision, cfg.runtime.tf32, cfg.runtime.peak_tflops)
    accum = dist.micro_steps_per_step(t.batch_size, t.micro_batch_size, info.world_size)
    pad_id, multiple = tokenizer.pad_token_id, 8 if device.type == "cuda" else 1

    # Budget, schedule and the task mix.
    group = t.length_group if t.group_by_length else None
    streams = [BatchStream(task, t.batch_size, t.seed, i, group) for i, task in enumerate(tasks)]
    steps_per_epoch = sum(len(s) for s in streams)
    total_steps = math.ceil(t.epochs * steps_per_epoch) if t.epochs > 0 else None
    if t.max_steps is not None:
        total_steps = min(total_steps or t.max_steps, t.max_steps)
    max_seconds = t.max_minutes * 60 if t.max_minutes else None
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
                "kind": task.cfg.kind,
                "labels": task.labels,
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
    }
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        point_latest(run_dir)
        log.info("run summary: %s", json.dumps(summary))
        (run_dir / "run.json").write_text(
            json.dumps({"summary": summary, "config": to_plain(cfg)}, indent=2) + "\n"
        )

    def progress_at(step: int, seconds: float) -> float:
        parts = [step / total_steps if total_steps else 0.0]
        parts.append(seconds / max_seconds if max_seconds else 0.0)
        return max(parts)

    def evaluate(step: int, lr: float) -> tuple[dict, DivergenceError | None]:
        """Dev metrics of every task (rank 0), logged; a collapse is returned, not raised."""
        results, problem = {}, None
        for task in tasks:
            dev = task.splits["dev"]
            pred = _predict(model, task, "dev", device, precision, t.eval_batch_size, pad_id)
            metrics = score(task.cfg.kind, dev, pred, task.labels)
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
            if tb.writer is not None:
                image = confusion_image(np.array(metrics["confusion_matrix"]), task.labels)
                tb.writer.add_image(f"dev/{name}/confusion_matrix", image, step)
            log.info(
                "step %d | dev %s | %s %.4f | accuracy %.4f | loss %.4f",
                step,
                name,
                primary(task.cfg.kind),
                metrics[primary(task.cfg.kind)],
                metrics.get("accuracy", metrics.get("tag_accuracy")),
                metrics["loss"],
            )
            if problem is None:
                try:
                    collapse[name].check_eval(
                        step, lr, collapse_start(step), metrics["loss"], pred.counts
                    )
                except DivergenceError as e:
                    problem = e
        return results, problem

    def collapse_start(step: int) -> int:
        """Collapse checks count once warm-up is over and ``min_steps`` have passed."""
        warm = progress_at(step, time.perf_counter() - clock) >= t.warmup_fraction
        return t.collapse.min_steps if warm else step + 1

    best = Best()
    history = []
    step, examples, stopped = 0, 0, "budget"
    clock = time.perf_counter()
    window_examples, window_tokens, window_flops, window_start = 0, 0, 0.0, clock
    model.train()
    while True:
        elapsed = time.perf_counter() - clock
        progress = progress_at(step, elapsed)
        last_step = progress >= 1.0
        lr = t.lr * lr_factor(progress, t.warmup_fraction, t.decay, t.min_lr_fraction)
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]

        if (step > 0 and step % eval_every == 0) or last_step:
            status = torch.zeros(2, device=device)  # (stop early, collapsed)
            problem = None
            if info.is_main:
                dev, problem = evaluate(step, lr)
                dev_score = float(np.mean([dev[x.name][primary(x.cfg.kind)] for x in tasks]))
                history.append({"step": step, "epoch": step / steps_per_epoch, "score": dev_score})
                tb.scalars(step, {"dev/score": dev_score, "train/epoch": step / steps_per_epoch})
                if dev_score > best.score + t.min_delta or best.state is None:
                    best = Best(dev_score, step, _cpu_state(model), dev, 0)
                    log.info("step %d | new best dev score %.4f", step, dev_score)
                else:
                    best.bad_evals += 1
                    if t.patience is not None and best.bad_evals >= t.patience:
                        status[0] = 1
                status[1] = float(problem is not None)
            dist.all_reduce_sum(status)
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
                break
        if last_step:
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
                sum(int((m["labels"] != IGNORE).sum()) for m in micro),
                sum(int(m["attention_mask"].sum()) for m in micro),
                sum(encoder_training_flops(config, *m["input_ids"].shape) for m in micro),
            ],
            dtype=torch.float64,
        ).to(device)
        micro = [{k2: v.to(device, non_blocking=True) for k2, v in m.items()} for m in micro]
        dist.all_reduce_sum(counted)
        n_items, step_tokens = max(counted[0].item(), 1.0), int(counted[1].item())
        window_flops += counted[2].item()

        stats = torch.zeros(1, device=device, dtype=torch.float64)
        predicted = torch.zeros(len(task.labels), device=device, dtype=torch.float64)
        for i, batch in enumerate(micro):
            labels = batch.pop("labels")
            sync = i == len(micro) - 1 or info.world_size == 1
            with nullcontext() if sync else wrapped.no_sync(), autocast(device, precision):
                logits = forward(task.name, **batch)
                flat = logits.float().reshape(-1, len(task.labels))
                part = F.cross_entropy(
                    flat, labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
                )
                # DDP averages gradients over processes; scale so the result is sum / n_items.
                loss = part * (info.world_size / n_items)
            scaler.scale(loss).backward()
            stats[0] += part.detach().double()
            keep = labels.reshape(-1) != IGNORE
            predicted += torch.bincount(
                flat.detach().argmax(-1)[keep], minlength=len(task.labels)
            ).double()

        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf")
        )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        reduced = dist.all_reduce_sum(torch.cat([stats, predicted]))
        train_loss = reduced[0].item() / n_items
        floor = LOSS_FLOOR * task.chance_loss
        guards[task.name].check(
            step, max(train_loss, floor) if math.isfinite(train_loss) else train_loss, lr
        )
        collapse[task.name].update(train_loss, reduced[1:].cpu().numpy())
        collapse[task.name].check_training(step, lr, collapse_start(step))
        step += 1
        examples += t.batch_size
        window_examples += t.batch_size
        window_tokens += step_tokens

        if step % t.log_every == 0:
            now = time.perf_counter()
            rate = window_examples / max(now - window_start, 1e-9)
            mfu = utilisation(window_flops, now - window_start, peak, info.world_size)
            tb.scalars(
                step,
                {
                    f"train/{task.name}/loss": train_loss,
                    "train/loss": train_loss,
                    "train/lr": lr,
                    "train/grad_norm": float(grad_norm),
                    "train/examples_per_s": rate,
                    "train/tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                    **({"train/mfu": mfu} if mfu is not None else {}),
                },
            )
            done = progress_at(step, now - clock)
            eta = (now - clock) * (1 - done) / max(done, 1e-9)
            log.info(
                "step %d | epoch %.2f | %s loss %.4f | lr %.2e | %s ex/s%s | %3.0f%% | ETA %s",
                step,
                step / steps_per_epoch,
                task.name,
                train_loss,
                lr,
                format_count(rate),
                "" if mfu is None else f" | MFU {100 * mfu:.1f}%",
                100 * done,
                format_duration(eta),
            )
            window_examples, window_tokens, window_flops, window_start = 0, 0, 0.0, now

    wall = time.perf_counter() - clock
    final = {
        "best": {"step": best.step, "epoch": best.step / steps_per_epoch, "dev_score": best.score},
        "selected_on": "dev "
        + " / ".join(f"{x.name} {primary(x.cfg.kind)}" for x in tasks)
        + (" (mean)" if len(tasks) > 1 else ""),
        "stopped": stopped,
        "steps": step,
        "examples": examples,
        "wall_seconds": round(wall, 2),
        "examples_per_s": round(examples / max(wall, 1e-9), 1),
        "tasks": {},
        "history": history,
    }
    if info.is_main:
        for task in tasks:  # a one-class model at chance loss is not worth exporting
            collapse[task.name].check_final(step, lr, best.dev[task.name])
        model.load_state_dict(best.state)
        for task in tasks:
            entry = {
                "metric": primary(task.cfg.kind),
                "labels": task.labels,
                "dev": best.dev[task.name],
            }
            if "test" in task.splits:
                test = task.splits["test"]
                pred = _predict(model, task, "test", device, precision, t.eval_batch_size, pad_id)
                entry["predictions"] = _write_predictions(
                    run_dir / "predictions" / task.name, task, pred
                )
                if test.has_answers:
                    entry["test"] = score(task.cfg.kind, test, pred, task.labels)
            final["tasks"][task.name] = entry
        model_dir = run_dir / "model"
        hf_class = export(model, tokenizer, _export_meta(cfg, tasks), model_dir)
        final["model"] = {"dir": str(model_dir), "hf_class": hf_class}
        (run_dir / "metrics.json").write_text(
            json.dumps(final, indent=2, ensure_ascii=False) + "\n"
        )
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


def _check_fit(tasks: list[TaskData], config, batch_size: int) -> None:
    for task in tasks:
        if task.cfg.max_seq_len > config.max_position_embeddings:
            raise InputError(
                None,
                f"tasks.{task.name}.max_seq_len={task.cfg.max_seq_len} exceeds the model's "
                f"{config.max_position_embeddings} positions",
                f"set tasks.{task.name}.max_seq_len={config.max_position_embeddings} or less",
            )
        if task.cfg.kind == "pair" and getattr(config, "type_vocab_size", 0) < 2:
            raise InputError(
                None,
                f"task {task.name} has text pairs but the model has no second token type",
                "use a BERT-style model (type_vocab_size 2)",
            )
        n = len(task.splits["train"])
        if n < batch_size:
            raise InputError(
                task.splits["train"].path,
                f"{n} training examples are fewer than train.batch_size={batch_size}",
                "lower train.batch_size (and train.micro_batch_size)",
            )


def _predict(
    model, task: TaskData, split: str, device, precision, batch_size, pad_id
) -> Prediction:
    outside = task.labels.index("O") if task.cfg.is_tokens else 0
    return predict(
        model,
        task.name,
        task.cfg.kind,
        task.splits[split],
        len(task.labels),
        outside,
        device,
        precision,
        batch_size,
        pad_id,
    )


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _write_predictions(folder: Path, task: TaskData, pred: Prediction) -> dict[str, str]:
    """``submission.csv``: the competition's format — one column, one row per test row, in order.
    Classification adds ``probabilities.csv`` (a column per class, tab-separated like the inputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"submission": str(folder / "submission.csv")}
    column = task.cfg.label_column
    with (folder / "submission.csv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow([column])
        if task.cfg.is_tokens:
            writer.writerows([" ".join(task.labels[i] for i in row)] for row in pred.row_tags)
        else:
            writer.writerows([task.labels[i]] for i in pred.classes)
    if pred.probs is not None:
        with (folder / "probabilities.csv").open("w", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(task.labels)
            writer.writerows([f"{p:.6f}" for p in row] for row in pred.probs)
        out["probabilities"] = str(folder / "probabilities.csv")
    return out


def _export_meta(cfg: FinetuneConfig, tasks: list[TaskData]) -> dict:
    return {
        "tasks": {
            task.name: {
                "kind": task.cfg.kind,
                "labels": task.labels,
                "pooling": None if task.cfg.is_tokens else cfg.head.pooling,
                "max_seq_len": task.cfg.max_seq_len,
                "truncation": task.cfg.truncation,
                "head_fraction": task.cfg.head_fraction,
                "text_column": task.cfg.text_column,
                "text_b_column": task.cfg.text_b_column if task.cfg.kind == "pair" else None,
                "label_column": task.cfg.label_column,
            }
            for task in tasks
        },
        "base_model": str(cfg.model.path),
        "init": cfg.model.init,
    }


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
    log.info("tensorboard:   tensorboard --logdir %s", run_dir / "tb")
