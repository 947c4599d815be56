"""The masked-LM training loop. Reads top to bottom: set LR -> evaluate -> checkpoint -> stop
check -> micro-steps -> clip/step/zero -> guard -> log; a ``last_step`` flag runs evaluation and
saving once more at the end (nanoGPT / nanochat).

`setup` builds what a run uses and never changes (`Pretraining`) and the state it carries from
step to step (`pretrain.state.PretrainState`, the only thing a checkpoint saves and restores);
`train_step` is one optimizer step over tensors; `finish` exports the model and the metrics.

Determinism: the samples of a step, their masks and their dropout all derive from
``(seed, step, micro-batch number)``, not from process-local RNG streams. So a resumed run
repeats the uninterrupted one exactly, and one process with gradient accumulation computes the
same step as several ``torchrun`` processes sharing the global batch.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from pretrain.config import PretrainConfig
from pretrain.data import prepare_run_data
from pretrain.evaluate import HeldOut, eval_masker, log_eval
from pretrain.export import export_model, write_checkpoint_template
from pretrain.state import PretrainState, SampleOrder, stream_seed
from ptm.config import flatten, to_plain
from ptm.data.feed import MicroBatch, Prefetch, mask_on_device, pin
from ptm.data.masking import Masker
from ptm.data.segment_store import SegmentData, load_segment_tokenizer, unigram_entropy
from ptm.errors import InputError
from ptm.models.card import CardInfo
from ptm.models.dropout import use_fast_dropout
from ptm.models.mlm import MaskedLMObjective, build_mlm_model
from ptm.progress import format_count
from ptm.records import RunClock, command_line
from ptm.tasks.probe import Probe
from ptm.training import dist, loop
from ptm.training.guard import DivergenceGuard
from ptm.training.mfu import mlm_training_flops, utilisation
from ptm.training.optim import build_adamw, lr_factor, param_groups
from ptm.training.runtime import grad_scaler, maybe_compile
from ptm.training.stop import Stopped, StopRequest, stop_on_signals
from ptm.training.tb import TensorBoard

log = logging.getLogger(__name__)


@dataclass
class Pretraining:
    """What a run is set up with and does not change while it trains."""

    cfg: PretrainConfig
    session: loop.Session
    run_dir: Path
    tokenizer: Any
    segments: Path  # the segment folder the run reads
    train_set: SegmentData
    held_out: HeldOut
    special_ids: list[int]
    entropy: float
    masker: Masker
    objective: MaskedLMObjective
    ctx: loop.StepContext
    budget: loop.Budget
    feed: Prefetch
    probe: Probe | None
    tb: TensorBoard
    started: RunClock  # the record's wall and CPU time count from here, data preparation included


@dataclass(frozen=True)
class StepResult:
    """One optimizer step, for the guard and the log: the loss and correct predictions summed
    over the global batch (on the device until logged), and its sizes."""

    sums: torch.Tensor  # [loss sum, correct predictions]
    predicted: float  # positions with a label
    tokens: int  # real (non-padding) positions
    flops: float
    grad_norm: torch.Tensor

    @property
    def loss(self) -> float:
        return (self.sums[0] / self.predicted).item()

    @property
    def accuracy(self) -> float:
        return (self.sums[1] / self.predicted).item()


def announcing_new_shapes(forward):
    """``forward`` that logs each input shape it meets after the first: with static shapes,
    torch.compile builds a graph for each (a new masked width, a batch with padding), a pause of
    seconds to a minute mid-run that the log would otherwise leave unexplained."""
    seen = set()

    def call(input_ids, attention_mask, labels, width):
        key = (*input_ids.shape, attention_mask is None, width)
        if key not in seen:
            if seen:
                log.info(
                    "torch.compile: graph %d, for %d rows x %d, masked width %d, %s",
                    len(seen) + 1, *input_ids.shape, width,
                    "no padding" if attention_mask is None else "with padding",
                )  # fmt: skip
            seen.add(key)
        return forward(input_ids, attention_mask, labels, width)

    return call


def run(cfg: PretrainConfig) -> dict:
    """Pretrain with masked-LM only; returns the final metrics (also written to metrics.json)."""
    started = RunClock.start()
    with loop.session(cfg.runtime) as session, stop_on_signals() as stop:
        return _train(cfg, session, stop, started)


def _train(
    cfg: PretrainConfig, session: loop.Session, stop: StopRequest, started: RunClock
) -> dict:
    t, info = cfg.train, session.info
    p, state = setup(cfg, session, started)
    resumed_at = _resume(cfg, state)
    if info.is_main:
        _write_summary(p, state)
    if cfg.model.init_from and state.step == 0 and p.held_out.any:
        # Continued training: what the model knew before it, on both held-out sets.
        state.start_metrics = p.held_out.evaluate_all(p.objective, info, session.precision)
        p.tb.scalars(0, state.start_metrics)
        log_eval("before training", state.start_metrics, p.entropy)

    metrics: dict[str, float] = {}
    state.clock.restart()
    start_tokens = state.tokens
    start_progress = p.budget.progress(state.step, state.tokens, state.clock.elapsed())
    meter = loop.Meter(session.peak, info.world_size)
    p.objective.train()
    try:
        while True:
            step = state.step
            seconds = p.budget.agreed_seconds(state.clock, info.device)
            progress = p.budget.progress(step, state.tokens, seconds)
            last_step = progress >= 1.0
            lr = t.lr * lr_factor(progress, t.warmup_fraction, t.decay, t.min_lr_fraction)
            loop.set_lr(state.optimizer, lr)

            if ((step % t.eval_every == 0 and step > 0) or last_step) and p.held_out.any:
                metrics = p.held_out.evaluate_all(p.objective, info, session.precision)
                p.tb.scalars(step, metrics)
                log_eval(f"step {step}", metrics, p.entropy)
            if p.probe is not None and p.probe.due(step, last_step) and step != resumed_at:
                scores = p.probe(p.objective.encoder, info.device, session.precision, step)
                p.tb.scalars(step, scores)
                log.info(
                    "step %d | %s", step, " | ".join(f"{k} {v:.4f}" for k, v in scores.items())
                )
            saved = None
            if step > 0 and step != resumed_at and (step % t.save_every == 0 or last_step):
                saved = loop.save_state(state, p.run_dir, t.keep_checkpoints, info.is_main)
            if last_step:
                break
            if stop.agreed(info.device):
                if saved is None:
                    saved = loop.save_state(state, p.run_dir, t.keep_checkpoints, info.is_main)
                stop.hand_over()
                raise Stopped(stop.name, step, saved, p.run_dir)

            result = one_step(p, state)
            train_loss = result.loss
            loop.check_divergence(state.guard, step, train_loss, lr)
            state.step += 1
            state.tokens += result.tokens
            meter.add(tokens=result.tokens, flops=result.flops)
            if state.step % t.log_every == 0:
                _log_step(p, state, meter, start_progress, result, lr)
    finally:
        p.feed.close()
    stop.release()
    return finish(p, state, metrics, meter, start_tokens)


def _resume(cfg: PretrainConfig, state: PretrainState) -> int | None:
    """Continue from ``resume=``'s newest intact checkpoint, if there is one; its step."""
    found = loop.resume_point(cfg.resume)
    if found is None:
        return None
    path, values = found
    try:
        state.load_state_dict(values)
    except RuntimeError as e:  # another model or vocabulary than this run builds
        first = str(e).splitlines()[0]
        raise InputError(
            path,
            f"the checkpoint does not fit this run's model ({first})",
            "resume with the settings of the run that wrote it (model, data)",
        ) from e
    log.info("resumed from %s at step %d", path, state.step)
    return state.step


