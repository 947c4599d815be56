"""Every model folder ptm writes carries a Hugging Face model card: ``ModelCard.load`` parses its
``README.md``, the front matter names the library and pipeline, and ``model-index`` holds the
run's metrics (pretraining export, fine-tuned export, TF conversion)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForMaskedLM

from pretrain.export import export_model
from ptm.data.tokenizer import load_tokenizer
from ptm.models.card import CardInfo, card_text, pipeline_for, write_card
from ptm.models.finetuned import export
from ptm.models.heads import HeadConfig, TaskModel, build_head, load_encoder
from ptm.tf.convert import run as convert
from tests.finetune_helpers import tiny_model_dir
from tests.test_convert import FIXTURES, convert_config

PRETRAIN_CONFIG = {
    "data": {
        "corpus": ["outputs/data/embedded/pretrain.txt"],
        "segments": {"max_seq_len": 128},
        "masking": {"rate": 0.3, "whole_word": True},
    },
    "model": {"init_from": None},
    "train": {"batch_size": 16, "lr": 1e-3, "max_steps": 3200, "seed": 42},
    "runtime": {"precision": "bf16"},
}
PRETRAIN_METRICS = {
    "eval/loss": 4.8412,
    "eval/accuracy": 0.2051,
    "eval/perplexity": 126.6,
    "unigram_entropy": 6.55,
    "steps": 3200,
    "tokens": 6_291_456,
    "wall_seconds": 447.3,
}
FINETUNE_METRICS = {
    "steps": 1299,
    "wall_seconds": 39.6,
    "tasks": {
        "sentiment": {
            "kind": "classification",
            "metric": "macro_f1",
            "metric_label": "macro-F1",
            "dev": {"macro_f1": 0.8286, "accuracy": 0.8295, "loss": 0.39},
            "test": {"macro_f1": 0.8524, "accuracy": 0.8531, "loss": 0.36},
        }
    },
}


def metrics_of(card: ModelCard) -> dict[tuple[str | None, str], float]:
    """(split, metric name) -> value from the card's model-index."""
    return {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}


def test_a_pretraining_export_carries_a_card_with_its_metrics(tmp_path: Path) -> None:
    source = tiny_model_dir(tmp_path / "tiny")
    model = AutoModelForMaskedLM.from_pretrained(source)
    info = CardInfo(
        kind="pretrain",
        command="python -m pretrain",
        config=PRETRAIN_CONFIG,
        metrics=PRETRAIN_METRICS,
    )
    export_model(model, load_tokenizer(source), tmp_path / "model", card=info)
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "fill-mask"
    assert {"ptm", "bert", "masked-lm", "pretrained-from-scratch"} <= set(card.data.tags)
    assert card.data.base_model is None  # from random weights
    assert metrics_of(card) == {
        ("held-out", "held-out MLM loss"): 4.8412,
        ("held-out", "held-out MLM accuracy"): 0.2051,
        ("held-out", "held-out perplexity"): 126.6,
    }
    text = card.text
    assert "3,200 steps, 6,291,456 tokens" in text and "7 min 27 s" in text
    assert "| masking rate | 0.3 |" in text and "| whole-word masking | yes |" in text
    assert "```bash\npython -m pretrain\n```" in text
    assert "`pretrain.txt`" in text


def test_without_run_facts_the_card_describes_the_folder(tmp_path: Path) -> None:
    source = tiny_model_dir(tmp_path / "tiny")
    model = AutoModelForMaskedLM.from_pretrained(source)
    export_model(model, load_tokenizer(source), tmp_path / "model")
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert card.data.pipeline_tag == "fill-mask" and card.data.eval_results is None
    assert "BERT model (2 layers, 32 hidden units, 2 attention heads, 64 positions" in card.text


