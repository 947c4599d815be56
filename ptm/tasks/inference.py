"""Running a `TaskModel` over a whole split: the part of prediction every kind of task shares.

Batches are sorted by length (least padding) and, on a GPU, padded to the same few fixed lengths
as training's (`ptm.tasks.batching.length_buckets`, ``runtime.padding``); each kind (`ptm.tasks.kinds`) turns the logits into
its predictions and scatters them back to file order, so predictions line up with the rows of the
input file — what a submission needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ptm.models.heads import TaskModel
from ptm.tasks.batching import collate, eval_order, length_buckets
from ptm.tasks.splits import Split
from ptm.training.runtime import autocast, pads_to_buckets


@dataclass
class Prediction:
    loss: float | None  # mean loss over labelled items; None without answers
    counts: np.ndarray  # how often each class was predicted (labelled items only, if any)
    probs: np.ndarray | None = None  # per-text kinds: (n_rows, C) class probabilities
    row_tags: list[np.ndarray] | None = None  # tokens: per row, a tag index per word

    @property
    def classes(self) -> np.ndarray:
        assert self.probs is not None, "classes are for kinds with one answer per text"
        return self.probs.argmax(1)


def logits_batches(
    model: TaskModel,
    task: str,
    split: Split,
    device: torch.device,
    precision: str,
    batch_size: int,
    pad_id: int,
    *,
    padding: str = "auto",
    max_len: int | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """``(example indices, float32 logits, labels or None, attention mask)`` of every batch of
    ``split``, longest first, in evaluation mode and without gradients; the model's mode is
    restored afterwards. ``padding`` is ``runtime.padding``'s choice (auto: on GPUs the fixed
    lengths training uses, up to ``max_len`` — the task's — so evaluation, test and every chunk
    of a predicted file reuse training's graphs; the longest of each batch on CPUs)."""
    was_training = model.training
    model.eval()
    multiple = 8 if device.type == "cuda" else 1
    lengths = split.lengths
    bucketed = len(lengths) > 0 and pads_to_buckets(padding, device)
    top = max_len if max_len is not None else int(lengths.max()) if len(lengths) else 0
    buckets = length_buckets(max(top, int(lengths.max()))) if bucketed else None
    try:
        for idx in eval_order(lengths, batch_size):
            batch = collate(split, idx, pad_id, multiple, buckets=buckets)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            labels = batch.pop("labels", None)
            with torch.no_grad(), autocast(device, precision):
                logits = model(task, **batch)
            yield idx, logits.float(), labels, batch["attention_mask"]
    finally:
        model.train(was_training)
