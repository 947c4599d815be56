"""Attention while training on CPU: ptm's matrix products against PyTorch's SDPA kernel.

One BERT-mini layer's attention (4 heads of width 64) over a batch of segments, forward and
backward, as a training step runs it; ``ptm.models.attention.attend`` takes its matrix-product
path because the inputs require gradients, the baseline calls ``scaled_dot_product_attention``
on the same tensors. Each side runs in its own process (`bench.common.measure`), on the
process's default threads.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.common import BenchRow, measure
from ptm.models.attention import attend

HEADS, WIDTH = 4, 64  # BERT-mini


def _timed(ours: bool, batch: int, length: int, precision: str, seconds: float) -> float:
    """Segments per second through forward and backward, after one second of warm-up."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    query, key, value = (
        torch.randn(batch, HEADS, length, WIDTH, dtype=dtype, requires_grad=True) for _ in range(3)
    )
    scale = WIDTH**-0.5

    def step() -> None:
        if ours:
            out = attend(query, key, value, None, 0.0, scale)
        else:
            out = F.scaled_dot_product_attention(query, key, value, scale=scale)
        out.float().sum().backward()

    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return done * batch / (time.perf_counter() - start)


def run(batch_size: int, max_seq_len: int, precisions: list[str], seconds: float) -> list[BenchRow]:
    rows = []
    for precision in precisions:
        args = (batch_size, max_seq_len, precision, seconds)
        mine, base = measure(_timed, True, *args), measure(_timed, False, *args)
        rows.append(
            BenchRow(
                benchmark=f"attention: CPU training, forward + backward ({precision})",
                metric="segments/s",
                ours=mine.value,
                baseline=base.value,
                ours_peak_mb=mine.peak_rss_mb,
                baseline_peak_mb=base.peak_rss_mb,
                setup=(
                    f"one BERT-mini layer's attention ({HEADS} heads of width {WIDTH}), batches "
                    f"of {batch_size} x {max_seq_len}, no padding, {precision} tensors, "
                    f"{seconds:g} s each after 1 s of warm-up; ours: ptm.models.attention.attend "
                    "(matrix products and a softmax: the path training on CPU takes in "
                    "pretraining and fine-tuning); baseline: torch.nn.functional."
                    "scaled_dot_product_attention on the same tensors"
                ),
                precision=precision,
            )
        )
    return rows