def test_a_fine_tuned_export_carries_a_card_with_dev_and_test_scores(tmp_path: Path) -> None:
    source = tiny_model_dir(tmp_path / "tiny")
    torch.manual_seed(0)
    encoder = load_encoder(source, pretrained=True, with_pooler=True)
    head = build_head("sequence", encoder.config, 2, HeadConfig(pooling="cls", dropout=None))
    meta = {
        "tasks": {
            "sentiment": {
                "kind": "classification",
                "head": "sequence",
                "hf_task": "SequenceClassification",
                "problem_type": "single_label_classification",
                "labels": ["0", "1"],
                "pooling": "cls",
                "max_seq_len": 32,
            }
        }
    }
    info = CardInfo(
        kind="finetune",
        command="python -m finetune task=sentiment",
        config={"model": {"path": str(source), "init": "pretrained"}, "train": {"lr": 1e-4}},
        metrics=FINETUNE_METRICS,
    )
    out = tmp_path / "model"
    export(TaskModel(encoder, {"sentiment": head}), load_tokenizer(source), meta, out, card=info)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None  # a local folder: named in the body, not as a Hub id
    assert f"fine-tuned from `{source}`" in card.text
    assert metrics_of(card) == {
        ("dev", "dev macro-F1"): 0.8286,
        ("dev", "dev accuracy"): 0.8295,
        ("test", "test macro-F1"): 0.8524,
        ("test", "test accuracy"): 0.8531,
    }
    (f1,) = [r for r in card.data.eval_results if r.metric_name == "test macro-F1"]
    assert f1.task_type == "text-classification" and f1.metric_type == "f1"
    assert f1.metric_args == {"average": "macro"}
    assert "| sentiment | macro-F1 | 0.8286 | 0.8524 |" in card.text
    assert "sentiment** (classification, 2 labels)" in card.text


def test_a_converted_checkpoint_carries_a_card_saying_what_it_came_from(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    summary = convert(convert_config(input=str(FIXTURES / "pretraining"), output=str(out)))
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "fill-mask"
    assert "converted-from-tensorflow" in card.data.tags
    assert card.data.eval_results is None  # a conversion measures nothing
    assert f"{summary['mapped']} variables mapped" in card.text
    assert f"python -m convert input={FIXTURES / 'pretraining'} output={out}" in card.text


def test_an_hf_to_tf_conversion_has_no_model_card(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    convert(convert_config(input=str(FIXTURES / "pretraining"), output=str(hf)))
    tf = tmp_path / "tf"
    convert(convert_config(input=str(hf), output=str(tf), direction="hf2tf"))
    assert not (tf / "README.md").exists()  # a TF checkpoint, not a folder the Hub describes


@pytest.mark.parametrize(
    ("architecture", "tag"),
    [
        ("BertForMaskedLM", "fill-mask"),
        ("BertForPreTraining", "fill-mask"),
        ("BertForTokenClassification", "token-classification"),
        ("BertForMeanPooledSequenceClassification", "text-classification"),
        ("BertModel", "feature-extraction"),
        (None, "feature-extraction"),
    ],
)
def test_the_pipeline_tag_follows_the_architecture(architecture: str | None, tag: str) -> None:
    assert pipeline_for(architecture) == tag


def test_a_hub_base_model_is_named_and_a_non_finite_metric_left_out(tmp_path: Path) -> None:
    info = CardInfo(
        kind="pretrain",
        config={"model": {"init_from": "hfl/chinese-roberta-wwm-ext"}},
        metrics={"eval/loss": float("nan"), "eval/accuracy": 0.5},
    )
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    card = ModelCard.load(write_card(tmp_path, info))
    assert card.data.base_model == "hfl/chinese-roberta-wwm-ext"
    assert "continued-pretraining" in card.data.tags
    assert metrics_of(card) == {("held-out", "held-out MLM accuracy"): 0.5}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"CardInfo\.kind 'pretraining'"):
        card_text(CardInfo(kind="pretraining"), "fill-mask", {})