def setup(
    cfg: PretrainConfig, session: loop.Session, started: RunClock
) -> tuple[Pretraining, PretrainState]:
    """Segments (rank 0 builds them once; the others wait and read the same folder), the model,
    optimizer and feed, checked against each other before anything trains."""
    t, info, device = cfg.train, session.info, session.device
    run_dir = Path(cfg.run_dir)
    tokenizer_source = cfg.data.tokenizer or cfg.model.init_from
    folder = general = None
    if info.is_main:
        folder, general = prepare_run_data(cfg.data, tokenizer_source)
    dist.barrier()
    if folder is None:
        folder, general = prepare_run_data(cfg.data, tokenizer_source)
    tokenizer = load_segment_tokenizer(folder)
    train_set, eval_set = SegmentData(folder, "train"), SegmentData(folder, "eval")
    vocab_size = len(tokenizer.get_vocab())
    special_ids = sorted(set(tokenizer.all_special_ids))
    masker = Masker(cfg.data.masking, vocab_size, special_ids, tokenizer.mask_token_id)
    held_out = HeldOut(
        eval_set,
        SegmentData(general, "train") if general else None,
        eval_masker(vocab_size, special_ids, tokenizer.mask_token_id),
        t.eval_max_segments,
        t.micro_batch_size,
        tokenizer.pad_token_id,
    )

    torch.manual_seed(t.seed)
    model = build_mlm_model(cfg.model, vocab_size, tokenizer.pad_token_id).to(device)
    _check_positions(cfg, model.config.max_position_embeddings)
    use_fast_dropout(model)
    objective = MaskedLMObjective(model)
    wrapped = DistributedDataParallel(objective) if info.world_size > 1 else objective
    # Static shapes: masked widths are rounded (ptm.data.feed), so a run compiles a few graphs.
    forward = maybe_compile(wrapped, cfg.runtime, device, dynamic=False)
    if forward is not wrapped:
        forward = announcing_new_shapes(forward)
    optimizer = build_adamw(
        param_groups(model, t.weight_decay), t.lr, tuple(t.betas), t.eps, device
    )
    scaler = grad_scaler(device, session.precision)
    state = PretrainState(model, optimizer, scaler, DivergenceGuard(t.guard), t.batch_size)
    accum = dist.micro_steps_per_step(t.batch_size, t.micro_batch_size, info.world_size)
    if info.is_main:
        write_checkpoint_template(run_dir / "checkpoints", model, tokenizer)
    host_batches = functools.partial(
        _host_batches,
        order=SampleOrder(len(train_set), t.seed),
        train_set=train_set,
        batch_size=t.batch_size,
        micro_batch_size=t.micro_batch_size,
        chunks=[a * info.world_size + info.rank for a in range(accum)],
        pad_id=tokenizer.pad_token_id,
        device=device,
    )
    p = Pretraining(
        cfg=cfg,
        session=session,
        run_dir=run_dir,
        tokenizer=tokenizer,
        segments=folder,
        train_set=train_set,
        held_out=held_out,
        special_ids=special_ids,
        entropy=unigram_entropy(train_set, special_ids, vocab_size),
        masker=masker,
        objective=objective,
        ctx=loop.StepContext(forward, wrapped, scaler, device, session.precision, info.world_size),
        budget=loop.Budget(
            t.max_steps, t.max_tokens, t.max_minutes * 60 if t.max_minutes else None
        ),
        feed=Prefetch(host_batches, enabled=device.type == "cuda"),
        probe=_probe(cfg, tokenizer, model.config.max_position_embeddings)
        if info.is_main
        else None,
        tb=TensorBoard(run_dir / "tb" if info.is_main else None),
        started=started,
    )
    if p.probe is not None:  # the probe appends, the state saves and restores the same list
        state.probe_history = p.probe.history
    return p, state


