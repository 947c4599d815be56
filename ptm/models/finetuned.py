"""Saving a fine-tuned model so transformers loads it, and loading it back into ptm.

What a folder written by `export` holds:

* one task whose kind names a transformers class (``hf_task`` in its ``finetune.json`` entry:
  ``SequenceClassification`` or ``TokenClassification``, with the kind's ``problem_type``) —
  ``config.json`` + ``model.safetensors`` of ``<Arch>For<hf_task>`` with ``id2label``/``label2id``
  set, so ``AutoModelFor...Classification.from_pretrained(folder)`` and ``pipeline(...)`` work
  with no ptm code; a BERT classifier on mean-pooled states is written with
  `ptm.models.modeling_mean_pooling`, whose file travels in the folder (``trust_remote_code=True``
  loads it);
* otherwise (several tasks, mean pooling on another architecture) — the shared encoder as
  ``AutoModel`` loads it; the heads are in ``heads.safetensors`` and only `load_finetuned`
  (ptm) assembles the whole model;
* always: the tokenizer, ``heads.safetensors`` (the exact head weights), ``finetune.json``
  (tasks, their kind and head, label order, pooling, truncation, decisions such as a multi-label
  threshold, and how the folder loads) and a model card, ``README.md`` (`ptm.models.card`: the
  run's scores, recipe and command where the caller passes them).

The ``[CLS]``-state head and ``BertForSequenceClassification``: that class always classifies
``tanh(W_p h + b_p)``, the pooler output. We export the pooler as ``W_p = eps * I``, ``b_p = 0``
and the classifier as ``W / eps``: then ``(W / eps) tanh(eps h) = W h (1 - (eps h)^2 / 3 + ...)``.
``eps`` is chosen from the final LayerNorm's weights so that ``|eps h| <= 1e-3`` for every
possible state, which bounds the relative error of every logit by 3.3e-7 — below float32
rounding. The transformers class thus computes our head to float precision. The exported pooler
is meant for inference: to fine-tune that folder further, start from it with ptm (which reloads
the encoder only) rather than training the scaled pooler.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerBase,
)

from ptm.data.tokenizer import load_tokenizer, save_tokenizer
from ptm.errors import InputError
from ptm.files import tensor_bytes, written_aside
from ptm.models.card import CardInfo, write_card
from ptm.models.folder import reading_weights
from ptm.models.heads import HeadConfig, TaskModel, build_head, load_encoder, quiet_transformers
from ptm.models.modeling_mean_pooling import BertForMeanPooledSequenceClassification

log = logging.getLogger(__name__)
FORMAT = 1
META = "finetune.json"
HEADS = "heads.safetensors"
# Architectures whose transformers classification classes we write: the attribute holding the
# encoder, and the pooler's weight names inside it.
_HF = {"bert": ("bert", "pooler.dense"), "albert": ("albert", "pooler")}
TANH_LINEAR_RANGE = 1e-3
MEAN_POOLED = BertForMeanPooledSequenceClassification.__name__
# The transformers head classes a kind can name as its ``hf_task``.
_AUTO = {
    "SequenceClassification": AutoModelForSequenceClassification,
    "TokenClassification": AutoModelForTokenClassification,
}


def pooler_scale(encoder: nn.Module) -> float:
    """``eps`` with ``|eps * h| <= 1e-3`` for every final state ``h`` (see the module docstring).

    A LayerNorm output is ``gamma * z + beta`` with ``sum(z^2) <= H``, so ``|h_i| <= |gamma_i|
    sqrt(H) + |beta_i|``. BERT and ALBERT end on a LayerNorm; taking the largest bound over all of
    them covers the final one without depending on module order (ALBERT registers its final
    LayerNorm before the attention's).
    """
    bound = max(
        float((m.weight.detach().abs() * math.sqrt(m.weight.numel()) + m.bias.detach().abs()).max())
        for m in encoder.modules()
        if isinstance(m, nn.LayerNorm)
    )
    return TANH_LINEAR_RANGE / bound


def hf_class_for(model: TaskModel, meta: dict) -> str | None:
    """The transformers class that computes this model exactly, or None (see `export`)."""
    tasks = meta["tasks"]
    if len(tasks) != 1 or model.encoder.config.model_type not in _HF:
        return None
    (task,) = tasks.values()
    if task.get("hf_task") not in _AUTO:
        return None
    if task["head"] == "sequence" and task["pooling"] == "mean":
        # transformers has no mean-pooling classifier: ours, for BERT (its code goes along)
        return MEAN_POOLED if model.encoder.config.model_type == "bert" else None
    if task["head"] == "sequence" and task["pooling"] not in ("cls", "pooler"):
        return None  # a pooling no transformers class computes
    return type(model.encoder).__name__.removesuffix("Model") + "For" + task["hf_task"]


def export(
    model: TaskModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict,
    out: Path,
    card: CardInfo | None = None,
) -> str | None:
    """Write the folder (aside, then renamed, so it is never half there) with its model card
    (``card``: the run's config, metrics and command; None: the folder alone); return the HF
    class."""
    meta = copy.deepcopy(meta)
    hf_class = hf_class_for(model, meta)
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model stays where it is
    with written_aside(out, expected_bytes=tensor_bytes(model)) as tmp:
        if hf_class is None:
            with quiet_transformers():
                model.encoder.save_pretrained(tmp)
            loads = "AutoModel (the shared encoder only); the heads load with ptm.models.finetuned.load_finetuned"
        else:
            _save_hf(model, meta, tmp, hf_class)
            (task,) = meta["tasks"].values()
            remote = ", trust_remote_code=True" if hf_class == MEAN_POOLED else ""
            loads = f"AutoModelFor{task['hf_task']} ({hf_class}{remote}) and ptm.models.finetuned.load_finetuned"
        save_file({k: v.contiguous() for k, v in model.heads.state_dict().items()}, tmp / HEADS)
        tokenizer.model_max_length = max(t["max_seq_len"] for t in meta["tasks"].values())
        save_tokenizer(tokenizer, tmp)
        full = {"format": FORMAT, "hf_class": hf_class, "loads_with": loads, **meta}
        (tmp / META).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n")
        write_card(tmp, card or CardInfo(kind="finetune"))
    return hf_class


def _save_hf(model: TaskModel, meta: dict, folder: Path, hf_class: str) -> None:
    ((name, task),) = meta["tasks"].items()
    config = model.encoder.config.__class__.from_dict(model.encoder.config.to_dict())
    config.num_labels = len(task["labels"])
    config.id2label = dict(enumerate(task["labels"]))
    config.label2id = {label: i for i, label in enumerate(task["labels"])}
    if task.get("problem_type"):
        config.problem_type = task["problem_type"]
    with quiet_transformers():
        if hf_class == MEAN_POOLED:
            hf = BertForMeanPooledSequenceClassification(config)
        else:
            hf = _AUTO[task["hf_task"]].from_config(config)
    encoder_attr, pooler = _HF[config.model_type]
    state = {f"{encoder_attr}.{k}": v for k, v in model.encoder.state_dict().items()}
    head = model.heads[name].classifier
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
    if task["head"] == "sequence" and task["pooling"] == "cls":
        eps = pooler_scale(model.encoder)
        hidden = config.hidden_size
        state[f"{encoder_attr}.{pooler}.weight"] = torch.eye(hidden) * eps
        state[f"{encoder_attr}.{pooler}.bias"] = torch.zeros(hidden)
        weight = weight / eps
        task["pooler_scale"] = eps
    state["classifier.weight"], state["classifier.bias"] = weight, bias
    hf.load_state_dict(state, strict=True)
    with quiet_transformers():
        hf.save_pretrained(folder)


def load_finetuned(folder: Path) -> tuple[TaskModel, PreTrainedTokenizerBase, dict]:
    """A folder written by `export` -> the same model, its tokenizer and its ``finetune.json``."""
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.is_file():
        raise InputError(
            folder, f"no {META}: not a folder written by ptm's fine-tuning", "check the path"
        )
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(meta_path, f"not readable JSON ({e})", "copy the folder again") from e
    if meta.get("format") != FORMAT:
        raise InputError(meta_path, f"format {meta.get('format')} is not {FORMAT}", "re-export")
    tasks = meta["tasks"]
    with_pooler = any(t.get("pooling") == "pooler" for t in tasks.values())
    encoder = load_encoder(folder, pretrained=True, with_pooler=with_pooler)
    heads = {  # token heads have no pooling (null in finetune.json)
        name: build_head(
            _head_of(t),
            encoder.config,
            len(t["labels"]),
            HeadConfig(pooling=t["pooling"] or "cls", dropout=None),
        )
        for name, t in tasks.items()
    }
    model = TaskModel(encoder, heads)
    with reading_weights(folder / HEADS):
        state = load_file(folder / HEADS)
    model.heads.load_state_dict(state, strict=True)
    return model.eval(), load_tokenizer(folder), meta


def _head_of(task: dict) -> str:
    # Folders written before finetune.json named the head: a token head was the one with no
    # pooling.
    return task.get("head") or ("token" if task["pooling"] is None else "sequence")
