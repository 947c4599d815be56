"""Prediction throughput: ``python -m finetune.predict`` against ``transformers.pipeline`` on the
same exported folder and the same file.

The folder is what ``make finetune`` exports — BERT-mini (random weights: speed does not depend
on them) fine-tuned for one step on the embedded review-sentiment task, a
``BertForSequenceClassification`` with its tokenizer — so ``pipeline("text-classification")``
loads it with no ptm code. The file is the embedded sentiment test set (``copies`` times over, so
the timed part lasts long enough to measure), truncated to the same ``max_seq_len`` at the head on
both sides. Each side's clock runs from reading the file to the last answer written — the
labels and every class's probability (``top_k=None`` for the pipeline) — and leaves out loading
the model. ptm reads the ID text with its numpy parser, sorts each chunk's rows by length and pads
every batch to its longest; the pipeline tokenizes with the tokenizer's Rust code and pads each
batch of file order to its longest. On a machine with a GPU a second row is measured there, in
bf16 on both sides.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import BenchRow, embedded_corpus, measure, review_model


def _fine_tuned(tmp: Path, data: Path, max_seq_len: int) -> Path:
    """A BERT-mini classifier folder as `make finetune` exports it (one training step)."""
    from finetune.config import build_config
    from finetune.train import run
    from ptm.config import compose

    sentiment = data / "sentiment"
    train = sentiment / "train.csv"
    base = review_model(tmp / "base", data, max_seq_len)
    data_cfg = compose(
        "finetune",
        (
            f"model.path={base}", f"tasks.sentiment.train={train}",
            f"tasks.sentiment.dev={sentiment / 'dev.csv'}", "tasks.sentiment.test=null",
            "tasks.sentiment.test_labels=null", f"tasks.sentiment.max_seq_len={max_seq_len}",
            "tasks.sentiment.truncation=head",  # as the pipeline's tokenizer truncates
            "train.max_steps=1", "train.limit_examples=256", "train.collapse.enabled=false",
            "runtime.device=cpu", "runtime.precision=fp32",
        ),
    )  # fmt: skip
    data_cfg["run_dir"] = str(tmp / "run")
    run(build_config(data_cfg))
    return tmp / "run" / "model"


def _test_file(tmp: Path, data: Path, copies: int) -> Path:
    """The sentiment test file (a ``text`` column), ``copies`` times over."""
    header, *rows = (data / "sentiment" / "test.csv").read_text().splitlines(keepends=True)
    path = tmp / "test.csv"
    path.write_text(header + "".join(rows * copies))
    return path


def ours(
    tmp: str, model: str, test: str, batch: int, chunk_rows: int, precision: str, device: str
) -> float:
    from finetune.predict import PredictConfig, run
    from ptm.config import compose, to_dataclass

    data = compose(
        "predict",
        (
            f"run={model}", f"inputs=[{test}]", f"output={Path(tmp) / f'ours-{device}'}",
            f"batch_size={batch}", f"chunk_rows={chunk_rows}", f"runtime.device={device}",
            f"runtime.precision={precision}",
        ),
    )  # fmt: skip
    data["run_dir"] = str(Path(tmp) / f"ours-{device}-log")
    return run(to_dataclass(PredictConfig, data))["rows_per_s"]


def baseline(
    tmp: str, model: str, test: str, batch: int, max_seq_len: int, precision: str, device: str
) -> float:
    import csv
    import time

    import torch
    from transformers import pipeline

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    classify = pipeline(
        "text-classification", model=model, device=0 if device == "cuda" else -1, dtype=dtype
    )
    start = time.perf_counter()
    texts = Path(test).read_text().splitlines()[1:]
    answers = classify(texts, batch_size=batch, truncation=True, max_length=max_seq_len, top_k=None)
    labels = list(classify.model.config.id2label.values())
    with (Path(tmp) / f"baseline-{device}.csv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["label", *labels])
        for scores in answers:
            by_label = {s["label"]: s["score"] for s in scores}
            writer.writerow([scores[0]["label"], *(f"{by_label[x]:.6f}" for x in labels)])
    return len(texts) / (time.perf_counter() - start)


def run(
    batch_size: int, max_seq_len: int, chunk_rows: int, copies: int, precision: str, cpu: bool
) -> list[BenchRow]:
    """One row per device (the CPU at ``precision``; a GPU, if there is one, in bf16)."""
    import torch

    setups = [("cpu", precision)] if cpu else []
    if torch.cuda.is_available():
        setups.append(("cuda", "bf16"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = embedded_corpus(Path(tmp))
        model = _fine_tuned(Path(tmp), data, max_seq_len)
        test = _test_file(Path(tmp), data, copies)
        n_rows = len(test.read_text().splitlines()) - 1
        for device, prec in setups:
            base = measure(
                baseline, tmp, str(model), str(test), batch_size, max_seq_len, prec, device
            )
            mine = measure(ours, tmp, str(model), str(test), batch_size, chunk_rows, prec, device)
            where = "GPU" if device == "cuda" else "CPU"
            rows.append(
                BenchRow(
                    benchmark=f"predict: BERT-mini review classification of a file ({where}, {prec})",
                    metric="rows/s",
                    ours=mine.value,
                    baseline=base.value,
                    ours_peak_mb=mine.peak_rss_mb,
                    baseline_peak_mb=base.peak_rss_mb,
                    setup=(
                        f"BERT-mini (random weights) exported as BertForSequenceClassification, "
                        f"the embedded review-sentiment test file x{copies} ({n_rows:,} rows, "
                        f"mean ~70 IDs) truncated to {max_seq_len} at the head, batch "
                        f"{batch_size}, {prec} on {where}, from reading the file to the labels "
                        f"and probabilities written (model loading left out); ptm: python -m "
                        f"finetune.predict, chunks of {chunk_rows} rows sorted by length, each "
                        f"batch padded to its longest; baseline: transformers.pipeline("
                        f"'text-classification', top_k=None) on the same folder, batches in file "
                        f"order padded to their longest"
                    ),
                    device=device,
                    precision=prec,
                )
            )
    return rows
