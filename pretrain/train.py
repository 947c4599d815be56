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
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pretrain.config import PretrainConfig
from ptm.config import flatten, to_plain
from ptm.data.feed import Prefetch, mask_on_device, pin
from ptm.data.masking import Masker, MaskingConfig
from ptm.data.segment_builder import prepare_segments
from ptm.data.segment_store import SegmentData, load_segment_tokenizer, unigram_entropy
from ptm.data.tokenizer import save_tokenizer
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
    folder = None
    if info.is_main:
        folder = prepare_segments(
            cfg.data.corpus, tokenizer_source, cfg.data.cache_dir, cfg.data.segments
        )
    dist.barrier()
    if folder is None:
        folder = prepare_segments(
            cfg.data.corpus, tokenizer_source, cfg.data.cache_dir, cfg.data.segments
        )
    tokenizer = load_segment_tokenizer(folder)
    train_set, eval_set = SegmentData(folder, "train"), SegmentData(folder, "eval")
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
    forward = maybe_compile(wrapped, cfg.runtime.compile, device, dynamic=False)
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
    chunks = [a * info.world_size + info.rank for a in range(accum)]

    def host_batches(at_step: int) -> list[tuple[int, dict]]:
        """This process's micro-batches of a step, cut from the segments on the host."""
        positions = order.take(at_step * t.batch_size, t.batch_size)
        return [
            (c, pin(train_set.batch(positions[c * t.micro_batch_size :][: t.micro_batch_size],
                                    tokenizer.pad_token_id), device))
            for c in chunks
        ]  # fmt: skip

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

    def evaluate() -> dict[str, float]:
        objective.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, predicted
        mine = np.arange(
            info.rank * t.micro_batch_size, n_eval, t.micro_batch_size * info.world_size
        )
        with torch.no_grad():
            for lo in mine:
                idx = np.arange(lo, min(lo + t.micro_batch_size, n_eval))
                host = [(int(lo), eval_set.batch(idx, tokenizer.pad_token_id))]
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
            "eval/loss": loss,
            "eval/accuracy": (sums[1] / sums[2].clamp(min=1)).item(),
            "eval/perplexity": math.exp(min(loss, 50.0)),
        }

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

        if ((step % t.eval_every == 0 and step > 0) or last_step) and n_eval > 0:
            metrics = evaluate()
            tb.scalars(step, metrics)
            log.info(
                "step %d | eval loss %.4f | accuracy %.4f | perplexity %.1f | unigram entropy %.4f",
                step,
                metrics["eval/loss"],
                metrics["eval/accuracy"],
                metrics["eval/perplexity"],
                entropy,
            )
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

        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        for i, m in enumerate(micro):
            torch.manual_seed(stream_seed(t.seed + 1, step, m.chunk))  # dropout, layout-independent
            sync = i == len(micro) - 1 or info.world_size == 1
            with nullcontext() if sync else wrapped.no_sync(), autocast(device, precision):
                part_sum, part_correct, _ = forward(
                    m.input_ids, m.attention_mask, m.labels, m.width
                )
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

    feed.close()
    wall = time.perf_counter() - clock
    final = {
        **metrics,
        "unigram_entropy": entropy,
        "steps": step,
        "tokens": tokens,
        "wall_seconds": round(wall, 2),
        "tokens_per_s": round((tokens - start_tokens) / max(wall, 1e-9), 1),
    }
    if peak:  # model FLOPs utilisation of the whole run, evaluation and saving included
        final["mfu"] = round(utilisation(run_flops, wall, peak, info.world_size), 4)
    if info.is_main:
        _export(model, tokenizer, run_dir / "model")
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


def _export(model: torch.nn.Module, tokenizer, out: Path) -> None:
    """A Hugging Face model folder, written aside and renamed so it is never half there."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_tokenizer(tokenizer, tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
