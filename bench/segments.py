"""Building MLM segments from a synthetic Tianchi-sized corpus: ptm against run_mlm's recipe.

The corpus imitates ``train_set.csv``'s text: 200,000 documents of ~900 IDs drawn Zipf-like from
~7,000 values. The baseline does what transformers' ``run_mlm.py`` does: batch-encode lines with
the fast tokenizer, then ``group_texts`` (concatenate everything, cut into fixed blocks). It is
timed on a slice of the corpus (its rate does not depend on corpus size; its memory does, and
grows with it, which the row notes). Both sides import their libraries at module level, so the
spawned process that times them has them loaded before the clock starts.
"""

from __future__ import annotations

import tempfile
from itertools import chain
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from bench.common import BenchRow, measure
from ptm.config import from_conf
from ptm.data.segment_builder import SegmentConfig, build_segments


def write_synthetic_corpus(
    path: Path, documents: int, mean_len: int, distinct: int, seed: int = 0
) -> int:
    """Write a plain corpus of Zipf-distributed IDs; returns the number of IDs written."""
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(distinct)  # frequent IDs are scattered, as in the real data
    words = np.array([str(i).encode() for i in range(distinct)], dtype=object)
    total = 0
    with path.open("wb") as f:
        for lo in range(0, documents, 10_000):
            n = min(10_000, documents - lo)
            lengths = np.clip(rng.normal(mean_len, mean_len / 2, n).astype(int), 10, 6 * mean_len)
            ids = ranks[(rng.zipf(1.1, int(lengths.sum())) - 1) % distinct]
            cuts = np.cumsum(lengths)[:-1]
            f.write(b"".join(b" ".join(words[doc]) + b"\n" for doc in np.split(ids, cuts)))
            total += int(lengths.sum())
    return total


def ours(corpus: str, out: str, max_seq_len: int) -> dict:
    meta = build_segments(
        [Path(corpus)],
        Path(out),
        from_conf(SegmentConfig, "pretrain", "data.segments", max_seq_len=max_seq_len),
    )
    return {"ids": meta["counts"]["ids"], "segments": meta["counts"]["segments"]["train"]}


def baseline(corpus: str, tokenizer_dir: str, documents: int, max_seq_len: int) -> dict:
    """run_mlm.py's path: tokenizer(batch of lines) -> group_texts into blocks."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with open(corpus, encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(documents)]
    encoded: dict[str, list] = {"input_ids": [], "attention_mask": [], "special_tokens_mask": []}
    for lo in range(0, len(lines), 1000):  # datasets.map(batched=True) uses batches of 1000
        batch = tokenizer(lines[lo : lo + 1000], return_special_tokens_mask=True)
        for key in encoded:
            encoded[key] += batch[key]
    concatenated = {k: list(chain(*v)) for k, v in encoded.items()}
    total = (len(concatenated["input_ids"]) // max_seq_len) * max_seq_len
    blocks = [concatenated["input_ids"][i : i + max_seq_len] for i in range(0, total, max_seq_len)]
    return {
        "ids": sum(len(x) for x in encoded["input_ids"]) - 2 * len(lines),
        "segments": len(blocks),
    }


def run(
    documents: int, baseline_documents: int, mean_len: int, distinct: int, max_seq_len: int
) -> list[BenchRow]:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "train_text.txt"
        write_synthetic_corpus(corpus, documents, mean_len, distinct)
        mine = measure(ours, str(corpus), str(Path(tmp) / "segments"), max_seq_len)
        base = measure(
            baseline,
            str(corpus),
            str(Path(tmp) / "segments" / "tokenizer"),
            baseline_documents,
            max_seq_len,
        )
    ours_rate = mine.value["ids"] / mine.seconds
    base_rate = base.value["ids"] / base.seconds
    return [
        BenchRow(
            benchmark="segments: build MLM data",
            metric="IDs/s",
            ours=ours_rate,
            baseline=base_rate,
            ours_peak_mb=mine.peak_rss_mb,
            baseline_peak_mb=base.peak_rss_mb,
            setup=(
                f"{documents:,} docs x ~{mean_len} IDs ({mine.value['ids'] / 1e6:.0f}M IDs, {distinct:,} distinct, "
                f"Zipf), max_seq_len {max_seq_len}; ours: one parse of 1 MB chunks on a thread per core (vocabulary pass; parsed chunks kept for the build), "
                "chunks cut on the same threads, packing on one; baseline: run_mlm.py tokenize (the Rust tokenizer also uses every core) + group_texts "
                f"on the first {baseline_documents:,} docs (its memory grows with the corpus); "
                "both timed after their imports"
            ),
        )
    ]
