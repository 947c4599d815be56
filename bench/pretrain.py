"""Pretraining throughput: ptm's loop against ``transformers.Trainer`` on the same work.

Same model (BERT-mini), same segments of the embedded corpus, same global batch, same precision,
same optimizer family; the baseline is ``BertForMaskedLM`` + ``DataCollatorForLanguageModeling``
+ ``Trainer`` as the Hugging Face examples run it. Rates are tokens (non-padding positions) per
second over the steps after warm-up. On a machine with a GPU a second row is measured there, in
bf16 and with a GPU-sized batch, with each side's model FLOPs utilisation (`ptm.training.mfu`): the
matmul work each side asks for, so ptm's skipped work does not count for it. With
``gpu_compile`` (``+pretrain.gpu_compile=default``: torch.compile's mode) the GPU row is ptm
compiled, as ``+experiment=bert_mini_full`` runs, under its own name: the MFU row (compiling takes
the first steps, so give it a longer warm-up: ``pretrain.warmup_steps=30``).
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
    timed_trainer,
)


def _segments(tmp: Path, max_seq_len: int) -> Path:
    from ptm.config import from_conf
    from ptm.data.segment_builder import SegmentConfig, prepare_segments

    corpus = embedded_corpus(tmp) / "pretrain.txt"
    segments = from_conf(SegmentConfig, "pretrain", "data.segments", max_seq_len=max_seq_len)
    return prepare_segments([corpus], None, tmp / "segments", segments)


def ours(
    tmp: str, folder: str, steps: int, warmup: int, batch: int, precision: str, device: str,
    max_seq_len: int, runtime: tuple[str, ...] = (),
) -> tuple[float, float | None]:  # fmt: skip
    """Tokens/s and MFU (None where the device's peak is unknown) after warm-up."""
    from pretrain.config import PretrainConfig
    from pretrain.train import run
    from ptm.config import from_conf

    total = warmup + steps
    segments = Path(folder)
    corpus = embedded_corpus(Path(tmp)) / "pretrain.txt"
    # What `make pretrain` runs, with the benchmark's batch, length, device and budget, and the
    # baseline's BERT dropout and 15% masking (the default's no dropout and 30% would make the
    # comparison one of recipes, not of implementations).
    cfg = from_conf(
        PretrainConfig,
        "pretrain",
        overrides=(
            "model.hidden_dropout_prob=0.1", "model.attention_probs_dropout_prob=0.1",
            "data.masking.rate=0.15",
            f"data.corpus=[{corpus}]", f"data.cache_dir={segments.parent}",
            f"data.segments.max_seq_len={max_seq_len}", f"train.batch_size={batch}",
            f"train.micro_batch_size={batch}", f"train.max_steps={total}", "train.max_minutes=null",
            "train.eval_every=1000000000", f"train.eval_max_segments={batch}", "train.log_every=1",
            "train.save_every=1000000000", f"runtime.device={device}", f"runtime.precision={precision}",
            *runtime,
        ),
        run_dir=str(Path(tmp) / f"ours-{device}"),
    )  # fmt: skip
    run(cfg)
    steps = logged_steps(cfg.run_dir / "tb", warmup)
    rates = steps["train/tokens_per_s"]
    tokens = steps["train/packing_efficiency"]  # proportional to each step's tokens: enough here
    mfu = None
    if "train/mfu" in steps:  # time-weighted, as the rate is
        seconds = [t / r for t, r in zip(tokens, rates, strict=True)]
        mfu = sum(m * s for m, s in zip(steps["train/mfu"], seconds, strict=True)) / sum(seconds)
    return overall_rate(tokens, rates), mfu


def baseline(
    tmp: str, folder: str, steps: int, warmup: int, batch: int, precision: str, device: str,
    max_seq_len: int,
) -> tuple[float, float | None]:  # fmt: skip
    """Tokens/s and MFU (None where the device's peak is unknown) after warm-up."""
    import numpy as np
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
    )

    from ptm.data.segment_store import SegmentData, load_segment_tokenizer
    from ptm.training.mfu import mlm_training_flops, peak_flops

    tokenizer = load_segment_tokenizer(Path(folder))
    data = SegmentData(Path(folder), "train")
    examples = [
        {"input_ids": data.tokens[data.offsets[i] : data.offsets[i + 1]].astype(np.int64).tolist()}
        for i in range(min(len(data), (warmup + steps + 1) * batch))
    ]
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=256,
    )
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    tokens: list[int] = []
    flops: list[int] = []

    def collate(features):
        out = collator(features)
        tokens.append(int(out["attention_mask"].sum()))
        rows, length = out["input_ids"].shape
        flops.append(mlm_training_flops(config, rows, length, head_rows=rows * length))
        return out

    stamps = timed_trainer(
        model,
        examples,
        collate,
        str(Path(tmp) / "baseline"),
        batch,
        warmup + steps,
        1e-3,
        precision,
        use_cpu=device == "cpu",
    )
    # Batch k+1 is collated before step k ends (prefetch), so pair step times with their own batch.
    timed = stamps[warmup:]
    seconds = timed[-1] - stamps[warmup - 1]
    mine = slice(warmup + 1, warmup + 1 + len(timed))
    peak = peak_flops(torch.device(device), precision, False, None)  # Trainer leaves TF32 off
    return sum(tokens[mine]) / seconds, sum(flops[mine]) / seconds / peak if peak else None


