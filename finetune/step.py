"""One optimizer step of fine-tuning and the guards that read it.

`one_step` draws the step's task and batch, runs `train_step` (forward and backward over its
micro-batches, one task at a time) and the optimizer; nothing in it waits for the device: the
batch's sizes are counted on the host and the loss stays where it was computed. `check_guards`
then reads the pending steps' losses in one transfer — every step on a CPU, at log steps and
before any evaluation, checkpoint, stop or end on a GPU — and runs the divergence and collapse
checks on each, at its own step and learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from finetune.state import FinetuneState
from ptm.tasks.batching import collate
from ptm.tasks.splits import TaskData
from ptm.training import dist, loop
from ptm.training.mfu import encoder_training_flops

if TYPE_CHECKING:
    from finetune.train import Finetuning

# Losses below this share of the chance level count as that share in the blow-up check, so noise
# around a near-zero loss late in training is not mistaken for divergence.
LOSS_FLOOR = 0.1


@dataclass(frozen=True)
class StepResult:
    """One optimizer step of one task: what the guards check and the log shows. The loss sum
    and predicted classes stay on the device until `check_guards` reads them (on a GPU at log
    steps only, so no step waits for the one before it)."""

    step: int
    lr: float
    collapse_from: int  # the step from which collapse checks count, as of this step
    task: TaskData
    stats: torch.Tensor  # [loss sum, predictions per class...] of the global batch
    n_items: float  # labelled items of the global batch
    examples: int
    tokens: int
    flops: float
    grad_norm: torch.Tensor

    @property
    def loss(self) -> float:
        return self.stats[0].item() / self.n_items


def collapse_from(f: Finetuning, progress: float, step: int) -> int:
    """The step from which the collapse checks count: once warm-up is over (at ``progress``
    through the budget, as every process agrees) and ``min_steps`` have passed."""
    t = f.cfg.train
    return t.collapse.min_steps if progress >= t.warmup_fraction else step + 1


def one_step(f: Finetuning, state: FinetuneState, lr: float, counts_from: int) -> StepResult:
    """One optimizer step on one task: its global batch, split over processes and micro-steps.
    Nothing in it waits for the device: the batch's sizes are counted on the host (summed over
    processes with one all-reduce under DDP), the loss stays where it was computed.
    ``counts_from``: the step from which the collapse checks count (`collapse_from`)."""
    t, info = f.cfg.train, f.session.info
    k = int(state.mixer.choice(len(f.tasks), p=f.mix)) if len(f.tasks) > 1 else 0
    task = f.tasks[k]
    train = task.splits["train"]
    positions = state.streams[k].next()
    size = t.micro_batch_size
    micro = [
        collate(
            train,
            positions[c * size : (c + 1) * size],
            f.pad_id,
            f.multiple,
            buckets=f.buckets[task.name],
        )
        for c in (a * info.world_size + info.rank for a in range(f.accumulation))
    ]
    # Items and tokens of the whole global batch, counted before the copy to the device.
    items, tokens, flops = (
        sum(task.kind.count_items(m["labels"]) for m in micro),
        sum(int(m["attention_mask"].sum()) for m in micro),
        sum(encoder_training_flops(f.encoder_config, *m["input_ids"].shape) for m in micro),
    )
    if info.world_size > 1:
        counted = torch.tensor([items, tokens, flops], dtype=torch.float64, device=f.ctx.device)
        items, tokens, flops = dist.all_reduce_sum(counted).tolist()
    micro = [{key: v.to(f.ctx.device, non_blocking=True) for key, v in m.items()} for m in micro]
    n_items = max(float(items), 1.0)
    stats = train_step(f.ctx, task, micro, n_items)
    grad_norm = loop.optimizer_step(state.model, state.optimizer, state.scaler, t.grad_clip)
    return StepResult(
        step=state.step,
        lr=lr,
        collapse_from=counts_from,
        task=task,
        stats=dist.all_reduce_sum(stats),
        n_items=n_items,
        examples=t.batch_size,
        tokens=int(tokens),
        flops=float(flops),
        grad_norm=grad_norm,
    )


def check_guards(state: FinetuneState, pending: list[StepResult]) -> None:
    """The divergence and collapse guards over the steps not yet checked, in order, each at its
    own step and learning rate — their losses read from the device in one transfer."""
    if not pending:
        return
    values = torch.cat([r.stats for r in pending]).cpu().numpy()
    at = 0
    for r in pending:
        size = len(r.stats)
        loss, predicted = float(values[at]) / r.n_items, values[at + 1 : at + size]
        at += size
        name, chance = r.task.name, r.task.chance_loss
        loop.check_divergence(state.guards[name], r.step, loss, r.lr, LOSS_FLOOR * chance)
        state.collapse[name].update(loss, predicted)
        state.collapse[name].check_training(r.step, r.lr, r.collapse_from)
    pending.clear()


def train_step(
    ctx: loop.StepContext, task: TaskData, micro: list[dict], n_items: float
) -> torch.Tensor:
    """Forward and backward of one optimizer step of ``task`` over its micro-batches; returns
    ``[loss sum, predictions per class...]`` of this process's share, for the log and guards."""
    kind = task.kind
    stats = torch.zeros(1 + len(task.labels), device=ctx.device, dtype=torch.float64)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        logits = ctx.forward(task.name, **batch)
        part = kind.loss_sum(logits, labels)
        stats[0] += part.detach().double()
        stats[1:] += kind.predicted_counts(logits, labels)
        # DDP averages gradients over processes; scale so the result is sum / n_items.
        return part * (ctx.world_size / n_items)

    loop.accumulate(ctx, micro, loss_of)
    return stats
