"""The fine-tuning loop. Reads top to bottom: set LR -> evaluate on dev, keep the best ->
checkpoint -> stop check -> micro-steps -> clip/step/zero -> guards -> log; a ``last_step`` flag
runs the final evaluation. After the loop `finetune.results.finish` restores the best state,
predicts the test files and exports the model. What differs between kinds of task is the kind's
(`ptm.tasks.kinds`); what every training loop shares is `ptm.training.loop`'s.

`setup` builds what a run uses and never changes (`Finetuning`) and the state it carries from
step to step (`finetune.state.FinetuneState`, the only thing a checkpoint saves and restores);
`finetune.step` is one optimizer step of one task and the guards that read it.

One step trains one task: with several tasks, a seeded draw picks which (P(task) proportional to
its batches per epoch ^ 1/``mix_temperature``), every process drawing the same, so DDP stays in
step.

Exact resume: a checkpoint (``train.save_every``; by default at every evaluation, and at the end)
holds the run's state; ``resume=<run dir>`` continues from the newest intact one to the same dev
and test metrics and the same exported weights as a run never stopped. A SIGTERM, SIGUSR1 or
first Ctrl-C writes one at the next step boundary and stops (`ptm.training.stop`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from finetune.config import FinetuneConfig
from finetune.results import evaluate_and_select, finish
from finetune.state import BatchStream, FinetuneState
from finetune.step import StepResult, check_guards, collapse_from, one_step
from ptm.config import to_plain
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError
from ptm.models.dropout import use_fast_dropout
from ptm.models.heads import TaskModel, build_head, check_vocab, encoder_config, load_encoder
from ptm.progress import format_count
from ptm.records import RunClock
from ptm.tasks.batching import length_buckets
from ptm.tasks.collapse import CollapseGuard
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import kind_named, load_task
from ptm.tasks.loading import Fold
from ptm.tasks.splits import TaskData
from ptm.training import dist, loop
from ptm.training.guard import DivergenceGuard
from ptm.training.llrd import layer_decay_groups
from ptm.training.optim import build_adamw, lr_factor
from ptm.training.runtime import grad_scaler, maybe_compile, pads_to_buckets
from ptm.training.stop import Stopped, StopRequest, stop_on_signals
from ptm.training.tb import TensorBoard

log = logging.getLogger(__name__)


@dataclass
class Finetuning:
    """What a run is set up with and does not change while it trains."""

    cfg: FinetuneConfig
    session: loop.Session
    run_dir: Path
    tokenizer: Any
    encoder_config: Any  # the encoder's transformers config
    tasks: list[TaskData]
    ctx: loop.StepContext
    budget: loop.Budget
    steps_per_epoch: int
    eval_every: int
    mix: np.ndarray  # P(task) of a step
    accumulation: int
    pad_id: int
    multiple: int  # batches are padded to a multiple of this length (8 on GPUs: tensor cores)
    buckets: dict[str, tuple[int, ...] | None]  # per task, the padded lengths (None: the longest)
    # Guards read the loss at log steps only (GPUs: a step never waits for the one before);
    # on CPUs every step, where reading it costs nothing.
    deferred_checks: bool
    tb: TensorBoard
    started: RunClock  # the record's wall and CPU time count from here, data loading included
    resumed_at: int | None = None


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune; returns the metrics (also written to ``metrics.json`` in the run folder)."""
    started = RunClock.start()
    with loop.session(cfg.runtime) as session, stop_on_signals() as stop:
        return _train(cfg, session, stop, started)


def _train(
    cfg: FinetuneConfig, session: loop.Session, stop: StopRequest, started: RunClock
) -> dict:
    t, info = cfg.train, session.info
    f, state = setup(cfg, session, started)
    _resume(f, state)
    if info.is_main:
        latest = cfg.cv.fold is None  # a fold's folder is inside its CV run's, which `latest` names
        loop.write_run_summary(f.run_dir, _summary(f, state), to_plain(cfg), latest)

    state.clock.restart()
    start_examples = state.examples
    start_progress = f.budget.progress(state.step, 0, state.clock.elapsed())
    meter = loop.Meter(session.peak, info.world_size)
    pending: list[StepResult] = []  # steps whose guards have not read their loss yet
    state.model.train()
    while True:
        step = state.step
        progress = f.budget.progress(step, 0, f.budget.agreed_seconds(state.clock, info.device))
        last_step = progress >= 1.0
        lr = t.lr * lr_factor(progress, t.warmup_fraction, t.decay, t.min_lr_fraction)
        loop.set_lr(state.optimizer, lr)

        evaluating = (
            (step > 0 and step % f.eval_every == 0) or last_step
        ) and step != state.evaluated_at
        ending = last_step or state.stopped == "early_stopping"
        saving = evaluating if t.save_every is None else step % t.save_every == 0
        if evaluating or saving or ending:
            check_guards(state, pending)  # no evaluation, checkpoint or export of unchecked steps
        if evaluating:
            evaluate_and_select(f, state, lr, collapse_from(f, progress, step), last_step)
            ending = last_step or state.stopped == "early_stopping"
        saved = None
        if step > 0 and step != f.resumed_at and (saving or ending):
            saved = loop.save_state(state, f.run_dir, t.keep_checkpoints, info.is_main)
        if ending:
            break
        if stop.agreed(info.device):
            check_guards(state, pending)  # a checkpoint holds checked steps only
            if saved is None:
                saved = loop.save_state(state, f.run_dir, t.keep_checkpoints, info.is_main)
            stop.hand_over()
            raise Stopped(stop.name, step, saved, f.run_dir)

        result = one_step(f, state, lr, collapse_from(f, progress, step))
        pending.append(result)
        state.step += 1
        state.examples += result.examples
        meter.add(result.examples, result.tokens, result.flops)
        logging_now = state.step % t.log_every == 0
        if logging_now or not f.deferred_checks:
            check_guards(state, pending)
        if logging_now:
            _log_step(f, state, meter, start_progress, result, lr)
    stop.release()
    return finish(f, state, lr, start_examples)


