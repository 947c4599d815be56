"""Model cards: the ``README.md`` every model folder ptm writes carries, in the Hugging Face
format — YAML front matter (``library_name``, ``pipeline_tag``, ``tags``, ``base_model``,
``model-index`` with the run's metrics) and a short body: what it was trained on, for how long,
the recipe's key settings, its scores, how to load it, and the command that made it.

A folder copied away from its run (to a colleague, to the Hub) then still says what it is; the
Hub shows the card and reads ``model-index`` as the model's evaluation results. The front matter
is produced by ``huggingface_hub`` (`ModelCardData`, `EvalResult`), so it is the schema the Hub
validates, and ``ModelCard.load(folder / "README.md")`` reads it back.

The exporters (`pretrain.export.export_model`, `ptm.models.finetuned.export`,
`ptm.tf.convert.run`) write the card inside the folder before it is renamed into place; the
training loops hand them a `CardInfo` built from what they already hold:

    CardInfo(kind="pretrain", config=to_plain(cfg), metrics=final, command=command_line())

Everything the folder itself says (architecture from ``config.json``, tasks and labels from
``finetune.json``) is read from the folder, so a card never contradicts the weights beside it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ptm.models.modeling_mean_pooling import BertForMeanPooledSequenceClassification

CARD = "README.md"
# transformers head class suffix -> the Hub's pipeline tag.
PIPELINES = {
    "MaskedLM": "fill-mask",
    "PreTraining": "fill-mask",
    "SequenceClassification": "text-classification",
    "TokenClassification": "token-classification",
}
FEATURES = "feature-extraction"  # an encoder alone (AutoModel)
# ptm's metric names -> the Hub's metric type (https://hf.co/metrics) and its arguments.
HUB_METRICS = {
    "macro_f1": ("f1", {"average": "macro"}),
    "micro_f1": ("f1", {"average": "micro"}),
    "entity_f1": ("f1", {"scheme": "IOB2", "level": "entity"}),
    "accuracy": ("accuracy", None),
    "tag_accuracy": ("accuracy", None),
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
MEAN_POOLED = BertForMeanPooledSequenceClassification.__name__  # loads with trust_remote_code


@dataclass(frozen=True, kw_only=True)
class CardInfo:
    """What the card says beyond the folder's own files: how the model was made and what it
    scored. Everything is optional; a card without it describes the folder alone."""

    kind: str  # "pretrain" | "finetune" | "convert"
    command: str | None = None  # the command that made the folder, as a user types it
    config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config, plain
    metrics: dict[str, Any] = field(default_factory=dict)  # as the run returns them
    notes: tuple[str, ...] = ()  # sentences added to the body (a checkpoint's step, ...)


def pipeline_for(architecture: str | None) -> str:
    """``BertForMaskedLM`` -> ``fill-mask``; an encoder alone -> ``feature-extraction``."""
    for suffix, tag in PIPELINES.items():
        if architecture and architecture.endswith(suffix):
            return tag
    return FEATURES


def write_card(folder: Path, info: CardInfo, pipeline_tag: str | None = None) -> Path:
    """``folder/README.md`` for ``info``; the architecture (and the pipeline tag, unless given)
    comes from the folder's ``config.json``, tasks and labels from its ``finetune.json``."""
    folder = Path(folder)
    model = _json(folder / "config.json")
    meta = _json(folder / "finetune.json")
    arch = (model.get("architectures") or [None])[0]
    card = ModelCard(card_text(info, pipeline_tag or pipeline_for(arch), model, meta))
    path = folder / CARD
    card.save(path)
    return path