def _probe(cfg: PretrainConfig, tokenizer, positions: int) -> Probe | None:
    """The downstream probe of the frozen encoder (`ptm.tasks.probe`: when pretraining pays off),
    on the corpus its tasks belong to only: a corpus of the user's own gets none unless its own
    labelled files are listed, and the log says so."""
    probe = cfg.data.probe
    if probe is None:
        return None
    if probe.corpus is not None and _resolved(probe.corpus) != _resolved(cfg.data.corpus):
        log.info(
            "no downstream probe: its tasks (%s) come from %s, not from this corpus; list "
            "labelled files of yours under data.probe.tasks and set data.probe.corpus=null to "
            "probe it",
            ", ".join(t.name for t in probe.tasks),
            ", ".join(map(str, probe.corpus)),
        )
        return None
    return Probe(probe, tokenizer, positions)


def _resolved(paths: list[Path]) -> list[Path]:
    return [Path(p).resolve() for p in paths]


def _check_positions(cfg: PretrainConfig, positions: int) -> None:
    """Segments the model has positions for: the model's own (``model.init_from``'s config.json
    when continuing one), not a crash inside its embeddings at the first step."""
    if positions < cfg.data.segments.max_seq_len:
        source = cfg.model.init_from or "model.max_position_embeddings"
        raise InputError(
            None,
            f"data.segments.max_seq_len={cfg.data.segments.max_seq_len} exceeds the "
            f"{positions} positions of the model ({source})",
            f"set data.segments.max_seq_len={positions} or less, or choose a model with more "
            "positions",
        )


