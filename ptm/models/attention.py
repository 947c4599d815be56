"""Attention as ptm runs it: plain matrix products when training on CPU, SDPA everywhere else.

PyTorch's CPU ``scaled_dot_product_attention`` is the quicker kernel forward, but forward and
backward together it is about 3x slower in bf16 than the same attention written as two matrix
products and a softmax (128 positions, head width 64: 26 against 8.6 ms for 16 segments), and
1.1x in fp32 (BENCHMARKS.md's attention rows).
So attention that will be differentiated on CPU takes the matrix products, with ptm's cheaper
dropout mask (`ptm.models.dropout`) when dropout is on; inference and GPUs keep SDPA.

The same function serves both stages: the masked-LM encoder calls ``attend`` directly
(`ptm.models.masked_encoder`), and ``ATTENTION`` is registered with transformers' attention and
mask interfaces, so that every encoder ptm loads (``attn_implementation=ATTENTION``) takes it
too. The name is a loading option only: a saved ``config.json`` does not record it, so a model
folder ptm writes loads in plain ``transformers`` as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ptm.models.dropout import MaskedScale, keep_mask

ATTENTION = "ptm"


def use_math_attention(query: torch.Tensor) -> bool:
    """Whether attention runs as plain matrix products: when it will be differentiated on CPU,
    where SDPA's backward is the slow part."""
    return query.requires_grad and query.device.type == "cpu" and not torch.compiler.is_compiling()


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: torch.Tensor | None,
    dropout_p: float,
    scale: float,
) -> torch.Tensor:
    """Scaled dot-product attention, (B, heads, queries, width); ``key_mask`` is boolean, True
    where a query may attend (broadcast to the scores), or None for no padding.

    Both scales go where the tensors are small: the softmax scale on the queries, the dropout
    scale on the output (head width per query) rather than on the probabilities (one per key).
    """
    if not use_math_attention(query):
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask, dropout_p=dropout_p, scale=scale
        )
    scores = torch.matmul(query * scale, key.transpose(-1, -2))  # scaled where it is small
    if key_mask is not None:
        scores.masked_fill_(~key_mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    if dropout_p == 0:
        return torch.matmul(probs, value)
    keep, keep_scale = keep_mask(probs.shape, dropout_p)
    return torch.matmul(MaskedScale.apply(probs, keep, 1.0), value).mul_(keep_scale)


def transformers_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``attend`` behind transformers' attention interface: its masks are SDPA's (boolean or
    None), and it wants the output as (B, queries, heads, width)."""
    if kwargs.get("output_attentions") or getattr(module, "is_causal", False):
        # weights to return, or a decoder's causal mask: what transformers' SDPA path is for
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    out = attend(query, key, value, attention_mask, dropout, scale)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, transformers_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
