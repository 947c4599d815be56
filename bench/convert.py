"""Checkpoint conversion: CRC32C speed, and TF -> HF -> TF on a BERT-base-sized checkpoint.

The checkpoint has Google's BERT-base shape with the Chinese releases' vocabulary size (hidden
768, 12 layers, vocab 21128, MLM + NSP heads, ~409 MB of float32), random values, written by
ptm's own writer. Each step runs in a fresh process (`bench.common.measure`), after the imports,
so the time is the conversion's own; peak RSS includes the ~0.5 GB that importing torch and
transformers costs, which is reported alongside.

There is no baseline: the usual tool (transformers' ``convert_bert_original_tf_checkpoint_to_
pytorch``) needs TensorFlow, which ptm deliberately does not install.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForPreTraining

from bench.common import BenchRow, measure
from ptm.config import from_conf
from ptm.tf.convert import ConvertConfig
from ptm.tf.convert import run as convert_run
from ptm.tf.crc32c import crc32c
from ptm.tf.google_bert import parameters
from ptm.tf.writer import CheckpointWriter, write_checkpoint_file

BERT_BASE = {
    "vocab_size": 21128,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def write_bert_base(folder: Path) -> int:
    """A random BERT-base checkpoint in Google's layout; returns its data size in bytes."""
    with torch.device("meta"):  # transformers' own shapes, without the memory
        model = BertForPreTraining(BertConfig(**{**BERT_BASE, "hidden_act": "gelu_new"}))
    shapes = {name: tuple(t.shape) for name, t in model.named_parameters()}
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    with CheckpointWriter(folder / "bert_model.ckpt") as writer:
        for p in parameters(BERT_BASE["num_hidden_layers"]):
            shape = shapes[p.hf][::-1] if p.transposed else shapes[p.hf]
            writer.add(p.google, rng.standard_normal(shape, dtype=np.float32) * 0.02)
        writer.finish()
    write_checkpoint_file(folder, "bert_model.ckpt")
    (folder / "bert_config.json").write_text(json.dumps(BERT_BASE, indent=2))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + [str(n) for n in range(BERT_BASE["vocab_size"] - len(special))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return sum(p.stat().st_size for p in folder.glob("bert_model.ckpt.data-*"))


def crc_rate(megabytes: int) -> float:
    data = np.random.default_rng(0).integers(0, 256, megabytes << 20, dtype=np.uint8)
    crc32c(data[: 1 << 20])  # builds the tables
    start = time.perf_counter()
    crc32c(data)
    return megabytes / (time.perf_counter() - start)


def convert(direction: str, src: str, out: str) -> float:
    """Returns the peak RSS (MB) before converting, i.e. what the imports cost."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    overrides = (f"input={src}", f"output={out}", f"direction={direction}")
    convert_run(from_conf(ConvertConfig, "convert", overrides=overrides))
    return before


def run() -> list[BenchRow]:
    rows = []
    crc = measure(crc_rate, 256)
    rows.append(
        BenchRow(
            "crc32c (numpy lanes)", "MB/s", crc.value, None, crc.peak_rss_mb, None, "256 MB random"
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        tf_dir, hf_dir, back = Path(tmp) / "tf", Path(tmp) / "hf", Path(tmp) / "back"
        nbytes = write_bert_base(tf_dir)
        mb = nbytes / 2**20
        for direction, src, dst in (("tf2hf", tf_dir, hf_dir), ("hf2tf", hf_dir, back)):
            m = measure(convert, direction, str(src), str(dst))
            setup = (
                f"BERT-base shape, vocab 21128, MLM+NSP, {mb:.0f} MB float32; {m.seconds:.2f} s; "
                f"peak RSS after imports {m.value:.0f} MB"
            )
            rows.append(
                BenchRow(
                    f"convert {direction}", "MB/s", mb / m.seconds, None, m.peak_rss_mb, None, setup
                )
            )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
