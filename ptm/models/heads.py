"""A shared encoder with one head per task: a ``sequence`` head (one output vector per text or
pair of texts, from a pooled representation) or a ``token`` head (one per position). Which head a
task gets, and what its outputs mean (softmax classes, independent sigmoid labels, BIO tags), is
its kind's choice (`ptm.tasks.kinds`). Single-task fine-tuning is the one-head case of the same
module.

Sentence representation (``pooling``):

* ``cls`` (default) — the final hidden state of ``[CLS]``. With masked-LM-only pretraining the
  pooler (dense + tanh, trained by next-sentence prediction in the original BERT) is never
  trained, so feeding its random projection to the classifier only adds noise to undo.
* ``pooler`` — BERT's pooler output, what ``BertForSequenceClassification`` uses; right for
  checkpoints pretrained with NSP (Google's and the Chinese releases).
* ``mean`` — the mean of the final states over real (non-padding) positions.

Each head is dropout + one linear layer, initialised like BERT's (normal, std =
``initializer_range``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers import logging as hf_logging

from ptm.errors import InputError
from ptm.models.attention import ATTENTION
from ptm.models.folder import read_config, reading_weights

log = logging.getLogger(__name__)
POOLINGS = ("cls", "pooler", "mean")
HEADS = ("sequence", "token")
# Padding a vocabulary to a multiple of 8/64/128 for tensor cores leaves unused rows: allowed.
_PADDED_VOCAB_SLACK = 128


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    pooling: str  # cls | pooler | mean (sequence heads; token heads use every state)
    dropout: float | None  # before the linear layer; null: the encoder's hidden dropout

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is unknown; use one of {list(POOLINGS)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}; use a value in [0, 1)")


def _linear(hidden: int, n_out: int, std: float) -> nn.Linear:
    layer = nn.Linear(hidden, n_out)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class SequenceHead(nn.Module):
    """One label per sequence, from the pooled representation."""

    def __init__(self, hidden: int, n_labels: int, pooling: str, dropout: float, std: float):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = _linear(hidden, n_labels, std)

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, pooled: torch.Tensor | None
    ) -> torch.Tensor:
        if self.pooling == "cls":
            x = states[:, 0]  # (B, H)
        elif self.pooling == "pooler":
            assert pooled is not None, "pooling=pooler needs an encoder built with its pooler"
            x = pooled
        else:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
            x = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(self.dropout(x))  # (B, C)


class TokenHead(nn.Module):
    """One label per position."""

    def __init__(self, hidden: int, n_labels: int, dropout: float, std: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = _linear(hidden, n_labels, std)

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor, pooled: torch.Tensor | None
    ) -> torch.Tensor:
        return self.classifier(self.dropout(states))  # (B, L, C)


class TaskModel(nn.Module):
    """The encoder and a head per task; ``forward(task, ...)`` runs the encoder and that head."""

    def __init__(self, encoder: PreTrainedModel, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    def forward(
        self,
        task: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return self.heads[task](out.last_hidden_state, attention_mask, out.get("pooler_output"))


def build_head(head: str, config: PretrainedConfig, n_labels: int, cfg: HeadConfig) -> nn.Module:
    """A ``sequence`` or ``token`` head (`HEADS`) of ``n_labels`` outputs over ``config``'s states."""
    dropout = config.hidden_dropout_prob if cfg.dropout is None else cfg.dropout
    if head == "token":
        return TokenHead(config.hidden_size, n_labels, dropout, config.initializer_range)
    assert head == "sequence", f"head {head!r} is not one of {HEADS}"
    return SequenceHead(
        config.hidden_size, n_labels, cfg.pooling, dropout, config.initializer_range
    )


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars; we log a one-line summary instead."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def encoder_config(folder: Path) -> PretrainedConfig:
    return read_config(
        folder,
        "point model.path to a folder written by `make pretrain`, the converter or "
        "transformers (e.g. outputs/pretrain/latest/model)",
    )


_DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def set_dropout(config: PretrainedConfig, dropout: float | None, folder: Path) -> PretrainedConfig:
    """``config`` with its hidden and attention dropout set to ``dropout`` (None: left as
    config.json has it). A model pretrained without dropout, as cramming and ModernBERT pretrain,
    can still be fine-tuned with it: cramming turns it back on (0.1) for fine-tuning."""
    if dropout is None:
        return config
    if not all(hasattr(config, name) for name in _DROPOUTS):
        raise InputError(
            folder / "config.json",
            f"a {config.model_type} config has no {' / '.join(_DROPOUTS)} to set",
            "leave model.dropout null for this model",
        )
    for name in _DROPOUTS:
        setattr(config, name, dropout)
    return config


def load_encoder(
    folder: Path, pretrained: bool, with_pooler: bool, dropout: float | None = None
) -> PreTrainedModel:
    """The encoder of any BERT-style folder: its weights, or (``pretrained=False``) a random
    initialisation of the same architecture — the from-scratch baseline. Call under a seed.
    ``dropout``: see `set_dropout`."""
    config = set_dropout(encoder_config(folder), dropout, folder)
    config._attn_implementation = ATTENTION
    kwargs = {"add_pooling_layer": with_pooler} if config.model_type in ("bert", "albert") else {}
    with quiet_transformers():
        if not pretrained:
            return AutoModel.from_config(config, **kwargs)
        with reading_weights(folder):
            model, info = AutoModel.from_pretrained(
                folder,
                config=config,
                local_files_only=True,
                attn_implementation=ATTENTION,
                output_loading_info=True,
                **kwargs,
            )
    missing = sorted(info["missing_keys"])
    ignored = sorted(info["unexpected_keys"])
    if missing:
        log.warning(
            "encoder: %d tensors not in %s were newly initialised: %s%s",
            len(missing),
            folder,
            ", ".join(missing[:4]),
            " (the pooler: untrained by MLM-only pretraining)"
            if all("pooler" in k for k in missing)
            else "",
        )
    log.info(
        "encoder loaded from %s (%s, %d tensors of other heads ignored)",
        folder,
        type(model).__name__,
        len(ignored),
    )
    return model


def check_vocab(tokenizer_size: int, config: PretrainedConfig, tokenizer_from: Path) -> None:
    """A tokenizer that does not match the embedding table makes garbage or crashes mid-run."""
    model_size = config.vocab_size
    padded = tokenizer_size <= model_size < tokenizer_size + _PADDED_VOCAB_SLACK and (
        model_size % 8 == 0
    )
    if tokenizer_size != model_size and not padded:
        raise InputError(
            tokenizer_from,
            f"the tokenizer has {tokenizer_size} entries but the model's vocabulary has "
            f"{model_size}",
            "use the tokenizer saved with the model (leave model.tokenizer unset), or a model "
            "pretrained with this tokenizer",
        )
