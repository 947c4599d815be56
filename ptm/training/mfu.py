"""Model FLOPs utilisation: the matrix-multiply work a training step needs, against what the
device can do.

Tokens per second says nothing about how close a run is to its hardware's limit; MFU does, and it
compares across GPUs and model sizes (PaLM, appendix B; nanoGPT logs it the same way). The count
is analytic — every matmul of the forward pass, three times for forward plus backward, attention
scores included — so it costs nothing per step. Element-wise work (softmax, GELU, layer norm,
dropout) is left out, as is usual. It counts the work ptm's loop asks for: the MLM head (and for
BERT the last encoder layer) at the masked positions only, so a run that skips work does not
score as if it had done it.
"""

from __future__ import annotations

import re

import torch
from transformers import PretrainedConfig

# Dense (no sparsity) tensor-core peaks of one device, TFLOP/s: (16-bit, TF32, plain fp32), from
# NVIDIA's data sheets, keyed by a pattern of the name ``torch.cuda.get_device_name`` reports
# ('NVIDIA H100 80GB HBM3', 'NVIDIA A100-SXM4-80GB'). Checked in order: specific names first.
_PEAK_TFLOPS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    (r"\bH100 PCIe\b", (756.0, 378.0, 51.2)),
    (r"\bH100 NVL\b", (835.0, 418.0, 60.0)),
    (r"\bH100\b", (989.4, 494.7, 66.9)),  # SXM
    (r"\b(GH|H)200\b", (989.4, 494.7, 66.9)),
    (r"\bA100\b", (312.0, 156.0, 19.5)),
    (r"\bL4\b", (121.0, 60.0, 30.3)),
    (r"\bV100\b", (125.0, 15.7, 15.7)),  # fp16 tensor cores; no bf16, no TF32
    (r"\bT4\b", (65.0, 8.1, 8.1)),  # fp16 tensor cores; no bf16, no TF32
)


def peak_flops(
    device: torch.device, precision: str, tf32: bool, override_tflops: float | None
) -> float | None:
    """FLOP/s one ``device`` can do at ``precision``; None where it is not known.

    ``override_tflops`` (``runtime.peak_tflops``) wins: for GPUs missing from the table, or CPUs.
    """
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    return peak_of_gpu(torch.cuda.get_device_name(device), precision, tf32)


def peak_of_gpu(name: str, precision: str, tf32: bool) -> float | None:
    """The table's peak for the GPU called ``name`` at ``precision``; None for unknown GPUs."""
    for pattern, (half, tf32_peak, fp32_peak) in _PEAK_TFLOPS:
        if re.search(pattern, name):
            if precision in ("bf16", "fp16"):
                return half * 1e12
            return (tf32_peak if tf32 else fp32_peak) * 1e12
    return None


def _layer_flops(config: PretrainedConfig, rows: int, length: int, query_rows: int) -> int:
    """One encoder layer's forward matmuls: keys and values at every position, the rest at the
    ``query_rows`` whose output is needed (all of them, except in a masked-only last layer)."""
    h, f = config.hidden_size, config.intermediate_size
    keys_values = 2 * 2 * rows * length * h * h
    queries_and_output = 2 * 2 * query_rows * h * h
    scores_and_mix = 2 * 2 * query_rows * length * h
    feed_forward = 2 * 2 * query_rows * h * f
    return keys_values + queries_and_output + scores_and_mix + feed_forward


def encoder_training_flops(
    config: PretrainedConfig, rows: int, length: int, last_layer_rows: int | None = None
) -> int:
    """Forward + backward matmul FLOPs of the encoder on a micro-batch of ``rows`` x ``length``.

    ``last_layer_rows``: positions the last layer's queries run on; None = all of them.
    Works for BERT and ALBERT (whose factorised embeddings add a projection up to the hidden
    width). Fine-tuning heads (a handful of outputs per row) are small enough to leave out.
    """
    h = config.hidden_size
    positions = rows * length
    embedding = getattr(config, "embedding_size", h)
    forward = 2 * positions * embedding * h if embedding != h else 0
    forward += (config.num_hidden_layers - 1) * _layer_flops(config, rows, length, positions)
    last = positions if last_layer_rows is None else last_layer_rows
    forward += _layer_flops(config, rows, length, last)
    return 3 * forward  # backward: gradients of inputs and of weights, each as costly as forward


def mlm_training_flops(
    config: PretrainedConfig,
    rows: int,
    length: int,
    head_rows: int,
    last_layer_rows: int | None = None,
) -> int:
    """The encoder's FLOPs plus the MLM head's at ``head_rows`` positions (the masked ones for
    ptm, every position for a full head): a dense transform to the embedding width, then the
    vocabulary projection."""
    h, embedding = config.hidden_size, getattr(config, "embedding_size", config.hidden_size)
    head = 2 * head_rows * h * embedding + 2 * head_rows * embedding * config.vocab_size
    return encoder_training_flops(config, rows, length, last_layer_rows) + 3 * head


def utilisation(flops: float, seconds: float, peak: float | None, processes: int) -> float | None:
    """MFU of ``flops`` done in ``seconds`` by ``processes`` devices of ``peak`` FLOP/s each."""
    if not peak:
        return None
    return flops / max(seconds, 1e-9) / (peak * processes)
