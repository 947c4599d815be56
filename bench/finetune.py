"""Fine-tuning throughput: ptm's loop against ``transformers.Trainer`` on the same work.

Same model (BERT-mini, random weights: speed does not depend on them), same training examples
(the embedded review-sentiment task, truncated to the same ``max_seq_len``), same global batch,
same precision, fused AdamW on both sides (Trainer's default ``adamw_torch_fused``). The baseline
is ``BertForSequenceClassification`` + ``DataCollatorWithPadding`` + ``Trainer`` with its default
random batches, as the Hugging Face text-classification examples run it; ptm groups batches by
length. Rates are training examples per second over the steps after warm-up. On a machine with a
GPU a second row is measured there in bf16, with what ptm has for a GPU: batches padded to a few
fixed lengths (``runtime.padding=buckets``) that ``torch.compile`` (``gpu_compile``: its mode;
reduce-overhead captures CUDA graphs) compiles once each; the Trainer keeps its defaults (eager,
random batches), and the row's setup names ptm's eager rate beside it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import (
    BenchRow,
    embedded_corpus,
    logged_steps,
    measure,
    overall_rate,
    review_model,
    timed_trainer,
)


def _setup(tmp: Path, max_seq_len: int) -> tuple[Path, Path]:
    """The embedded corpus and a BERT-mini folder with a tokenizer over its review IDs."""
    data = embedded_corpus(tmp)
    return data, review_model(tmp / "model", data, max_seq_len)


def ours(
    tmp: str, data: str, model: str, steps: int, warmup: int, batch: int, max_seq_len: int,
    precision: str, device: str, group_by_length: bool = True, runtime: tuple[str, ...] = (),
) -> float:  # fmt: skip
    from finetune.config import build_config
    from finetune.train import run
    from ptm.config import compose

    sentiment = Path(data) / "sentiment"
    # What `make finetune` runs, with the benchmark's data, length, batch, device and budget.
    data_cfg = compose(
        "finetune",
        (
            f"model.path={model}", f"tasks.sentiment.train={sentiment / 'train.csv'}",
            f"tasks.sentiment.dev={sentiment / 'dev.csv'}", "tasks.sentiment.test=null",
            "tasks.sentiment.test_labels=null", f"tasks.sentiment.max_seq_len={max_seq_len}",
            "tasks.sentiment.truncation=head",  # as the baseline's tokenizer truncates
            f"train.max_steps={warmup + steps}", f"train.batch_size={batch}",
            f"train.micro_batch_size={batch}", "train.log_every=1",
            f"train.group_by_length={group_by_length}", "train.collapse.enabled=false",
            f"runtime.device={device}", f"runtime.precision={precision}", *runtime,
        ),
    )  # fmt: skip
    compiled = "compiled" if "runtime.compile=true" in runtime else "eager"
    data_cfg["run_dir"] = str(Path(tmp) / f"ours-{group_by_length}-{compiled}")
    cfg = build_config(data_cfg)
    run(cfg)
    rates = logged_steps(cfg.run_dir / "tb", warmup)["train/examples_per_s"]
    return overall_rate([batch] * len(rates), rates)


def baseline(
    tmp: str, data: str, model: str, steps: int, warmup: int, batch: int, max_seq_len: int,
    precision: str, device: str,
) -> float:  # fmt: skip
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
    )

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = (Path(data) / "sentiment" / "train.csv").read_text().splitlines()[1:]
    labels = [int(r.split("\t")[0]) for r in rows]
    encoded = tokenizer([r.split("\t")[1] for r in rows], truncation=True, max_length=max_seq_len)
    examples = [
        {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": label}
        for ids, types, mask, label in zip(
            encoded["input_ids"],
            encoded["token_type_ids"],
            encoded["attention_mask"],
            labels,
            strict=True,
        )
    ]
    from ptm.models.heads import quiet_transformers

    with quiet_transformers():  # the expected "new classifier weights" report
        classifier = BertForSequenceClassification.from_pretrained(model, num_labels=2)
    stamps = timed_trainer(
        classifier,
        examples,
        DataCollatorWithPadding(tokenizer),
        str(Path(tmp) / "baseline"),
        batch,
        warmup + steps,
        1e-4,
        precision,
        use_cpu=device == "cpu",
    )
    return steps * batch / (stamps[-1] - stamps[warmup - 1])


def gpu_runtime(compile_mode: str | None) -> tuple[str, ...]:
    """The runtime overrides of ptm's GPU row: compiled in ``compile_mode`` over bucketed
    lengths, or (None) eager with each batch padded to its longest, as before buckets."""
    if compile_mode is None:
        return ("runtime.compile=false", "runtime.padding=longest")
    return (
        "runtime.compile=true",
        f"runtime.compile_mode={compile_mode}",
        "runtime.padding=buckets",
    )


def run(
    steps: int,
    warmup_steps: int,
    batch_size: int,
    max_seq_len: int,
    precision: str,
    cpu: bool,
    gpu_compile: str | None = "reduce-overhead",
) -> list[BenchRow]:
    """``gpu_compile``: torch.compile's mode for the GPU row (None: eager); a compiled row wants
    a warm-up that covers every bucket's first batch (``warmup_steps`` 60 with 200 steps does)."""
    import torch

    from ptm.tasks.batching import length_buckets

    setups = [("cpu", precision)] if cpu else []
    if torch.cuda.is_available():
        setups.append(("cuda", "bf16"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data, model = _setup(Path(tmp), max_seq_len)
        for device, prec in setups:
            args = (tmp, str(data), str(model), steps, warmup_steps, batch_size, max_seq_len)
            base = measure(baseline, *args, prec, device)
            on_gpu = device == "cuda"
            if on_gpu:
                mine = measure(ours, *args, prec, device, True, gpu_runtime(gpu_compile))
                other = measure(ours, *args, prec, device, True, gpu_runtime(None))
                buckets = "/".join(map(str, length_buckets(max_seq_len)))
                ptm_side = (
                    f"ptm: length-grouped batches padded to buckets of {buckets}, "
                    f"torch.compile mode {gpu_compile}, [CLS] head, fused AdamW (eager, each "
                    f"batch padded to its longest: {other.value:.0f} examples/s)"
                    if gpu_compile
                    else "ptm: length-grouped batches padded to their longest, eager, [CLS] "
                    "head, fused AdamW"
                )
            else:
                mine = measure(ours, *args, prec, device)
                ungrouped = measure(ours, *args, prec, device, False)
                ptm_side = (
                    "ptm: length-grouped batches padded to their longest, [CLS] head, fused "
                    f"AdamW (without length grouping: {ungrouped.value:.0f} examples/s)"
                )
            where = "GPU" if on_gpu else "CPU"
            rows.append(
                BenchRow(
                    benchmark=f"finetune: BERT-mini review classification step ({where}, {prec})",
                    metric="examples/s",
                    ours=mine.value,
                    baseline=base.value,
                    ours_peak_mb=mine.peak_rss_mb,
                    baseline_peak_mb=base.peak_rss_mb,
                    setup=(
                        f"BERT-mini (random weights), embedded review sentiment (13,889 reviews, "
                        f"mean ~70 IDs) truncated to {max_seq_len}, global batch {batch_size}, "
                        f"{prec} on {where}, throughput (all examples over all the time) of "
                        f"{steps} steps after {warmup_steps} warm-up; {ptm_side}; baseline: "
                        "BertForSequenceClassification + DataCollatorWithPadding + "
                        "transformers.Trainer (random batches padded to their longest, eager, "
                        "fused AdamW)"
                    ),
                    device=device,
                    precision=prec,
                )
            )
    return rows