def run(
    steps: int,
    warmup_steps: int,
    batch_size: int,
    max_seq_len: int,
    precision: str,
    gpu_batch_size: int,
    cpu: bool,
    gpu_compile: str | None = None,
) -> list[BenchRow]:
    """``gpu_compile``: torch.compile's mode for the GPU row (None: eager, as before)."""
    import torch

    setups = [("cpu", precision, batch_size)] if cpu else []
    if torch.cuda.is_available():
        setups.append(("cuda", "bf16", gpu_batch_size))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = _segments(Path(tmp), max_seq_len)
        for device, prec, batch in setups:
            args = (tmp, str(folder), steps, warmup_steps, batch, prec, device, max_seq_len)
            compiled = device == "cuda" and gpu_compile is not None
            runtime = (
                ("runtime.compile=true", f"runtime.compile_mode={gpu_compile}") if compiled else ()
            )
            base = measure(baseline, *args)
            mine = measure(ours, *args, runtime)
            (base_rate, base_mfu), (our_rate, our_mfu) = base.value, mine.value
            where = "GPU" if device == "cuda" else "CPU"
            mfu = (
                f"; model FLOPs utilisation: ptm {our_mfu:.1%}, baseline {base_mfu:.1%}"
                if our_mfu is not None and base_mfu is not None
                else ""
            )
            rows.append(
                BenchRow(
                    benchmark=f"pretrain: BERT-mini MLM step ({where}, {prec}"
                    + (", compiled" if compiled else "")
                    + ")",
                    metric="tokens/s",
                    ours=our_rate,
                    baseline=base_rate,
                    ours_peak_mb=mine.peak_rss_mb,
                    baseline_peak_mb=base.peak_rss_mb,
                    setup=(
                        f"BERT-mini, embedded corpus segments of {max_seq_len}, global batch "
                        f"{batch}, {prec} on {where}, throughput (all tokens over all the time) of {steps} steps after "
                        f"{warmup_steps} warm-up; ours: MLM head and BERT's last encoder layer "
                        "on the masked positions only, fused AdamW"
                        + (f", torch.compile mode {gpu_compile}" if compiled else "")
                        + "; baseline: BertForMaskedLM + "
                        "DataCollatorForLanguageModeling + transformers.Trainer (full-vocabulary "
                        f"head on every position){mfu}"
                    ),
                    device=device,
                    precision=prec,
                )
            )
    return rows