def setup(
    cfg: FinetuneConfig, session: loop.Session, started: RunClock
) -> tuple[Finetuning, FinetuneState]:
    """Model folder, tokenizer and data, checked against each other before anything trains;
    then the model, optimizer, batch streams, task mix and guards."""
    t, info, device = cfg.train, session.info, session.device
    fold = Fold(cfg.cv.fold, cfg.cv.folds, cfg.cv.seed) if cfg.cv.fold is not None else None
    tokenizer, config, tasks = load_tasks(cfg, fold)
    _check_fit(tasks, config, t.batch_size)

    model, wrapped = _build_model(cfg, tasks, info)
    # Fixed padded lengths (runtime.padding; on GPUs by default): one static graph per length.
    bucketed = pads_to_buckets(cfg.runtime.padding, device)
    forward = maybe_compile(wrapped, cfg.runtime, device, dynamic=False if bucketed else None)
    groups = layer_decay_groups(model, config.num_hidden_layers, t.layer_decay, t.weight_decay)
    optimizer = build_adamw(groups, t.lr, tuple(t.betas), t.eps, device)
    scaler = grad_scaler(device, session.precision)

    # Budget, schedule and the task mix.
    group = t.length_group if t.group_by_length else None
    streams = [BatchStream(task, t.batch_size, t.seed, i, group) for i, task in enumerate(tasks)]
    steps_per_epoch = sum(len(s) for s in streams)
    total_steps = math.ceil(t.epochs * steps_per_epoch) if t.epochs > 0 else None
    if t.max_steps is not None:
        total_steps = min(total_steps or t.max_steps, t.max_steps)
    weights = np.array(
        [
            task.cfg.weight if task.cfg.weight is not None else len(s) ** (1 / t.mix_temperature)
            for task, s in zip(tasks, streams, strict=True)
        ]
    )
    state = FinetuneState(
        model,
        optimizer,
        scaler,
        streams,
        np.random.default_rng([t.seed, 1 << 20]),
        {task.name: DivergenceGuard(t.guard) for task in tasks},
        {
            task.name: CollapseGuard(t.collapse, task.name, task.labels, task.chance_loss, t.lr)
            for task in tasks
        },
        info,
    )
    f = Finetuning(
        cfg=cfg,
        session=session,
        run_dir=Path(cfg.run_dir),
        tokenizer=tokenizer,
        encoder_config=config,
        tasks=tasks,
        ctx=loop.StepContext(forward, wrapped, scaler, device, session.precision, info.world_size),
        budget=loop.Budget(total_steps, None, t.max_minutes * 60 if t.max_minutes else None),
        steps_per_epoch=steps_per_epoch,
        eval_every=t.eval_every or steps_per_epoch,
        mix=weights / weights.sum(),
        accumulation=dist.micro_steps_per_step(t.batch_size, t.micro_batch_size, info.world_size),
        pad_id=tokenizer.pad_token_id,
        multiple=8 if device.type == "cuda" else 1,
        buckets={t.name: length_buckets(t.cfg.max_seq_len) if bucketed else None for t in tasks},
        deferred_checks=device.type == "cuda",
        tb=TensorBoard(Path(cfg.run_dir) / "tb" if info.is_main else None),
        started=started,
    )
    return f, state


def _build_model(
    cfg: FinetuneConfig, tasks: list[TaskData], info: dist.DistInfo
) -> tuple[TaskModel, torch.nn.Module]:
    """The encoder (pretrained weights or a random init of its config) with one head per task,
    on the device; and the module a step runs (DDP-wrapped with several processes)."""
    torch.manual_seed(cfg.train.seed)
    pooled = any(task.kind.head == "sequence" for task in tasks)
    with_pooler = cfg.head.pooling == "pooler" and pooled
    folder = Path(cfg.model.path)
    encoder = load_encoder(folder, cfg.model.init == "pretrained", with_pooler, cfg.model.dropout)
    heads = {
        # The encoder's config: its dropout is the run's (model.dropout), which the heads follow.
        task.name: build_head(task.kind.head, encoder.config, len(task.labels), cfg.head)
        for task in tasks
    }
    model = TaskModel(encoder, heads).to(info.device)
    use_fast_dropout(model)
    # One task per step: the other heads get no gradient, which DDP must be told about.
    wrapped = (
        DistributedDataParallel(model, find_unused_parameters=len(tasks) > 1)
        if info.world_size > 1
        else model
    )
    return model, wrapped


