"""Feeding masked-LM steps: host batches prepared ahead of the device, masked on the device, and
sized once on the host so every shape the model sees is static.

Why a feed of its own: on a GPU, BERT-mini at 30% MFU of an H100-class device eats ~12 M tokens a
second. Cutting a 256 x 256 batch out of the memory-mapped segments takes ~5 ms on one core
(BENCHMARKS.md), about as long as the device's step, so done in line it would halve the step
rate. `Prefetch` prepares step ``s + 1``'s host batches on a thread (numpy's gathers release the
GIL) in pinned memory while step ``s`` runs, and copies go out non-blocking. On a CPU the thread
would only compete with the compute threads for the same cores, so there it is off.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from ptm.data.masking import IGNORE_INDEX, Masker

T = TypeVar("T")
WIDTH_MULTIPLE = 8  # masked positions per row are computed in multiples of this (tensor cores)


@dataclass
class MicroBatch:
    """One micro-batch on the device, masked, with the host-side sizes the step needs."""

    chunk: int  # its number in the global batch (seeds its masks and dropout)
    input_ids: torch.Tensor  # (B, L) after masking
    attention_mask: torch.Tensor | None  # (B, L); None when no position is padding
    labels: torch.Tensor  # (B, L), IGNORE_INDEX where nothing is predicted
    tokens: int  # real (non-padding) positions
    predicted: int  # positions with a label
    width: int  # masked positions per row the model computes (the most of any row, rounded up)


class Prefetch(Generic[T]):
    """``get(step)`` returns ``prepare(step)``; with ``enabled``, ``prepare(step + 1)`` is already
    running on a background thread by then. Steps must be asked for in order."""

    def __init__(self, prepare: Callable[[int], T], enabled: bool) -> None:
        self.prepare = prepare
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if enabled else None
        self.ahead: tuple[int, Future[T]] | None = None

    def get(self, step: int) -> T:
        if self.pool is None:
            return self.prepare(step)
        if self.ahead is not None and self.ahead[0] == step:
            result = self.ahead[1].result()
        else:
            result = self.prepare(step)
        self.ahead = (step + 1, self.pool.submit(self.prepare, step + 1))
        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def pin(batch: dict, device: torch.device) -> dict:
    """Page-locked host tensors when the batch goes to a GPU (what makes a copy asynchronous)."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mask_on_device(
    host: list[tuple[int, dict]],
    device: torch.device,
    masker: Masker,
    seed_of: Callable[[int], int],
) -> list[MicroBatch]:
    """Copy host batches to ``device``, mask them there (seeded per chunk), and size them.

    The sizes (labelled positions, and the most in any row, which fixes the width the last layer
    and the MLM head compute) come back to the host in one transfer for all micro-batches.
    """
    out, counts = [], []
    for chunk, batch in host:
        ids = batch["input_ids"].to(device, non_blocking=True)
        starts = batch.get("word_start")
        starts = None if starts is None else starts.to(device, non_blocking=True)
        g = torch.Generator(device).manual_seed(seed_of(chunk))
        ids, labels = masker(ids, starts, g)
        per_row = (labels != IGNORE_INDEX).sum(dim=1)
        counts.append(torch.stack([per_row.sum(), per_row.max()]))
        attention = (
            batch["attention_mask"].to(device, non_blocking=True) if batch["padded"] else None
        )
        tokens = int(batch["attention_mask"].sum())  # on the host: no device sync
        out.append(MicroBatch(chunk, ids, attention, labels, tokens, 0, 0))
    for m, (predicted, most) in zip(out, torch.stack(counts).tolist(), strict=True):
        m.predicted = predicted
        m.width = round_width(most, m.labels.size(1))
    return out


def round_width(most: int, length: int, multiple: int = WIDTH_MULTIPLE) -> int:
    """The most masked positions of any row, rounded up to ``multiple`` (at least one multiple,
    at most the row length): a handful of distinct widths over a whole run, so ``torch.compile``
    builds a handful of graphs instead of one per count."""
    return min(max(-(-most // multiple) * multiple, multiple), length)