def _host_batches(
    step: int,
    *,
    order: SampleOrder,
    train_set: SegmentData,
    batch_size: int,
    micro_batch_size: int,
    chunks: list[int],
    pad_id: int,
    device: torch.device,
) -> list[tuple[int, dict]]:
    """This process's micro-batches of a step, cut from the segments on the host."""
    positions = order.take(step * batch_size, batch_size)
    mine = [positions[c * micro_batch_size : (c + 1) * micro_batch_size] for c in chunks]
    return [
        (c, pin(train_set.batch(idx, pad_id), device)) for c, idx in zip(chunks, mine, strict=True)
    ]


def one_step(p: Pretraining, state: PretrainState) -> StepResult:
    """Mask this step's micro-batches, forward and backward over them, and step the optimizer."""
    t, step = p.cfg.train, state.step
    micro = mask_on_device(
        p.feed.get(step), p.ctx.device, p.masker, functools.partial(stream_seed, t.seed, step)
    )
    predicted, tokens, flops = _step_sizes(p, micro)
    sums = train_step(p.ctx, micro, functools.partial(stream_seed, t.seed + 1, step), predicted)
    grad_norm = loop.optimizer_step(state.model, state.optimizer, state.scaler, t.grad_clip)
    dist.all_reduce_sum(sums)
    return StepResult(sums, predicted, tokens, flops, grad_norm)


def _step_sizes(p: Pretraining, micro: list[MicroBatch]) -> tuple[float, int, float]:
    """``(predicted positions, real tokens, FLOPs)`` of the whole global batch: the loss is
    normalised by the predicted positions of every process (every masked token weighs the same)."""
    config, masked_only = p.objective.encoder.config, p.objective.masked_only
    flops = sum(
        mlm_training_flops(
            config, *m.input_ids.shape, m.predicted, m.predicted if masked_only else None
        )
        for m in micro
    )
    counts = torch.tensor(
        [sum(m.predicted for m in micro), sum(m.tokens for m in micro), flops],
        device=p.ctx.device,
        dtype=torch.float64,
    )
    dist.all_reduce_sum(counts)
    return max(counts[0].item(), 1.0), int(counts[1].item()), counts[2].item()


def train_step(
    ctx: loop.StepContext, micro: list[MicroBatch], dropout_seed, n_predicted: float
) -> torch.Tensor:
    """Forward and backward of one optimizer step over this process's masked micro-batches;
    returns ``[loss sum, correct predictions]`` of its share. ``dropout_seed(chunk)`` seeds
    each micro-batch's dropout, so the step is the same however the work is split."""
    sums = torch.zeros(2, device=ctx.device, dtype=torch.float64)

    def loss_of(m: MicroBatch) -> torch.Tensor:
        torch.manual_seed(dropout_seed(m.chunk))
        part_sum, part_correct, _ = ctx.forward(m.input_ids, m.attention_mask, m.labels, m.width)
        sums[0] += part_sum.detach().double()
        sums[1] += part_correct.detach().double()
        # DDP averages gradients over processes; scale so the result is sum / n_predicted.
        return part_sum * (ctx.world_size / n_predicted)

    loop.accumulate(ctx, micro, loss_of)
    return sums


