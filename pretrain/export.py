"""Writing the trained model: a Hugging Face folder that transformers loads as it is.

A run continued from a model (``model.init_from``) gives a drop-in replacement for that folder:
its ``config.json`` and tokenizer files are copied unchanged (the vocabulary, lower-casing and
Chinese-character settings a user's code relies on), and weights the masked-LM model does not
train — the pooler and next-sentence head of a converted Google checkpoint — are kept as they
were, in the original architecture, rather than dropped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from ptm.data.tokenizer import save_tokenizer

# What a model folder holds besides weights and stays as it was (weights in other formats —
# pytorch_model.bin, tf_model.h5, TF checkpoints — would be stale and are not copied).
KEPT_FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
TOKENIZER_FILES = KEPT_FILES[1:]


def export_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    init_from: str | None = None,
) -> None:
    """Write ``out``, aside first and renamed at the end, so it is never half there."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if init_from is None:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
    else:
        _export_continued(model, tokenizer, Path(init_from), tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _export_continued(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: Path, tmp: Path
) -> None:
    architectures = AutoConfig.from_pretrained(source, local_files_only=True).architectures
    arch = architectures[0] if architectures else type(model).__name__
    if arch == type(model).__name__:
        model.save_pretrained(tmp)
    else:
        # The original class (BertForPreTraining, say) with the trained tensors copied in by
        # name: every tensor of the MLM model has its place there; the rest keep their values.
        full = getattr(transformers, arch).from_pretrained(source, local_files_only=True)
        target = full.state_dict()
        trained = model.state_dict()
        foreign = sorted(set(trained) - set(target))
        if foreign:
            raise AssertionError(f"{arch} has no place for the trained tensors {foreign[:5]}")
        with torch.no_grad():
            for name, tensor in trained.items():
                target[name].copy_(tensor)
        full.save_pretrained(tmp)
    if not any((source / name).is_file() for name in TOKENIZER_FILES):
        save_tokenizer(tokenizer, tmp)  # the model came without one: the run's tokenizer
    for name in KEPT_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, tmp / name)
