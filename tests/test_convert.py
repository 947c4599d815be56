"""The convert stage: TF fixtures -> HF with TF's own logits, HF -> TF -> HF exactly, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    pipeline,
)

from ptm.config import from_conf
from ptm.data.tokenizer import build_tokenizer, save_tokenizer
from ptm.errors import InputError
from ptm.tf.convert import REPORT, ConvertConfig, run
from ptm.tf.reader import CheckpointReader, resolve_prefix
from ptm.tf.writer import CheckpointWriter
from tests.conftest import run_module

REPO = Path(__file__).resolve().parents[1]


def convert_config(**values) -> ConvertConfig:
    """What ``python -m convert key=value ...`` runs (conf/convert.yaml plus ``values``)."""
    return from_conf(ConvertConfig, "convert", overrides=("input=x", "output=y"), **values)


FIXTURES = REPO / "tests" / "fixtures" / "tf_bert"
VARIANTS = {  # variant -> (architecture, variables skipped)
    "mlm_only": ("BertForMaskedLM", 0),
    "pretraining": ("BertForPreTraining", 93),  # adam_m + adam_v for 46, global_step
    "sharded": ("BertForMaskedLM", 86),  # tf.train.AdamOptimizer slots + beta powers
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("converted")
    return {
        v: (root / v, run(convert_config(input=str(FIXTURES / v), output=str(root / v))))
        for v in VARIANTS
    }


def inputs(variant: str) -> dict[str, torch.Tensor]:
    names = ("input_ids", "token_type_ids", "attention_mask")
    return {
        n: torch.from_numpy(np.load(FIXTURES / variant / f"{n}.npy", allow_pickle=False)).long()
        for n in names
    }


def mlm_logits(model_dir: Path, variant: str) -> np.ndarray:
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**inputs(variant)).logits.numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_mlm_logits_match_tensorflow(converted, variant):
    out, summary = converted[variant]
    assert (summary["architecture"], summary["skipped"]) == VARIANTS[variant]
    expected = np.load(FIXTURES / variant / "mlm_logits.npy", allow_pickle=False)
    assert np.abs(mlm_logits(out, variant) - expected).max() < 1e-4


def test_nsp_logits_match_tensorflow(converted):
    out, summary = converted["pretraining"]
    assert summary["input"].endswith("model.ckpt-2")  # the newest step, as `checkpoint` says
    model = BertForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        got = model(**inputs("pretraining")).seq_relationship_logits.numpy()
    expected = np.load(FIXTURES / "pretraining" / "nsp_logits.npy", allow_pickle=False)
    assert np.abs(got - expected).max() < 1e-4


def test_exact_gelu_would_not_match(tmp_path):
    """The tanh-GELU mapping is what makes the logits match: erf GELU misses by far more than 1e-4."""
    run(
        convert_config(
            input=str(FIXTURES / "mlm_only"),
            output=str(tmp_path / "erf"),
            gelu_approximation="none",
        )
    )
    expected = np.load(FIXTURES / "mlm_only" / "mlm_logits.npy", allow_pickle=False)
    assert np.abs(mlm_logits(tmp_path / "erf", "mlm_only") - expected).max() > 1e-4  # ~7e-4


def test_loads_with_plain_transformers(converted):
    out, _ = converted["mlm_only"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["hidden_act"] == "gelu_new"
    model, info = BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert set(info["unexpected_keys"]) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    predictions = pipeline("fill-mask", model=str(out))("11 [MASK] 7")
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)


def test_wordpiece_vocab_of_the_chinese_releases(tmp_path):
    ckpt = copy_fixture(tmp_path)
    pieces = [*"的一是不了在人有我他这个们中来", "##的", "##s", "hello", "world", *"abcdef"]
    (ckpt / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *pieces]) + "\n"
    )
    out = tmp_path / "out"
    run(convert_config(input=str(ckpt), output=str(out)))
    ids = pipeline("fill-mask", model=str(out)).tokenizer("我是[MASK]人 worlds")["input_ids"]
    assert ids == [2, 13, 7, 4, 11, 23, 21, 3]  # [CLS] 我 是 [MASK] 人 world ##s [SEP]


def test_report_lists_every_variable(converted):
    out, _ = converted["pretraining"]
    report = json.loads((out / REPORT).read_text())
    reader = CheckpointReader(resolve_prefix(FIXTURES / "pretraining"))
    assert [row["tf"] for row in report["variables"]] == sorted(reader.entries)
    rows = {row["tf"]: row for row in report["variables"]}
    assert rows["bert/encoder/layer_1/attention/self/query/kernel"]["transposed"] is True
    assert rows["cls/seq_relationship/output_weights"]["transposed"] is False
    assert rows["global_step"]["skipped"].startswith("optimizer state")


# --- HF -> TF -> HF -------------------------------------------------------------------------


def tiny_hf_model(folder: Path, hidden_act: str, dtype: torch.dtype) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [str(i) for i in range(40)]
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        hidden_act=hidden_act,
    )
    torch.manual_seed(0)
    model = BertForPreTraining(config).to(dtype)
    with torch.no_grad():  # random biases and LayerNorms too, so any mix-up shows
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.save_pretrained(folder)
    save_tokenizer(build_tokenizer(vocab, 32), folder)
    return folder


@pytest.mark.parametrize(
    ("hidden_act", "dtype"), [("gelu", torch.float32), ("gelu_new", torch.bfloat16)]
)
def test_hf_tf_hf_round_trip_is_exact(tmp_path, hidden_act, dtype):
    src = tiny_hf_model(tmp_path / "hf", hidden_act, dtype)
    tf = tmp_path / "tf"
    summary = run(convert_config(input=str(src), output=str(tf), direction="hf2tf", shards=2))
    assert summary["architecture"] == "BertForPreTraining"
    assert sorted(p.name for p in tf.iterdir()) == [
        "bert_config.json",
        "checkpoint",
        REPORT,
        "model.ckpt.data-00000-of-00002",
        "model.ckpt.data-00001-of-00002",
        "model.ckpt.index",
        "vocab.txt",
    ]
    back = tmp_path / "back"
    run(convert_config(input=str(tf), output=str(back)))
    before, after = load_file(src / "model.safetensors"), load_file(back / "model.safetensors")
    assert set(before) == set(after)
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(
            after[name].view(torch.uint8), value.view(torch.uint8)
        )
    keys = ("architectures", "hidden_act", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "dtype")  # fmt: skip
    a, b = (json.loads((d / "config.json").read_text()) for d in (src, back))
    assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}
    assert (src / "vocab.txt").read_text() == (back / "vocab.txt").read_text()


def test_hf2tf_refuses_pickles_and_untied_decoders(tmp_path):
    src = tiny_hf_model(tmp_path / "hf", "gelu", torch.float32)
    weights = load_file(src / "model.safetensors")
    (src / "model.safetensors").rename(tmp_path / "weights")
    (src / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(InputError, match="never unpickles"):
        run(convert_config(input=str(src), output=str(tmp_path / "x"), direction="hf2tf"))
    from safetensors.torch import save_file

    weights["cls.predictions.decoder.weight"] = torch.zeros_like(
        weights["bert.embeddings.word_embeddings.weight"]
    )
    save_file(weights, src / "model.safetensors")
    with pytest.raises(
        InputError, match=r"is not tied to bert\.embeddings\.word_embeddings\.weight"
    ):
        run(convert_config(input=str(src), output=str(tmp_path / "x"), direction="hf2tf"))
    assert sorted(p.name for p in tmp_path.glob("x*")) == []  # nor a temporary folder
    drop = ("cls.predictions.decoder.weight",)
    summary = run(
        convert_config(input=str(src), output=str(tmp_path / "x"), direction="hf2tf", skip=drop)
    )
    assert summary["skipped_by_reason"] == {"skip pattern cls.predictions.decoder.weight": 1}


# --- Bad TF inputs ----------------------------------------------------------------------------


def copy_fixture(
    tmp_path: Path, extra: dict[str, np.ndarray] | None = None, drop: str | None = None
) -> Path:
    """The mlm_only fixture rewritten by our writer, with variables added or removed."""
    src = FIXTURES / "mlm_only"
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(src / name, dst / name)
    reader = CheckpointReader(resolve_prefix(src))
    with CheckpointWriter(dst / "bert_model.ckpt") as writer:
        for name in reader.entries:
            if name != drop:
                writer.add(name, reader.read(name))
        for name, value in (extra or {}).items():
            writer.add(name, value)
        writer.finish()
    return dst


def test_unmapped_variable_is_named(tmp_path):
    ckpt = copy_fixture(tmp_path, extra={"output_weights": np.zeros((3, 16), np.float32)})
    with pytest.raises(
        InputError, match=r"no transformers BERT parameter for variable\(s\) output_weights"
    ):
        run(convert_config(input=str(ckpt), output=str(tmp_path / "out")))
    assert sorted(p.name for p in tmp_path.glob("out*")) == []  # nor a temporary folder
    summary = run(convert_config(input=str(ckpt), output=str(tmp_path / "out"), skip=("output_*",)))
    assert summary["skipped_by_reason"] == {"skip pattern output_*": 1}


def test_shape_mismatch_is_named(tmp_path):
    ckpt = copy_fixture(tmp_path)
    config = json.loads((ckpt / "bert_config.json").read_text())
    (ckpt / "bert_config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(
        InputError, match=r"variable bert/encoder/layer_0/intermediate/dense/bias has shape \[32\]"
    ):
        run(convert_config(input=str(ckpt), output=str(tmp_path / "out")))


def test_missing_variable_is_named(tmp_path):
    ckpt = copy_fixture(tmp_path, drop="bert/encoder/layer_1/output/LayerNorm/beta")
    with pytest.raises(
        InputError, match="missing variable bert/encoder/layer_1/output/LayerNorm/beta"
    ):
        run(convert_config(input=str(ckpt), output=str(tmp_path / "out")))


def test_corrupt_checkpoint_leaves_no_output(tmp_path):
    ckpt = copy_fixture(tmp_path)
    data = ckpt / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-10] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum mismatch in variable"):
        run(convert_config(input=str(ckpt), output=str(tmp_path / "out")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_output_is_not_clobbered(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    cfg = convert_config(
        input=str(FIXTURES / "mlm_only"), output=str(tmp_path / "out"), overwrite=True
    )
    with pytest.raises(InputError, match="not ours to replace"):
        run(cfg)
    with pytest.raises(InputError, match="overlaps the input"):
        run(
            convert_config(
                input=str(FIXTURES / "mlm_only"), output=str(FIXTURES / "mlm_only" / "hf")
            )
        )


def test_entry_point_one_line_error(tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from convert.__main__ import main

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("convert", overrides=[f"output={tmp_path / 'out'}"])
    with pytest.raises(SystemExit) as exit_info:
        main.__wrapped__(cfg)  # what @hydra.main calls
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: input is required — set it on the command line: input=..."


def test_command_line(tmp_path):
    out = tmp_path / "out"
    args = [f"input={FIXTURES / 'sharded'}", f"output={out}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = run_module("convert", *args)
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").is_file() and (out / REPORT).is_file()
