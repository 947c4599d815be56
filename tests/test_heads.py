"""Task heads over a shared encoder: what each pooling reads, dropout and initialisation, loading
an encoder from a folder or from scratch, and vocabulary checks (`ptm.models.heads`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, GPT2Config

from ptm.errors import InputError
from ptm.models.heads import (
    HeadConfig,
    SequenceHead,
    TaskModel,
    build_head,
    check_vocab,
    load_encoder,
    set_dropout,
)
from tests.finetune_helpers import tiny_config, tiny_model_dir


def states_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    states = torch.randn(2, 5, 8)  # (B, L, H)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return states, mask


def test_each_pooling_reads_what_it_names() -> None:
    states, mask = states_and_mask()
    pooled = torch.randn(2, 8)
    heads = {
        p: SequenceHead(8, 3, p, dropout=0.0, std=0.02).eval() for p in ("cls", "pooler", "mean")
    }
    for head in heads.values():  # the same classifier, so only the pooled vector differs
        head.classifier.load_state_dict(heads["cls"].classifier.state_dict())
    linear = heads["cls"].classifier
    torch.testing.assert_close(heads["cls"](states, mask, None), linear(states[:, 0]))
    torch.testing.assert_close(heads["pooler"](states, mask, pooled), linear(pooled))
    mean = torch.stack([states[0, :3].mean(0), states[1].mean(0)])
    torch.testing.assert_close(heads["mean"](states, mask, None), linear(mean))
    padded = states.clone()
    padded[0, 3:] = 1e6  # what sits under padding never counts
    torch.testing.assert_close(heads["mean"](padded, mask, None), linear(mean))


def test_heads_take_the_encoders_dropout_unless_told_and_start_like_bert() -> None:
    config = BertConfig(hidden_size=64, hidden_dropout_prob=0.2, initializer_range=0.02)
    torch.manual_seed(0)
    sequence = build_head("sequence", config, 3, HeadConfig(pooling="mean", dropout=None))
    token = build_head("token", config, 5, HeadConfig(pooling="cls", dropout=0.0))
    assert sequence.dropout.p == 0.2 and sequence.pooling == "mean" and token.dropout.p == 0.0
    weight = sequence.classifier.weight
    assert weight.shape == (3, 64) and abs(weight.std().item() - 0.02) < 0.005
    assert torch.equal(sequence.classifier.bias, torch.zeros(3))
    states, mask = torch.randn(2, 7, 64), torch.ones(2, 7, dtype=torch.long)
    assert token(states, mask, None).shape == (2, 7, 5)  # one output per position
    with pytest.raises(ValueError, match="pooling='max' is unknown"):
        HeadConfig(pooling="max", dropout=None)
    with pytest.raises(ValueError, match=r"dropout=1\.0"):
        HeadConfig(pooling="cls", dropout=1.0)


def test_an_encoder_loads_its_folders_weights_or_starts_from_scratch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tiny_model_dir(tmp_path / "model")
    first = load_encoder(folder, pretrained=True, with_pooler=False)
    saved = load_file(folder / "model.safetensors")  # a masked LM: its encoder under "bert."
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, saved[f"bert.{name}"]), name
    assert first.pooler is None
    torch.manual_seed(1)
    scratch = load_encoder(folder, pretrained=False, with_pooler=False)
    emb = "embeddings.word_embeddings.weight"
    assert not torch.equal(scratch.state_dict()[emb], first.state_dict()[emb])
    caplog.set_level("WARNING")
    with_pooler = load_encoder(folder, pretrained=True, with_pooler=True, dropout=0.3)
    assert with_pooler.pooler is not None and "(the pooler: untrained" in caplog.text
    assert with_pooler.config.hidden_dropout_prob == 0.3
    assert with_pooler.config.attention_probs_dropout_prob == 0.3


def test_task_model_runs_the_named_head(tmp_path: Path) -> None:
    encoder = load_encoder(tiny_model_dir(tmp_path / "model"), pretrained=True, with_pooler=False)
    heads = {
        "sentiment": build_head(
            "sequence", encoder.config, 2, HeadConfig(pooling="cls", dropout=0.0)
        ),
        "names": build_head("token", encoder.config, 7, HeadConfig(pooling="cls", dropout=0.0)),
    }
    model = TaskModel(encoder, heads).eval()
    ids = torch.tensor([[2, 10, 11, 3, 0]])
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    assert model("sentiment", ids, mask, types).shape == (1, 2)
    assert model("names", ids, mask, types).shape == (1, 5, 7)


def test_dropout_is_set_where_the_config_has_it(tmp_path: Path) -> None:
    config = tiny_config(20, 64, 0)
    assert set_dropout(config, None, tmp_path) is config and config.hidden_dropout_prob == 0.1
    set_dropout(config, 0.0, tmp_path)
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.0
    with pytest.raises(InputError, match=r"config\.json: a gpt2 config has no hidden_dropout_prob"):
        set_dropout(GPT2Config(), 0.1, tmp_path)


def test_a_tokenizer_must_fit_the_embedding_table(tmp_path: Path) -> None:
    check_vocab(100, BertConfig(vocab_size=100), tmp_path)
    check_vocab(100, BertConfig(vocab_size=104), tmp_path)  # padded to a multiple of 8
    for model_size in (122, 232):  # not a multiple of 8; a multiple, past the padding slack
        with pytest.raises(
            InputError, match=f"100 entries but the model's vocabulary has {model_size}"
        ):
            check_vocab(100, BertConfig(vocab_size=model_size), tmp_path)
    with pytest.raises(InputError, match="has 101 entries"):
        check_vocab(101, BertConfig(vocab_size=100), tmp_path)  # too small: would crash