def card_text(info: CardInfo, pipeline_tag: str, model: dict, meta: dict | None = None) -> str:
    """The card: front matter and body (``model`` is the folder's config.json as a dict)."""
    meta = meta or {}
    build = {"pretrain": _pretrain, "finetune": _finetune, "convert": _convert}.get(info.kind)
    if build is None:
        raise ValueError(f"CardInfo.kind {info.kind!r}: use pretrain, finetune or convert")
    name, base, tags, results, body = build(info, model, meta)
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["ptm", model.get("model_type", "bert"), *tags],
        base_model=base,
        model_name=name if results else None,
        eval_results=results or None,
    )
    lines = [f"# {name}", "", *body]
    if info.notes:
        lines += ["", *info.notes]
    lines += ["", "## Use", "", *_use(pipeline_tag, meta)]
    if info.command:
        lines += ["", "## How it was made", "", "```bash", info.command, "```"]
    lines += [
        "",
        "Written by ptm (pretrain-then-finetune for BERT-style models); the numbers above come "
        "from the run that wrote this folder.",
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- kinds


def _pretrain(info: CardInfo, model: dict, meta: dict):
    c, m = info.config, info.metrics
    init_from = _get(c, "model.init_from")
    name = f"ptm {_shape(model)} masked-LM"
    files = [Path(str(p)).name for p in _get(c, "data.corpus") or []]
    corpus = ", ".join(f"`{f}`" for f in files) or "—"
    start = f"continued from `{init_from}`" if init_from else "from random weights"
    body = [
        f"A {_describe(model)} trained with masked-LM only (no next-sentence prediction), "
        f"{start}, by ptm.",
        "",
        f"- **Corpus:** {corpus}",
    ]
    if m.get("steps") is not None:
        tokens = f", {m['tokens']:,} tokens (real, not padding)" if m.get("tokens") else ""
        wall = f", {_minutes(m['wall_seconds'])}" if m.get("wall_seconds") else ""
        body.append(f"- **Training:** {m['steps']:,} steps{tokens}{wall}")
    if _finite(m.get("eval/loss")):
        body.append(
            f"- **Held-out MLM loss:** {m['eval/loss']:.4f} (accuracy "
            f"{_num(m.get('eval/accuracy'))}, perplexity {_num(m.get('eval/perplexity'), 2)})"
            + (
                f"; the corpus's unigram entropy is {m['unigram_entropy']:.4f} (the loss of a "
                "model that ignores context)"
                if _finite(m.get("unigram_entropy"))
                else ""
            )
        )
    if _finite(m.get("general/loss")):
        body.append(f"- **General text (data.general_eval) loss:** {m['general/loss']:.4f}")
    body += _settings(
        c,
        [
            ("segment length", "data.segments.max_seq_len"),
            ("masking rate", "data.masking.rate"),
            ("whole-word masking", "data.masking.whole_word"),
            ("word segmenter", "data.word_segmenter"),
            ("batch (segments)", "train.batch_size"),
            ("peak learning rate", "train.lr"),
            ("weight decay", "train.weight_decay"),
            ("warm-up fraction", "train.warmup_fraction"),
            ("decay", "train.decay"),
            ("max steps", "train.max_steps"),
            ("precision", "runtime.precision"),
            ("seed", "train.seed"),
        ],
    )
    held_out = f"held-out split of {', '.join(files) or 'the corpus'}"
    dataset = {"dataset_type": "text", "dataset_name": held_out}
    results = [
        EvalResult(
            task_type="fill-mask",
            **dataset,
            dataset_split="held-out",
            metric_type=kind,
            metric_name=label,
            metric_value=_round(m[key]),
        )
        for key, kind, label in (
            ("eval/loss", "loss", "held-out MLM loss"),
            ("eval/accuracy", "accuracy", "held-out MLM accuracy"),
            ("eval/perplexity", "perplexity", "held-out perplexity"),
        )
        if _finite(m.get(key))
    ]
    tags = ["masked-lm", "continued-pretraining" if init_from else "pretrained-from-scratch"]
    return name, _hub_id(init_from), tags, results, body


def _finetune(info: CardInfo, model: dict, meta: dict):
    c, m = info.config, info.metrics
    tasks = m.get("tasks") or {}
    names = list(tasks) or list(meta.get("tasks", {}))
    source, init = _get(c, "model.path"), _get(c, "model.init")
    name = f"ptm {_shape(model)} fine-tuned on {', '.join(names) or 'its tasks'}"
    start = (
        f"from random weights (the architecture of `{source}`: the from-scratch comparison)"
        if init == "scratch"
        else f"from `{source}`"
        if source
        else "from a pretrained model"
    )
    body = [f"A {_describe(model)} fine-tuned {start} by ptm.", ""]
    for task in names:
        t, labels = tasks.get(task, {}), meta.get("tasks", {}).get(task, {}).get("labels", [])
        kind = t.get("kind") or meta.get("tasks", {}).get(task, {}).get("kind", "")
        body.append(f"- **{task}** ({kind}, {len(labels)} labels)" if labels else f"- **{task}**")
    if tasks:
        body += ["", "| task | metric | dev | test |", "|---|---|---|---|"]
        for task, t in tasks.items():
            metric = t.get("metric", "")
            dev, test = (t.get(s, {}).get(metric) for s in ("dev", "test"))
            body.append(
                f"| {task} | {t.get('metric_label', metric)} | {_num(dev)} | {_num(test)} |"
            )
        body.append("")
        body.append(
            "The checkpoint kept is the one with the best dev score, so dev is optimistic; test "
            "was looked at once, at the end."
        )
    if m.get("steps") is not None:
        wall = f", {_minutes(m['wall_seconds'])}" if m.get("wall_seconds") else ""
        body += ["", f"- **Training:** {m['steps']:,} steps{wall}"]
    body += _settings(
        c,
        [
            ("learning rate", "train.lr"),
            ("epochs", "train.epochs"),
            ("max steps", "train.max_steps"),
            ("batch (examples)", "train.batch_size"),
            ("layer-wise LR decay", "train.layer_decay"),
            ("pooling", "head.pooling"),
            ("dropout", "model.dropout"),
            ("precision", "runtime.precision"),
            ("seed", "train.seed"),
        ],
    )
    results = []
    for task, t in tasks.items():
        head = meta.get("tasks", {}).get(task, {}).get("head")  # the kind's, in finetune.json
        hub_task = "token-classification" if head == "token" else "text-classification"
        for split in ("dev", "test"):
            scores = t.get(split) or {}
            for key in dict.fromkeys([t.get("metric"), "accuracy", "tag_accuracy"]):
                if key in HUB_METRICS and _finite(scores.get(key)):
                    metric_type, args = HUB_METRICS[key]
                    label = t.get("metric_label", key) if key == t.get("metric") else key
                    results.append(
                        EvalResult(
                            task_type=hub_task,
                            task_name=task,
                            dataset_type=task,
                            dataset_name=task,
                            dataset_split=split,
                            metric_type=metric_type,
                            metric_name=f"{split} {label}",
                            metric_args=args,
                            metric_value=_round(scores[key]),
                        )
                    )
    tags = ["fine-tuned", *sorted({t.get("kind") for t in tasks.values() if t.get("kind")})]
    base = None if init == "scratch" else _hub_id(source)
    return name, base, tags, results, body


def _convert(info: CardInfo, model: dict, meta: dict):
    s = info.metrics
    arch = s.get("architecture") or (model.get("architectures") or ["?"])[0]
    name = f"{_shape(model)} ({arch}) converted from a TensorFlow checkpoint"
    body = [
        f"A {_describe(model)}, converted by ptm (no TensorFlow needed) from the Google-format "
        f"TensorFlow checkpoint `{Path(str(s.get('input', '?'))).name}` to `{arch}`.",
    ]
    if "mapped" in s:
        skipped = s.get("skipped_by_reason") or {}
        why = f" ({', '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""
        body += [
            "",
            f"- {s['mapped']} variables mapped ({s.get('transposed', 0)} transposed), "
            f"{s.get('skipped', 0)} skipped{why}; every one is listed in "
            "`conversion_report.json`.",
        ]
    return name, None, ["converted-from-tensorflow"], [], body


# ----------------------------------------------------------------------------- helpers


def _use(pipeline_tag: str, meta: dict) -> list[str]:
    remote = ", trust_remote_code=True" if meta.get("hf_class") == MEAN_POOLED else ""
    if pipeline_tag == FEATURES:
        loads = meta.get("loads_with")
        lines = [
            "```python",
            "from transformers import AutoModel",
            'encoder = AutoModel.from_pretrained("PATH")  # PATH: this folder',
            "```",
        ]
        return lines + ([f"Loads with: {loads}."] if loads else [])
    return [
        "```python",
        "from transformers import pipeline",
        f'model = pipeline("{pipeline_tag}", model="PATH"{remote})  # PATH: this folder',
        "```",
    ]


def _settings(config: dict, keys: list[tuple[str, str]]) -> list[str]:
    rows = [(label, _get(config, key)) for label, key in keys]
    rows = [(label, value) for label, value in rows if value is not None]
    if not rows:
        return []
    return [
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {label} | {_value(value)} |" for label, value in rows),
    ]


def _get(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _shape(model: dict) -> str:
    kind = str(model.get("model_type", "bert")).upper()
    if "num_hidden_layers" in model and "hidden_size" in model:
        return f"{kind} ({model['num_hidden_layers']} layers, hidden {model['hidden_size']})"
    return kind


def _describe(model: dict) -> str:
    parts = [
        f"{model[k]:,} {label}"
        for k, label in (
            ("num_hidden_layers", "layers"),
            ("hidden_size", "hidden units"),
            ("num_attention_heads", "attention heads"),
            ("max_position_embeddings", "positions"),
            ("vocab_size", "vocabulary entries"),
        )
        if isinstance(model.get(k), int)
    ]
    kind = str(model.get("model_type", "bert")).upper()
    return f"{kind} model ({', '.join(parts)})" if parts else f"{kind} model"


def _hub_id(source: Any) -> str | None:
    """``source`` where it names a Hub model (``owner/name`` that is no local folder); local
    paths stay in the body only, since the Hub reads ``base_model`` as a repository."""
    if not source:
        return None
    text = str(source)
    return text if _HUB_ID.fullmatch(text) and not Path(text).exists() else None


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _num(x: Any, decimals: int = 4) -> str:
    return f"{x:.{decimals}f}" if _finite(x) else "—" if x is None else str(x)


def _minutes(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
