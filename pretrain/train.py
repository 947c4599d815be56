"""The masked-LM training loop. Reads top to bottom: set LR -> evaluate -> checkpoint -> stop
check -> micro-steps -> clip/step/zero -> guard -> log; a ``last_step`` flag runs evaluation and
saving once more at the end (nanoGPT / nanochat).

Determinism: the samples of a step, their masks and their dropout all derive from
``(seed, step, micro-batch number)``, not from process-local RNG streams. So a resumed run
repeats the uninterrupted one exactly, and one process with gradient accumulation computes the
same step as several ``torchrun`` processes sharing the global batch.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pretrain.config import PretrainConfig
from pretrain.data import prepare_run_data
from pretrain.export import export_model, write_checkpoint_template
from ptm.config import flatten, to_plain
from ptm.data.feed import MicroBatch, Prefetch, mask_on_device, pin
from ptm.data.masking import Masker, MaskingConfig
from ptm.data.segment_store import SegmentData, load_segment_tokenizer, unigram_entropy
from ptm.errors import InputError
from ptm.models.dropout import use_fast_dropout
from ptm.models.mlm import MaskedLMObjective, build_mlm_model
from ptm.progress import format_count
from ptm.tasks.probe import Probe
from ptm.training import dist, loop
from ptm.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ptm.training.guard import DivergenceGuard
from ptm.training.mfu import mlm_training_flops, utilisation
from ptm.training.optim import build_adamw, lr_factor, param_groups
from ptm.training.runtime import autocast, grad_scaler, maybe_compile
from ptm.training.tb import TensorBoard

log = logging.getLogger(__name__)
# Fixed, token-level 15% masking: evaluations compare across runs, masking settings and corpora
# with or without word marks.
EVAL_MASKING = MaskingConfig(rate=0.15, mask_fraction=0.8, random_fraction=0.1, whole_word=False)
EVAL_SEED = 1234


def stream_seed(seed: int, step: int, chunk: int) -> int:
    """One RNG seed per (step, micro-batch): independent of how many processes share the work."""
    return (seed * 1_000_003 + step) * 10_007 + chunk


class SampleOrder:
    """Global sample positions -> segment indices: a fresh seeded permutation every epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, np.arange(0)

    def take(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for i, pos in enumerate(range(start, start + count)):
            epoch, within = divmod(pos, self.n)
            if epoch != self._epoch:
                self._epoch = epoch
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            out[i] = self._perm[within]
        return out


def train_step(
    forward, ddp, micro: list[MicroBatch], dropout_seed, n_predicted: float, world: int,
    scaler, device: torch.device, precision: str,
) -> torch.Tensor:  # fmt: skip
    """Forward and backward of one optimizer step over this process's masked micro-batches;
    returns ``[loss sum, correct predictions]`` of its share. ``dropout_seed(chunk)`` seeds
    each micro-batch's dropout, so the step is the same however the work is split."""
    sums = torch.zeros(2, device=device, dtype=torch.float64)

    def loss_of(m: MicroBatch) -> torch.Tensor:
        torch.manual_seed(dropout_seed(m.chunk))
        part_sum, part_correct, _ = forward(m.input_ids, m.attention_mask, m.labels, m.width)
        sums[0] += part_sum.detach().double()
        sums[1] += part_correct.detach().double()
        # DDP averages gradients over processes; scale so the result is sum / n_predicted.
        return part_sum * (world / n_predicted)

    loop.accumulate(micro, loss_of, ddp, scaler, device, precision)
    return sums


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
    with loop.session(cfg.runtime) as session:
        return _train(cfg, session)


def _train(cfg: PretrainConfig, session: loop.Session) -> dict:
    t = cfg.train
    info, device, precision = session.info, session.device, session.precision
    run_dir = Path(cfg.run_dir)

    # Data: rank 0 builds the segments once; the others wait and read the same folder.
    tokenizer_source = cfg.data.tokenizer or cfg.model.init_from
    folder = general = None
    if info.is_main:
        folder, general = prepare_run_data(cfg.data, tokenizer_source)
    dist.barrier()
    if folder is None:
        folder, general = prepare_run_data(cfg.data, tokenizer_source)
    tokenizer = load_segment_tokenizer(folder)
    train_set, eval_set = SegmentData(folder, "train"), SegmentData(folder, "eval")
    general_set = SegmentData(general, "train") if general else None
    vocab_size = len(tokenizer.get_vocab())
    special_ids = sorted(set(tokenizer.all_special_ids))
    if (
        cfg.model.max_position_embeddings < cfg.data.segments.max_seq_len
        and not cfg.model.init_from
    ):
        raise InputError(
            None,
            f"data.segments.max_seq_len={cfg.data.segments.max_seq_len} exceeds "
            f"model.max_position_embeddings={cfg.model.max_position_embeddings}",
            "shorten the segments or choose a model with more positions",
        )
    masker = Masker(cfg.data.masking, vocab_size, special_ids, tokenizer.mask_token_id)
    eval_masker = Masker(EVAL_MASKING, vocab_size, special_ids, tokenizer.mask_token_id)

    # Model, optimizer, precision.
    torch.manual_seed(t.seed)
    model = build_mlm_model(cfg.model, vocab_size, tokenizer.pad_token_id).to(device)
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
    scaler = grad_scaler(device, precision)
    guard = DivergenceGuard(t.guard)
    accum = dist.micro_steps_per_step(t.batch_size, t.micro_batch_size, info.world_size)
    order = SampleOrder(len(train_set), t.seed)
    budget = loop.Budget(t.max_steps, t.max_tokens, t.max_minutes * 60 if t.max_minutes else None)
    ckpt_dir = run_dir / "checkpoints"
    if info.is_main:
        write_checkpoint_template(ckpt_dir, model, tokenizer)
    chunks = [a * info.world_size + info.rank for a in range(accum)]

    def host_batches(at_step: int) -> list[tuple[int, dict]]:
        """This process's micro-batches of a step, cut from the segments on the host."""
        positions = order.take(at_step * t.batch_size, t.batch_size)
        mine = [positions[c * t.micro_batch_size : (c + 1) * t.micro_batch_size] for c in chunks]
        return [
            (c, pin(train_set.batch(idx, tokenizer.pad_token_id), device))
            for c, idx in zip(chunks, mine, strict=True)
        ]

    feed = Prefetch(host_batches, enabled=device.type == "cuda")

    step, tokens, elapsed = 0, 0, 0.0
    resume_from = latest_checkpoint(Path(cfg.resume) / "checkpoints") if cfg.resume else None
    if cfg.resume and resume_from is None:
        log.warning("resume=%s has no checkpoint yet: starting from scratch", cfg.resume)
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        guard.load_state_dict(state["guard"])
        step, tokens, elapsed = state["step"], state["tokens"], state["elapsed"]
        torch.set_rng_state(state["rng"]["torch"])
        log.info("resumed from %s at step %d", resume_from, step)

    entropy = unigram_entropy(train_set, special_ids, vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    tb = TensorBoard(run_dir / "tb" if info.is_main else None)
    if info.is_main:
        summary = {
            "run_dir": str(run_dir),
            "device": str(device),
            "processes": info.world_size,
            "precision": precision,
            "parameters": n_params,
            "segments": {"train": len(train_set), "eval": len(eval_set), "folder": str(folder)},
            "global_batch": t.batch_size,
            "accumulation": accum,
            "unigram_entropy": round(entropy, 4),
        }
        loop.write_run_summary(run_dir, summary, to_plain(cfg))

    n_eval = min(len(eval_set), t.eval_max_segments)
    # Downstream probe of the frozen encoder (rank 0; ptm.tasks.probe): when pretraining pays off.
    probe = Probe(cfg.data.probe, tokenizer) if cfg.data.probe and info.is_main else None

    def evaluate(data: SegmentData = eval_set, prefix: str = "eval") -> dict[str, float]:
        n = min(len(data), t.eval_max_segments)
        objective.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, predicted
        mine = np.arange(info.rank * t.micro_batch_size, n, t.micro_batch_size * info.world_size)
        with torch.no_grad():
            for lo in mine:
                idx = np.arange(lo, min(lo + t.micro_batch_size, n))
                host = [(int(lo), data.batch(idx, tokenizer.pad_token_id))]
                (m,) = mask_on_device(host, device, eval_masker, lambda chunk: EVAL_SEED + chunk)
                with autocast(device, precision):
                    loss_sum, correct, count = objective(
                        m.input_ids, m.attention_mask, m.labels, m.width
                    )
                sums += torch.stack([loss_sum.double(), correct.double(), count.double()])
        dist.all_reduce_sum(sums)
        objective.train()
        loss = (sums[0] / sums[2].clamp(min=1)).item()
        return {
            f"{prefix}/loss": loss,
            f"{prefix}/accuracy": (sums[1] / sums[2].clamp(min=1)).item(),
            f"{prefix}/perplexity": math.exp(min(loss, 50.0)),
        }

    def evaluate_all() -> dict[str, float]:
        out = evaluate() if n_eval > 0 else {}
        return out | (evaluate(general_set, "general") if general_set is not None else {})

    evaluates = n_eval > 0 or general_set is not None
    # Continued training: what the model knew before it, on both held-out sets.
    start_metrics = {}
    if cfg.model.init_from and step == 0 and evaluates:
        start_metrics = evaluate_all()
        tb.scalars(0, start_metrics)
        _log_eval("before training", start_metrics, entropy)

    metrics: dict[str, float] = {}
    clock = time.perf_counter()
    start_elapsed, start_tokens = elapsed, tokens
    start_progress = budget.progress(step, tokens, elapsed)
    meter = loop.Meter(session.peak, info.world_size)
    objective.train()
    while True:
        elapsed = start_elapsed + time.perf_counter() - clock
        progress = budget.progress(step, tokens, elapsed)
        last_step = progress >= 1.0
        lr = t.lr * lr_factor(progress, t.warmup_fraction, t.decay, t.min_lr_fraction)
        loop.set_lr(optimizer, lr)

        if ((step % t.eval_every == 0 and step > 0) or last_step) and evaluates:
            metrics = evaluate_all()
            tb.scalars(step, metrics)
            _log_eval(f"step {step}", metrics, entropy)
        if probe is not None and probe.due(step, last_step):
            scores = probe(objective.encoder, device, precision, step)
            tb.scalars(step, scores)
            log.info("step %d | %s", step, " | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        if info.is_main and step > 0 and (step % t.save_every == 0 or last_step):
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "guard": guard.state_dict(),
                "step": step,
                "tokens": tokens,
                "elapsed": elapsed,
                "samples": step * t.batch_size,
                "rng": {"torch": torch.get_rng_state()},
            }
            save_checkpoint(ckpt_dir, step, state, t.keep_checkpoints)
        if last_step:
            break

        # Micro-batches of this step: masks first, so the loss can be normalised by the number of
        # predicted positions in the whole global batch (every masked token weighs the same).
        micro = mask_on_device(
            feed.get(step), device, masker, functools.partial(stream_seed, t.seed, step)
        )
        flops = sum(
            mlm_training_flops(
                model.config, *m.input_ids.shape, m.predicted,
                m.predicted if objective.masked_only else None,
            )
            for m in micro
        )  # fmt: skip
        counts = torch.tensor(
            [sum(m.predicted for m in micro), sum(m.tokens for m in micro), flops],
            device=device,
            dtype=torch.float64,
        )
        dist.all_reduce_sum(counts)
        n_predicted, step_tokens = max(counts[0].item(), 1.0), int(counts[1].item())
        step_flops = counts[2].item()

        sums = train_step(
            forward, wrapped, micro, functools.partial(stream_seed, t.seed + 1, step),
            n_predicted, info.world_size, scaler, device, precision,
        )  # fmt: skip
        grad_norm = loop.optimizer_step(model, optimizer, scaler, t.grad_clip)
        dist.all_reduce_sum(sums)
        train_loss = (sums[0] / n_predicted).item()
        loop.check_divergence(guard, step, train_loss, lr)
        step += 1
        tokens += step_tokens
        meter.add(tokens=step_tokens, flops=step_flops)

        if step % t.log_every == 0:
            rates = meter.lap()
            now = time.perf_counter()
            done = budget.progress(step, tokens, start_elapsed + now - clock)
            tb.scalars(
                step,
                {
                    "train/loss": train_loss,
                    "train/accuracy": (sums[1] / n_predicted).item(),
                    "train/lr": lr,
                    "train/grad_norm": float(grad_norm),
                    "train/tokens_per_s": rates["tokens_per_s"],
                    "train/packing_efficiency": step_tokens
                    / (t.batch_size * train_set.max_seq_len),
                    **({"train/mfu": rates["mfu"]} if "mfu" in rates else {}),
                },
            )
            fields = f"loss {train_loss:.4f} | lr {lr:.2e} | grad norm {float(grad_norm):.2f}"
            rate = f"{format_count(rates['tokens_per_s'])} tok/s"
            left = loop.eta(now - clock, done, start_progress)
            log.info(loop.progress_line(step, fields, rate, rates.get("mfu"), done, left))

    feed.close()
    wall = time.perf_counter() - clock
    final = {
        **metrics,
        **{f"start/{k}": v for k, v in start_metrics.items()},
        "unigram_entropy": entropy,
        "steps": step,
        "tokens": tokens,
        "wall_seconds": round(wall, 2),
        "tokens_per_s": round((tokens - start_tokens) / max(wall, 1e-9), 1),
    }
    if session.peak:  # model FLOPs utilisation of the whole run, evaluation and saving included
        final["mfu"] = round(utilisation(meter.run_flops, wall, session.peak, info.world_size), 4)
    if probe is not None:
        final["probe"] = probe.summary(wall)
    if info.is_main:
        export_model(model, tokenizer, run_dir / "model", cfg.model.init_from)
        loop.write_metrics(run_dir, final)
        tb.hparams(
            flatten(
                {
                    k: v
                    for k, v in to_plain(cfg).items()
                    if k in ("data", "model", "train", "runtime")
                }
            ),
            {k: v for k, v in final.items() if isinstance(v, float)},
        )
        log.info("model written to %s; metrics: %s", run_dir / "model", json.dumps(final))
    tb.close()
    return final


def _log_eval(when: str, metrics: dict[str, float], entropy: float) -> None:
    for prefix in ("eval", "general"):
        if f"{prefix}/loss" in metrics:
            log.info(
                "%s | %s loss %.4f | accuracy %.4f | perplexity %.1f | unigram entropy %.4f",
                when,
                prefix,
                metrics[f"{prefix}/loss"],
                metrics[f"{prefix}/accuracy"],
                metrics[f"{prefix}/perplexity"],
                entropy,
            )
