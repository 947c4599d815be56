"""AdamW with BERT's weight-decay exclusions, and a learning-rate schedule over budget progress.

The schedule is a function of *progress* in [0, 1] rather than of the step: a run budgeted by
steps, tokens or wall-clock minutes then warms up and decays the same way (cramming's idea).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No decay on biases and LayerNorm weights (every 1-D parameter), as in BERT."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fused_device_types() -> tuple[str, ...]:
    """Device types this torch has a fused AdamW kernel for: its own list where it exposes one
    (torch 2.4+: cuda, cpu, mps, xpu, ...), else the two every torch since 2.4 fuses on."""
    from torch.utils import _foreach_utils

    listed = getattr(_foreach_utils, "_get_fused_kernels_supported_devices", None)
    return tuple(listed()) if listed is not None else ("cpu", "cuda")


def build_adamw(
    groups: list[dict], lr: float, betas: tuple[float, float], eps: float, device: torch.device
) -> torch.optim.AdamW:
    """Fused AdamW (one kernel for the whole update of a group) wherever torch has the kernel:
    CPU and CUDA, the devices ``runtime.device`` chooses from, and any other torch lists.

    Not only a GPU matter: on a 2-core CPU the default implementation took 1.77 s (foreach:
    1.39 s) per step for BERT-mini's 4.7 M parameters, the fused kernel 7.4 ms. On a GPU the
    fused update is a handful of launches instead of a few per parameter, and reads the step
    count from the device, so it never waits on the host.
    """
    fused = device.type in fused_device_types()
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def lr_factor(
    progress: float, warmup_fraction: float, decay: str, min_factor: float = 0.0
) -> float:
    """Multiplier of the peak learning rate at ``progress``: linear warm-up, then decay."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return progress / warmup_fraction
    t = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    if decay == "linear":
        shape = 1.0 - t
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * t))
    elif decay == "constant":
        shape = 1.0
    else:
        raise ValueError(f"unknown decay {decay!r}: use linear, cosine or constant")
    return min_factor + (1.0 - min_factor) * shape