def _log_step(
    p: Pretraining,
    state: PretrainState,
    meter: loop.Meter,
    start_progress: float,
    result: StepResult,
    lr: float,
) -> None:
    rates = meter.lap()
    done = p.budget.progress(state.step, state.tokens, state.clock.elapsed())
    p.tb.scalars(
        state.step,
        {
            "train/loss": result.loss,
            "train/accuracy": result.accuracy,
            "train/lr": lr,
            "train/grad_norm": float(result.grad_norm),
            "train/tokens_per_s": rates["tokens_per_s"],
            "train/packing_efficiency": result.tokens
            / (p.cfg.train.batch_size * p.train_set.max_seq_len),
            **({"train/mfu": rates["mfu"]} if "mfu" in rates else {}),
        },
    )
    fields = f"loss {result.loss:.4f} | lr {lr:.2e} | grad norm {float(result.grad_norm):.2f}"
    rate = f"{format_count(rates['tokens_per_s'])} tok/s"
    left = loop.eta(state.clock.since_start(), done, start_progress)
    log.info(loop.progress_line(state.step, fields, rate, rates.get("mfu"), done, left))


def _write_summary(p: Pretraining, state: PretrainState) -> None:
    info, t = p.session.info, p.cfg.train
    summary = {
        "run_dir": str(p.run_dir),
        "device": str(info.device),
        "processes": info.world_size,
        "precision": p.session.precision,
        "parameters": sum(x.numel() for x in state.model.parameters()),
        "segments": {
            "train": len(p.train_set),
            "eval": len(p.held_out.eval_set),
            "folder": str(p.segments),
        },
        "global_batch": t.batch_size,
        "accumulation": dist.micro_steps_per_step(
            t.batch_size, t.micro_batch_size, info.world_size
        ),
        "unigram_entropy": round(p.entropy, 4),
    }
    loop.write_run_summary(p.run_dir, summary, to_plain(p.cfg))


def finish(
    p: Pretraining,
    state: PretrainState,
    metrics: dict[str, float],
    meter: loop.Meter,
    start_tokens: int,
) -> dict:
    """The run's metrics, and (rank 0) the exported model, ``metrics.json`` and TensorBoard's
    hyperparameters."""
    wall = state.clock.since_start()
    final = {
        **metrics,
        **{f"start/{k}": v for k, v in state.start_metrics.items()},
        "unigram_entropy": p.entropy,
        "steps": state.step,
        "tokens": state.tokens,
        "wall_seconds": round(wall, 2),
        "tokens_per_s": round((state.tokens - start_tokens) / max(wall, 1e-9), 1),
    }
    info = p.session.info
    if p.session.peak:  # model FLOPs utilisation of the whole run, evaluation and saving included
        final["mfu"] = round(utilisation(meter.run_flops, wall, p.session.peak, info.world_size), 4)
    if p.probe is not None:
        final["probe"] = p.probe.summary(wall)
    if info.is_main:
        config = loop.resolved_config(p.cfg, p.session)
        card = CardInfo(kind="pretrain", command=command_line(), config=config, metrics=final)
        export_model(state.model, p.tokenizer, p.run_dir / "model", p.cfg.model.init_from, card)
        loop.write_metrics(p.run_dir, final)
        loop.write_record(p.run_dir, "pretrain", config, final, p.started, p.session)
        hparams = {
            k: v for k, v in to_plain(p.cfg).items() if k in ("data", "model", "train", "runtime")
        }
        p.tb.hparams(flatten(hparams), {k: v for k, v in final.items() if isinstance(v, float)})
        log.info("model written to %s; metrics: %s", p.run_dir / "model", json.dumps(final))
    p.tb.close()
    return final
