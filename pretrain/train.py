"""The masked-LM training loop. Reads top to bottom: set LR -> evaluate -> checkpoint -> stop
check -> micro-steps -> clip/step/zero -> guard -> log; a ``last_step`` flag runs evaluation and
saving once more at the end (nanoGPT / nanochat).

Determinism: the samples of a step, their masks and their dropout all derive from
``(seed, step, micro-batch number)``, not from process-local RNG streams. So a resumed run
repeats the uninterrupted one exactly, and one process with gradient accumulation computes the
same step as several ``torchrun`` processes sharing the global batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pretrain.config import PretrainConfig
from pretrain.data import prepare_run_data
from pretrain.export import export_model
from ptm.config import flatten, to_plain
from ptm.data.masking import IGNORE_INDEX, Masker, MaskingConfig
from ptm.data.segment_store import SegmentData, load_segment_tokenizer, unigram_entropy
from ptm.errors import InputError
from ptm.models.dropout import use_fast_dropout
from ptm.models.mlm import MaskedLMObjective, build_mlm_model
from ptm.progress import format_count, format_duration
from ptm.training import dist, runtime
from ptm.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ptm.training.guard import DivergenceGuard
from ptm.training.mfu import mlm_training_flops, peak_flops, utilisation
from ptm.training.optim import build_adamw, lr_factor, param_groups
from ptm.training.rundir import point_latest
from ptm.training.runtime import autocast, grad_scaler, maybe_compile
from ptm.training.tb import TensorBoard

log = logging.getLogger(__name__)
# Fixed, token-level 15% masking: evaluations compare across runs, masking settings and corpora
# with or without word marks.
EVAL_MASKING = MaskingConfig(rate=0.15, whole_word=False)
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


@dataclass
class Budget:
    max_steps: int | None
    max_tokens: int | None
    max_seconds: float | None

    def progress(self, step: int, tokens: int, seconds: float) -> float:
        """Fraction of the budget used: the furthest along of the limits that are set."""
        parts = [step / self.max_steps if self.max_steps else 0.0]
        parts.append(tokens / self.max_tokens if self.max_tokens else 0.0)
        parts.append(seconds / self.max_seconds if self.max_seconds else 0.0)
        return max(parts)


def run(cfg: PretrainConfig) -> dict:
    """Pretrain with masked-LM only; returns the final metrics (also written to metrics.json)."""
    with dist.process_group(cfg.runtime.device) as info:
        return _train(cfg, info)


def _train(cfg: PretrainConfig, info: dist.DistInfo) -> dict:
    t = cfg.train
    device = info.device
    run_dir = Path(cfg.run_dir)
    precision = runtime.prepare(cfg.runtime, device)

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
    forward = maybe_compile(wrapped, cfg.runtime.compile, device)
    optimizer = build_adamw(
        param_groups(model, t.weight_decay), t.lr, tuple(t.betas), t.eps, device
    )
    scaler = grad_scaler(device, precision)
    peak = peak_flops(device, precision, cfg.runtime.tf32, cfg.runtime.peak_tflops)
    guard = DivergenceGuard(t.guard)
    accum = dist.micro_steps_per_step(t.batch_size, t.micro_batch_size, info.world_size)
    order = SampleOrder(len(train_set), t.seed)
    budget = Budget(t.max_steps, t.max_tokens, t.max_minutes * 60 if t.max_minutes else None)
    ckpt_dir = run_dir / "checkpoints"

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
        point_latest(run_dir)
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
        log.info("run summary: %s", json.dumps(summary))
        (run_dir / "run.json").write_text(
            json.dumps({"summary": summary, "config": to_plain(cfg)}, indent=2)
        )

    n_eval = min(len(eval_set), t.eval_max_segments)

    def evaluate(data: SegmentData = eval_set, prefix: str = "eval") -> dict[str, float]:
        n = min(len(data), t.eval_max_segments)
        objective.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, predicted
        mine = np.arange(info.rank * t.micro_batch_size, n, t.micro_batch_size * info.world_size)
        with torch.no_grad():
            for lo in mine:
                idx = np.arange(lo, min(lo + t.micro_batch_size, n))
                batch = {
                    k: v.to(device) for k, v in data.batch(idx, tokenizer.pad_token_id).items()
                }
                g = torch.Generator(device).manual_seed(EVAL_SEED + int(lo))
                ids, labels = eval_masker(batch["input_ids"], batch.get("word_start"), g)
                with autocast(device, precision):
                    loss_sum, correct, count = objective(ids, batch["attention_mask"], labels)
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

    # Continued training: what the model knew before it, on both held-out sets.
    start_metrics = {}
    if cfg.model.init_from and step == 0 and (n_eval > 0 or general_set is not None):
        start_metrics = evaluate_all()
        tb.scalars(0, start_metrics)
        _log_eval("before training", start_metrics, entropy)

    metrics: dict[str, float] = {}
    clock = time.perf_counter()
    start_elapsed, start_tokens = elapsed, tokens
    start_progress = budget.progress(step, tokens, elapsed)
    window_tokens, window_flops, window_start = 0, 0.0, time.perf_counter()
    run_flops = 0.0
    objective.train()
    while True:
        elapsed = start_elapsed + time.perf_counter() - clock
        progress = budget.progress(step, tokens, elapsed)
        last_step = progress >= 1.0
        lr = t.lr * lr_factor(progress, t.warmup_fraction, t.decay, t.min_lr_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if ((step % t.eval_every == 0 and step > 0) or last_step) and (
            n_eval > 0 or general_set is not None
        ):
            metrics = evaluate_all()
            tb.scalars(step, metrics)
            _log_eval(f"step {step}", metrics, entropy)
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
        chunks = [a * info.world_size + info.rank for a in range(accum)]
        positions = order.take(step * t.batch_size, t.batch_size)
        micro = []
        for chunk in chunks:
            idx = positions[chunk * t.micro_batch_size : (chunk + 1) * t.micro_batch_size]
            batch = {
                k: v.to(device, non_blocking=True)
                for k, v in train_set.batch(idx, tokenizer.pad_token_id).items()
            }
            g = torch.Generator(device).manual_seed(stream_seed(t.seed, step, chunk))
            ids, labels = masker(batch["input_ids"], batch.get("word_start"), g)
            micro.append((chunk, ids, batch["attention_mask"], labels))
        predicted = [int((m[3] != IGNORE_INDEX).sum()) for m in micro]
        flops = sum(
            mlm_training_flops(model.config, *m[1].shape, n, n if objective.masked_only else None)
            for m, n in zip(micro, predicted, strict=True)
        )
        counts = torch.tensor(
            [sum(predicted), sum(int(m[2].sum()) for m in micro), flops],
            device=device,
            dtype=torch.float64,
        )
        dist.all_reduce_sum(counts)
        n_predicted, step_tokens = max(counts[0].item(), 1.0), int(counts[1].item())
        step_flops = counts[2].item()

        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        for i, (chunk, ids, attention, labels) in enumerate(micro):
            torch.manual_seed(stream_seed(t.seed + 1, step, chunk))  # dropout, layout-independent
            sync = i == len(micro) - 1 or info.world_size == 1
            with nullcontext() if sync else wrapped.no_sync(), autocast(device, precision):
                part_sum, part_correct, _ = forward(ids, attention, labels)
                # DDP averages gradients over processes; scale so the result is sum / n_predicted.
                loss = part_sum * (info.world_size / n_predicted)
            scaler.scale(loss).backward()
            loss_sum += part_sum.detach().double()
            correct += part_correct.detach().double()

        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf")
        )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        stats = torch.stack([loss_sum, correct])
        dist.all_reduce_sum(stats)
        train_loss = (stats[0] / n_predicted).item()
        guard.check(step, train_loss, lr)
        step += 1
        tokens += step_tokens
        window_tokens += step_tokens
        window_flops += step_flops
        run_flops += step_flops

        if step % t.log_every == 0:
            now = time.perf_counter()
            rate = window_tokens / max(now - window_start, 1e-9)
            mfu = utilisation(window_flops, now - window_start, peak, info.world_size)
            window_tokens, window_flops, window_start = 0, 0.0, now
            done = budget.progress(step, tokens, start_elapsed + now - clock)
            eta = (now - clock) * (1 - done) / max(done - start_progress, 1e-9)
            tb.scalars(
                step,
                {
                    "train/loss": train_loss,
                    "train/accuracy": (stats[1] / n_predicted).item(),
                    "train/lr": lr,
                    "train/grad_norm": float(grad_norm),
                    "train/tokens_per_s": rate,
                    "train/packing_efficiency": step_tokens
                    / (t.batch_size * train_set.max_seq_len),
                    **({"train/mfu": mfu} if mfu is not None else {}),
                },
            )
            log.info(
                "step %d | loss %.4f | lr %.2e | grad norm %.2f | %s tok/s%s | %3.0f%% | ETA %s",
                step,
                train_loss,
                lr,
                float(grad_norm),
                format_count(rate),
                "" if mfu is None else f" | MFU {100 * mfu:.1f}%",
                100 * done,
                format_duration(eta),
            )

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
    if peak:  # model FLOPs utilisation of the whole run, evaluation and saving included
        final["mfu"] = round(utilisation(run_flops, wall, peak, info.world_size), 4)
    if info.is_main:
        export_model(model, tokenizer, run_dir / "model", cfg.model.init_from)
        (run_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
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
