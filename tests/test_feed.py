"""Feeding pretraining steps: batches gathered in one go equal the row-by-row reference, and
prefetching on a thread changes nothing but the timing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ptm.data.feed import Prefetch, pin
from ptm.data.segment_builder import build_segments
from ptm.data.segment_store import SegmentData
from tests.conftest import segment_config, write_corpus


def reference_batch(data: SegmentData, indices: np.ndarray, pad_id: int, multiple: int = 8):
    """What a batch is, written the slow, obvious way: row by row."""
    lengths = [int(data.offsets[i + 1] - data.offsets[i]) for i in indices]
    width = min(-(-max(lengths) // multiple) * multiple, max(data.max_seq_len, max(lengths)))
    ids = np.full((len(indices), width), pad_id, np.int64)
    starts = np.ones((len(indices), width), bool)
    for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
        ids[row, :n] = data.tokens[data.offsets[i] : data.offsets[i] + n]
        if data.word_start is not None:
            starts[row, :n] = data.word_start[data.offsets[i] : data.offsets[i] + n]
    return ids, starts, np.array(lengths)


def test_one_gather_equals_the_row_by_row_batch(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 200, words=True)
    build_segments(
        [corpus], tmp_path / "seg", segment_config(max_seq_len=64, eval_fraction=0.0, pack=False)
    )
    data = SegmentData(tmp_path / "seg", "train")
    rng = np.random.default_rng(0)
    saw_padding = saw_full = False
    for _ in range(20):
        idx = rng.integers(0, len(data), 7)
        batch = data.batch(idx, pad_id=0)
        ids, starts, lengths = reference_batch(data, idx, 0)
        assert np.array_equal(batch["input_ids"].numpy(), ids)
        assert np.array_equal(batch["word_start"].numpy(), starts)
        mask = np.arange(ids.shape[1]) < lengths[:, None]
        assert np.array_equal(batch["attention_mask"].numpy(), mask.astype(np.int64))
        assert batch["padded"] == (not mask.all())
        saw_padding |= batch["padded"]
        saw_full |= not batch["padded"]
    full = np.flatnonzero(np.diff(data.offsets) == 64)[:3]
    assert len(full) and not data.batch(full, pad_id=0)["padded"]
    assert saw_padding


def test_prefetching_gives_the_same_batches_in_the_same_order() -> None:
    calls: list[tuple[int, str]] = []

    def prepare(step: int) -> torch.Tensor:
        calls.append((step, threading.current_thread().name))
        return torch.arange(step, step + 4)

    ahead, inline = Prefetch(prepare, enabled=True), Prefetch(prepare, enabled=False)
    try:
        for step in range(10):
            assert torch.equal(ahead.get(step), inline.get(step))
    finally:
        ahead.close()
    threaded = [s for s, name in calls if name.startswith("prefetch")]
    # Steps 1..9 were made ahead, on the thread; step 10 was asked for and maybe cancelled.
    assert threaded[:9] == list(range(1, 10)) and threaded[9:] in ([], [10])
    # Asking out of order (a resumed run) is served in line, then prefetching picks up again.
    again = Prefetch(prepare, enabled=True)
    try:
        assert torch.equal(again.get(5), torch.arange(5, 9))
        assert torch.equal(again.get(6), torch.arange(6, 10))
    finally:
        again.close()


def test_pinning_is_for_gpus_only() -> None:
    batch = {"input_ids": torch.zeros(2, 8, dtype=torch.long), "padded": False}
    assert pin(batch, torch.device("cpu")) is batch
