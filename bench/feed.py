"""The host side of a pretraining step on a GPU: can one CPU core keep the device fed?

BERT-mini asks ~25 MFLOP of a training step per token, so an H100/H200 at 30% MFU consumes about
12 M tokens a second. What the host does per batch in ptm: gather the segments from the memory
map, word-start marks, padding and the attention mask (masking itself runs on the device,
`ptm.data.masking`). The baseline is the host side of the usual Hugging Face recipe:
``DataCollatorForLanguageModeling`` collating and masking lists of token IDs on the CPU, as
``run_mlm.py``'s DataLoader does. Both run on one thread at a GPU batch (256 x 256 positions) over
the same segments; the setup line scales ptm's rate to the GPU machine's 16 cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import BenchRow, measure
from bench.pretrain import _segments

NEEDED = 12e6  # tokens/s: BERT-mini on an H200 at 30% MFU (see the module docstring)
GPU_MACHINE_CORES = 16


def ours(folder: str, batch: int, seconds: float) -> float:
    import numpy as np
    import torch

    from ptm.data.segment_store import SegmentData

    torch.set_num_threads(1)
    data = SegmentData(Path(folder), "train")
    rng = np.random.default_rng(0)
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = data.batch(rng.integers(0, len(data), batch), pad_id=0)
        tokens += int(out["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def baseline(folder: str, batch: int, seconds: float) -> float:
    import numpy as np
    import torch
    from transformers import DataCollatorForLanguageModeling

    from ptm.data.segment_store import SegmentData, load_segment_tokenizer

    torch.set_num_threads(1)
    data = SegmentData(Path(folder), "train")
    collator = DataCollatorForLanguageModeling(load_segment_tokenizer(Path(folder)), 0.15)
    examples = [
        {"input_ids": data.tokens[data.offsets[i] : data.offsets[i + 1]].astype(np.int64).tolist()}
        for i in range(min(len(data), 20 * batch))
    ]
    rng = np.random.default_rng(0)
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = collator([examples[i] for i in rng.integers(0, len(examples), batch)])
        tokens += int(out["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def run(batch_size: int, max_seq_len: int, seconds: float) -> list[BenchRow]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(_segments(Path(tmp), max_seq_len))  # the corpus marks words
        base = measure(baseline, folder, batch_size, seconds)
        mine = measure(ours, folder, batch_size, seconds)
    scaled = mine.value * GPU_MACHINE_CORES
    return [
        BenchRow(
            benchmark="pretrain feed: host side of a GPU batch (one core)",
            metric="tokens/s",
            ours=mine.value,
            baseline=base.value,
            ours_peak_mb=mine.peak_rss_mb,
            baseline_peak_mb=base.peak_rss_mb,
            setup=(
                f"embedded corpus segments of {max_seq_len} with whole-word marks, batches of "
                f"{batch_size} random segments, one thread, {seconds:g} s each; ours: one gather "
                "from the memory map (ids, word starts, attention mask; masking runs on the "
                "device); baseline: DataCollatorForLanguageModeling on token-ID lists (masking on "
                f"the host). Needed on a GPU: ~{NEEDED / 1e6:.0f} M tokens/s (BERT-mini, H200 at "
                f"30% MFU); ours on one core is {mine.value / NEEDED:.1f}x that "
                f"({scaled / 1e6:,.0f} M tokens/s on the GPU machine's {GPU_MACHINE_CORES} cores), "
                "and a prefetch thread prepares step s+1 in pinned memory while step s runs"
            ),
        )
    ]
