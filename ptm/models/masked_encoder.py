"""BERT's encoder when only the masked positions' outputs are needed.

A masked-LM loss reads the last layer's output at the ~15% of positions that carry a label. The
layers below must run everywhere (every position is a key and value of the next layer), but in
the last one the queries, the attention output, the feed-forward block and the layer norms only
matter at the masked positions; keys and values still come from every position. Running the
last layer on those rows only does about a quarter of its work, exactly the same arithmetic for
the rows kept (MosaicBERT's "subset" last layer). The weights are transformers' own modules,
called in the order ``BertLayer`` calls them, so the model saved is an ordinary ``BertForMaskedLM``.

Attention is ptm's own (`ptm.models.attention`): plain matrix products when training on CPU.
"""

from __future__ import annotations

import torch
from transformers import BertModel

from ptm.models.attention import attend


def supports_masked_only(encoder: torch.nn.Module) -> bool:
    """A plain BERT encoder: no decoder, no cross-attention, no chunked feed-forward."""
    config = getattr(encoder, "config", None)
    return (
        isinstance(encoder, BertModel)
        and not config.is_decoder
        and not config.add_cross_attention
        and not config.chunk_size_feed_forward
    )


def masked_rows(selected: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, kept)``, both (B, W): the positions of each row's selected tokens first, in
    order, then padding; ``kept`` marks the real ones. Fixed shapes for a given ``width``."""
    order = torch.argsort((~selected).to(torch.uint8), dim=1, stable=True)[:, :width]
    kept = torch.arange(width, device=selected.device) < selected.sum(dim=1, keepdim=True)
    return order, kept


def encode_masked_positions(
    bert: BertModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    order: torch.Tensor,
) -> torch.Tensor:
    """The last hidden states at the positions ``order`` (B, W) names: ``(B, W, hidden)``, the
    same values as ``last_hidden_state.gather(1, order)`` at a fraction of the last layer's cost.

    ``attention_mask=None`` means no padding: attention then runs without a mask, which lets
    SDPA pick its flash kernel (packed segments are ~98% full, so most batches have none).
    """
    hidden = bert.embeddings(input_ids=input_ids)
    key_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
    *lower, last = bert.encoder.layer
    for layer in lower:
        hidden = _layer_at_rows(layer, hidden, hidden, key_mask)
    rows = hidden.gather(1, order[..., None].expand(-1, -1, hidden.size(-1)))
    return _layer_at_rows(last, hidden, rows, key_mask)


def _layer_at_rows(
    layer: torch.nn.Module, hidden: torch.Tensor, rows: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """``BertLayer`` with queries from ``rows`` (B, W, H) and keys/values from ``hidden``."""
    attention = layer.attention.self
    batch = hidden.size(0)

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, x.size(1), -1, attention.attention_head_size).transpose(1, 2)

    context = attend(
        split_heads(attention.query(rows)),
        split_heads(attention.key(hidden)),
        split_heads(attention.value(hidden)),
        key_mask,
        attention.dropout.p if attention.training else 0.0,
        attention.scaling,
    )
    context = context.transpose(1, 2).reshape(batch, rows.size(1), -1)
    return layer.feed_forward_chunk(layer.attention.output(context, rows))
