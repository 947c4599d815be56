"""Length-grouped batches with dynamic padding: the cheap way to fine-tune on short texts.

Padding every example to ``max_seq_len`` (the ``pad_to_max_length`` default of transformers'
``run_glue.py``) spends most of the compute on padding when texts are short — the embedded
reviews average ~70 IDs against 256 positions. Padding to the longest example of each batch, with
batches made of examples of similar length, removes almost all of it. Grouping follows
transformers' ``LengthGroupedSampler`` (and fairseq's buckets): shuffle, cut the permutation into
"mega-batches" of ``group`` batches, sort each by length, cut it into batches, then shuffle the
order of the batches — so batches stay random in content and order while each is length-uniform.

On a GPU the padded width has a second cost: every new input shape is a new graph for
``torch.compile`` (static shapes) and a new recording for CUDA graphs, so ``length_buckets`` pads
each batch up to one of a few fixed lengths instead (``runtime.padding``), which compiled and
captured graphs are reused across. The extra padding changes no result: attention masks keep the
padded positions out of every real position's state, and every head reads real positions only
(tests/test_batching.py checks losses and logits to 1e-6 in fp32).
"""

from __future__ import annotations

import numpy as np
import torch

from ptm.tasks.splits import IGNORE, Split

# The shortest padded length with buckets: below it a GPU step costs the same (launch-bound at
# BERT-mini's width), so a smaller bucket would only add a graph to compile.
SMALLEST_BUCKET = 32


def batch_order(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group: int | None
) -> list[np.ndarray]:
    """One epoch of training batches (indices); ``group=None`` means no length grouping.

    Only the last, incomplete batch of the epoch is dropped (every process of a ``torchrun`` job
    must get the same amount of work); which examples it holds changes every epoch.
    """
    perm = rng.permutation(len(lengths))
    if group:
        mega = batch_size * group  # a multiple of batch_size: only the final batch can be short
        parts = [perm[i : i + mega] for i in range(0, len(perm), mega)]
        perm = np.concatenate([p[np.argsort(-lengths[p], kind="stable")] for p in parts])
    batches = [perm[i : i + batch_size] for i in range(0, len(perm) - batch_size + 1, batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_order(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches sorted by length (least padding); callers scatter results back."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def length_buckets(max_len: int, smallest: int = SMALLEST_BUCKET) -> tuple[int, ...]:
    """The padded lengths of ``runtime.padding=buckets`` for examples of at most ``max_len``
    positions: powers of two from ``smallest`` below ``max_len``, then ``max_len`` itself —
    (32, 64, 128, 256) for 256: four graphs to compile, at most twice the padding of the
    longest example (and the model's positions are never exceeded)."""
    if max_len < 1:
        raise ValueError(f"max_len={max_len}: buckets need a positive length")
    out, width = [], smallest
    while width < max_len:
        out.append(width)
        width *= 2
    return (*out, max_len)


def padded_width(longest: int, multiple_of: int = 1, buckets: tuple[int, ...] | None = None) -> int:
    """The width a batch whose longest example has ``longest`` positions is padded to: the
    smallest bucket that holds it, else the longest rounded up to ``multiple_of``. (An example
    longer than every bucket cannot come from a task truncated to the largest; it would get its
    own width — a new graph, never a wrong result.)"""
    for width in buckets or ():
        if width >= longest:
            return width
    return -(-longest // multiple_of) * multiple_of


def collate(
    split: Split,
    idx: np.ndarray,
    pad_id: int,
    multiple_of: int = 1,
    *,
    buckets: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Pad the chosen examples to the longest (rounded up to ``multiple_of``: 8 for tensor cores),
    or with ``buckets`` (`length_buckets`) to the smallest bucket that holds the longest.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` (1 from the second text on) and
    ``labels`` — ``(B,)`` class indices, ``(B, C)`` 0/1 per label (multi-label), or ``(B, L)`` tag
    indices with ``IGNORE`` elsewhere — when the split has answers.
    """
    lengths = [len(split.input_ids[i]) for i in idx]
    width = padded_width(max(lengths), multiple_of, buckets)
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    types = np.zeros((len(idx), width), dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    tags = np.full((len(idx), width), IGNORE, dtype=np.int64) if split.tags is not None else None
    for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
        ids[row, :n] = split.input_ids[i]
        mask[row, :n] = 1
        types[row, split.segment_b[i] : n] = 1
        if tags is not None:
            tags[row, :n] = split.tags[i]
    out = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(types),
    }
    if tags is not None:
        out["labels"] = torch.from_numpy(tags)
    elif split.labels is not None:
        out["labels"] = torch.from_numpy(split.labels[idx].astype(np.int64))
    return out
