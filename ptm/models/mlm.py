"""Building masked-LM models and computing their loss on the masked positions only.

The stage is not tied to one class: BERT and ALBERT (factorised embeddings, shared layers) are
built through transformers' own classes, so what we save is what ``AutoModelForMaskedLM`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AlbertConfig,
    AutoModelForMaskedLM,
    BertConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from ptm.data.feed import round_width
from ptm.data.masking import IGNORE_INDEX
from ptm.errors import InputError
from ptm.models.attention import ATTENTION
from ptm.models.folder import read_config, reading_weights
from ptm.models.masked_encoder import (
    encode_masked_positions,
    masked_rows,
    supports_masked_only,
)

# The encoder and the MLM head of each supported masked-LM class, by config.model_type.
_MLM_PARTS = {"bert": ("bert", "cls"), "albert": ("albert", "predictions")}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The architecture; ``vocab_size`` comes from the tokenizer, never from here."""

    arch: str  # bert | albert
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str
    type_vocab_size: int
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    initializer_range: float
    layer_norm_eps: float
    embedding_size: int | None  # ALBERT only: factorised embedding width
    num_hidden_groups: int  # ALBERT only: groups of shared layers
    init_from: str | None  # a model folder to continue from instead of random init


def hf_config(cfg: ModelConfig, vocab_size: int, pad_token_id: int) -> PretrainedConfig:
    common = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_act=cfg.hidden_act,
        type_vocab_size=cfg.type_vocab_size,
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        initializer_range=cfg.initializer_range,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=pad_token_id,
    )
    if cfg.arch == "bert":
        config = BertConfig(**common)
    elif cfg.arch == "albert":
        config = AlbertConfig(
            **common,
            embedding_size=cfg.embedding_size or 128,
            num_hidden_groups=cfg.num_hidden_groups,
        )
    else:
        raise InputError(None, f"model.arch={cfg.arch!r} is not supported", "use bert or albert")
    # transformers 5 reads the attention kernel from the config, not from the constructor.
    config._attn_implementation = ATTENTION
    return config


def build_mlm_model(cfg: ModelConfig, vocab_size: int, pad_token_id: int) -> PreTrainedModel:
    """A masked-LM model: continued from ``cfg.init_from`` or freshly initialised."""
    if cfg.init_from:
        model = load_mlm_model(Path(cfg.init_from))
        if model.config.vocab_size != vocab_size:
            raise InputError(
                cfg.init_from,
                f"the model's vocabulary has {model.config.vocab_size} entries but the data's "
                f"tokenizer has {vocab_size}",
                "tokenize the corpus with the model's own tokenizer (leave data.tokenizer unset)",
            )
        return model
    return AutoModelForMaskedLM.from_config(hf_config(cfg, vocab_size, pad_token_id))


def load_mlm_model(folder: Path) -> PreTrainedModel:
    config = read_config(folder)
    if config.model_type not in _MLM_PARTS:
        raise InputError(
            folder,
            f"model type {config.model_type!r} is not supported",
            "use a BERT or ALBERT model",
        )
    with reading_weights(folder):
        return AutoModelForMaskedLM.from_pretrained(
            folder, local_files_only=True, attn_implementation=ATTENTION
        )


class MaskedLMObjective(nn.Module):
    """Masked-LM loss computed through the head on the masked positions only.

    A 5,000-token vocabulary head over every position costs as much as a whole BERT-mini layer;
    only ~15% of positions carry a label, so gathering them first saves most of that work (and
    the memory of the full ``(batch, length, vocab)`` logits). For BERT the last encoder layer
    also runs on those positions only (`ptm.models.masked_encoder`). Being one module, it is what DDP
    and ``torch.compile`` wrap, so gradient sync sees the whole forward pass.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        encoder_name, head_name = _MLM_PARTS[model.config.model_type]
        self.encoder = getattr(model, encoder_name)
        self.head = getattr(model, head_name)
        self.masked_only = supports_masked_only(self.encoder)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor,
        width: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(summed loss, correct predictions, predicted positions)``.

        ``width``: masked positions per row to compute (`ptm.data.feed.round_width`, decided on
        the host before the call so every shape is static; None works it out here, at the price
        of a device sync); ``attention_mask=None``: no padding. The loss
        is a sum so the caller can normalise over a whole global batch, where every masked
        position weighs the same whatever micro-batch or process it landed in.
        """
        selected = labels != IGNORE_INDEX  # (B, L)
        if width is None:
            width = round_width(int(selected.sum(dim=1).max()), selected.size(1))
        order, kept = masked_rows(selected, width)  # (B, W) each
        if self.masked_only:
            hidden = encode_masked_positions(self.encoder, input_ids, attention_mask, order)
        else:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            hidden = out.last_hidden_state.gather(
                1, order[..., None].expand(-1, -1, out.last_hidden_state.size(-1))
            )
        # The head on every row of (B, W), padding included: a few percent of a step's work,
        # and no data-dependent shape (boolean indexing would give torch.compile one per step).
        logits = self.head(hidden)  # (B, W, V)
        targets = labels.gather(1, order).masked_fill(~kept, IGNORE_INDEX)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        correct = ((logits.argmax(-1) == targets) & kept).sum()
        return loss, correct, kept.sum()