def _resume(f: Finetuning, state: FinetuneState) -> None:
    """Continue from ``resume=``'s newest intact checkpoint, if there is one."""
    found = loop.resume_point(f.cfg.resume)
    if found is None:
        return
    path, values = found
    try:
        state.load_state_dict(values)
    except RuntimeError as e:  # another model, head or label set than this run builds
        first = str(e).splitlines()[0]
        raise InputError(
            path,
            f"the checkpoint does not fit this run's model ({first})",
            "resume with the settings of the run that wrote it (model, tasks, head)",
        ) from e
    f.resumed_at = state.step
    log.info("resumed from %s at step %d (best dev score %.4f)", path, state.step, state.best.score)


def _log_step(
    f: Finetuning,
    state: FinetuneState,
    meter: loop.Meter,
    start_progress: float,
    result: StepResult,
    lr: float,
) -> None:
    rates = meter.lap()
    name, step = result.task.name, state.step
    f.tb.scalars(
        step,
        {
            f"train/{name}/loss": result.loss,
            "train/loss": result.loss,
            "train/lr": lr,
            "train/grad_norm": float(result.grad_norm),
            **{f"train/{k}": v for k, v in rates.items()},
        },
    )
    done = f.budget.progress(step, 0, state.clock.elapsed())
    fields = f"epoch {step / f.steps_per_epoch:.2f} | {name} loss {result.loss:.4f} | lr {lr:.2e}"
    left = loop.eta(state.clock.since_start(), done, start_progress)
    rate = f"{format_count(rates['examples_per_s'])} ex/s"
    log.info(loop.progress_line(step, fields, rate, rates.get("mfu"), done, left))


def _summary(f: Finetuning, state: FinetuneState) -> dict:
    cfg, info = f.cfg, f.session.info
    return {
        "run_dir": str(f.run_dir),
        "model": str(cfg.model.path),
        "init": cfg.model.init,
        "device": str(info.device),
        "processes": info.world_size,
        "precision": f.session.precision,
        "parameters": sum(p.numel() for p in state.model.parameters()),
        "tasks": {
            task.name: {
                "kind": task.kind.name,
                "labels": task.labels,
                "max_seq_len": task.cfg.max_seq_len,
                "chance_loss": round(task.chance_loss, 4),
                "mix": round(float(m), 4),
                **{name: len(split) for name, split in task.splits.items()},
            }
            for task, m in zip(f.tasks, f.mix, strict=True)
        },
        "steps_per_epoch": f.steps_per_epoch,
        "total_steps": f.budget.max_steps,
        "max_minutes": cfg.train.max_minutes,
        "global_batch": cfg.train.batch_size,
        "accumulation": f.accumulation,
        "pooling": cfg.head.pooling,
        "resumed_at": f.resumed_at,
    }


def load_tasks(cfg: FinetuneConfig, fold: Fold | None = None) -> tuple[Any, Any, list[TaskData]]:
    """``(tokenizer, encoder config, tasks)``: the model folder's tokenizer and config, checked
    against each other, and every task read at the length the model takes (``fold``: one
    cross-validation fold held out)."""
    folder = Path(cfg.model.path)
    config = _model_config(folder)
    tokenizer_from = cfg.model.tokenizer or folder
    tokenizer = load_tokenizer(tokenizer_from)
    check_vocab(len(tokenizer), config, tokenizer_from)
    if fold is not None:
        for task in cfg.tasks:
            if not kind_named(task.kind).averaged:
                raise InputError(
                    None,
                    f"cv.folds: task {task.name} is of kind {task.kind}, whose predictions are "
                    "not one probability row per text to average over folds",
                    "cross-validate classification or pair tasks (cv.folds=null for this one)",
                )
    limit = cfg.train.limit_examples
    tasks = [load_task(_fit_length(tc, config), tokenizer, limit, fold) for tc in cfg.tasks]
    return tokenizer, config, tasks


def _model_config(folder: Path):
    if not folder.exists():
        hint = (
            "run `make pretrain` first, or set model.path to a model folder"
            if "pretrain" in str(folder)
            else "check model.path"
        )
        raise InputError(folder, "no such model folder", hint)
    return encoder_config(folder)


def _fit_length(task: TaskConfig, config) -> TaskConfig:
    """A task's length follows the model it fine-tunes: ``max_seq_len: null`` is the model's
    positions, and a length the model has no positions for is capped at them (logged)."""
    positions = config.max_position_embeddings
    if task.max_seq_len is None:
        return dataclasses.replace(task, max_seq_len=positions)
    if task.max_seq_len <= positions:
        return task
    log.info(
        "task %s: max_seq_len %d capped at the model's %d positions",
        task.name,
        task.max_seq_len,
        positions,
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
