"""Dropout for CPU training, with a random mask that costs a fifth of torch's.

On CPU, torch's dropout draws one Bernoulli sample per element (``bernoulli_``: about 8 ns each
on the 2-core machine of BENCHMARKS.md) and keeps a float noise tensor for the backward pass;
with BERT's ten dropout sites that was 14% of a BERT-mini pretraining step. Here 16 random bits
per element come from numpy's PCG64 (one 64-bit draw serves four elements) and the mask is kept as
booleans. Same distribution, up to ``p`` rounded to a multiple of 1/65536 (the scale uses the
rounded value, so the expectation stays exact); the generator is seeded from torch's, so a run
repeats exactly under ``torch.manual_seed``. On GPUs torch's fused dropout is already fast and is
used as it is, as it is inside ``torch.compile`` (numpy would break the graph).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # 16 random bits per element


def use_fast_path(x: torch.Tensor, p: float, training: bool) -> bool:
    return training and p > 0 and x.device.type == "cpu" and not torch.compiler.is_compiling()


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask keeping each element with probability ~``1 - p``, and the scale that
    makes the kept values' expectation exact: ``1 / P(keep)``."""
    drop_levels = round(p * _LEVELS)
    n = int(np.prod(shape))
    seed = int(torch.randint(0, 2**62, (1,)))  # from torch's generator: seeded runs repeat
    bits = np.random.PCG64(seed).random_raw(-(-n // 4)).view(np.uint16)[:n]
    keep = torch.from_numpy(bits >= drop_levels).view(shape)
    return keep, _LEVELS / (_LEVELS - drop_levels)


class MaskedScale(torch.autograd.Function):
    """``x * keep * scale``, saving only the boolean mask for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = x * keep.view(torch.uint8)  # a byte multiplies faster than a bool (measured)
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        out = grad * keep.view(torch.uint8)
        return (out.mul_(ctx.scale) if ctx.scale != 1.0 else out), None, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not use_fast_path(x, p, training):
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p)
    return MaskedScale.apply(x, keep, scale)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the CPU mask above; state-free, so a model saves the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every ``nn.Dropout`` in ``model`` for a ``FastDropout`` of the same ``p``; returns
    how many were swapped."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p, child.inplace).train(child.training)
                setattr(module, name, fast)
                swapped += 1
    return swapped
