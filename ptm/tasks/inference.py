"""Predicting a whole split with a `TaskModel`, and scoring the predictions against the answers.

Batches are sorted by length (least padding) and the results scattered back to file order, so
predictions line up with the rows of the input file — what a submission needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ptm.models.heads import TaskModel
from ptm.tasks.batching import collate, eval_order
from ptm.tasks.loading import IGNORE, Split
from ptm.tasks.metrics import classification_metrics, token_metrics
from ptm.training.runtime import autocast


@dataclass
class Prediction:
    loss: float | None  # mean cross-entropy over labelled items; None without answers
    counts: np.ndarray  # how often each class was predicted (labelled items only, if any)
    probs: np.ndarray | None = None  # classification: (n_rows, C) class probabilities
    row_tags: list[np.ndarray] | None = None  # tokens: per row, a tag index per word

    @property
    def classes(self) -> np.ndarray:
        assert self.probs is not None, "classes are for classification tasks"
        return self.probs.argmax(1)


@torch.no_grad()
def predict(
    model: TaskModel,
    task: str,
    kind: str,
    split: Split,
    n_labels: int,
    outside: int,
    device: torch.device,
    precision: str,
    batch_size: int,
    pad_id: int,
) -> Prediction:
    """Run ``model`` over ``split``; ``outside`` is the tag given to words that got no token."""
    was_training = model.training
    model.eval()
    loss_sum, n_labelled = 0.0, 0
    counts = np.zeros(n_labels, np.int64)
    multiple = 8 if device.type == "cuda" else 1
    tokens = kind == "tokens"
    probs = None if tokens else np.zeros((len(split), n_labels), np.float32)
    per_example: list[np.ndarray | None] = [None] * len(split)
    for idx in eval_order(split.lengths, batch_size):
        batch = {k: v.to(device) for k, v in collate(split, idx, pad_id, multiple).items()}
        labels = batch.pop("labels", None)
        with autocast(device, precision):
            logits = model(task, **batch)
        logits = logits.float()
        predicted = logits.argmax(-1)
        if labels is not None:
            flat_logits = logits.reshape(-1, n_labels)
            flat_labels = labels.reshape(-1)
            loss_sum += F.cross_entropy(
                flat_logits, flat_labels, ignore_index=IGNORE, reduction="sum"
            ).item()
            labelled = flat_labels != IGNORE
            n_labelled += int(labelled.sum())
            scored = predicted.reshape(-1)[labelled]
        else:
            scored = predicted[batch["attention_mask"].bool()] if tokens else predicted
        counts += np.bincount(scored.cpu().numpy(), minlength=n_labels)
        if tokens:
            on_host = predicted.cpu().numpy()  # one copy per batch, not one per row
            for row, i in enumerate(idx):
                per_example[i] = on_host[row, : len(split.input_ids[i])]
        else:
            probs[idx] = torch.softmax(logits, -1).cpu().numpy()
    model.train(was_training)
    loss = loss_sum / n_labelled if n_labelled else None
    if not tokens:
        return Prediction(loss, counts, probs=probs)
    row_tags = [np.full(int(n), outside, np.int64) for n in split.row_words]
    for r, pred, words in zip(split.row, per_example, split.word_at, strict=True):
        at = words >= 0
        row_tags[r][words[at]] = pred[at]
    return Prediction(loss, counts, row_tags=row_tags)


def score(kind: str, split: Split, prediction: Prediction, labels: list[str]) -> dict[str, object]:
    """The task's metrics on a split with answers, plus its loss."""
    if kind == "tokens":
        truth = [[labels[i] for i in row] for row in split.row_tags()]
        guess = [[labels[i] for i in row] for row in prediction.row_tags]
        metrics = token_metrics(truth, guess, labels)
    else:
        metrics = classification_metrics(split.row_labels(), prediction.classes, labels)
    return {"loss": prediction.loss, **metrics}
