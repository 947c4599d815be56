"""The GPU leg: the paths CPU runs never take — CUDA kernels, bf16 autocast, Inductor, pinned
prefetching — run for real on a tiny scale. `make test-gpu` (``pytest -m gpu``) runs them on a
machine with CUDA; CI has none, so they are skipped there. ``PTM_TEST_DEVICE=cpu make test-gpu``
rehearses the same tests on the CPU, which is how this file is checked without a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, pipeline

from tests.conftest import run_module
from tests.test_pretrain import check_exact_resume

DEVICE = os.environ.get("PTM_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device"),
]


def pretrain(tmp_path: Path, corpus: Path, name: str, *extra: str) -> Path:
    run_dir = tmp_path / name
    result = run_module(
        "pretrain", "+experiment=tiny", f"runtime.device={DEVICE}", f"data.corpus=[{corpus}]",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path}",
        f"hydra.run.dir={run_dir}", *extra, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.parametrize(
    "compiling",
    [
        ["runtime.compile=false"],
        ["runtime.compile=true"],
        ["runtime.compile=true", "runtime.compile_mode=reduce-overhead"],
    ],
    ids=["eager", "compiled", "cudagraphs"],
)
def test_tiny_pretraining_in_bf16_exports_a_model_transformers_loads(
    tmp_path: Path, corpus: Path, compiling: list[str]
) -> None:
    run_dir = pretrain(tmp_path, corpus, "run", "runtime.precision=bf16", *compiling)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 20 and 0 < metrics["eval/loss"] < 20
    model = AutoModelForMaskedLM.from_pretrained(run_dir / "model")
    assert next(model.parameters()).dtype == torch.float32  # saved in fp32 whatever autocast did
    fill = pipeline("fill-mask", model=str(run_dir / "model"), device=DEVICE)
    assert len(fill("100 101 [MASK] 103")) == 5


def test_fp32_resume_with_deterministic_kernels_is_exact(tmp_path: Path, corpus: Path) -> None:
    check_exact_resume(
        tmp_path, corpus,
        f"runtime.device={DEVICE}", "runtime.precision=fp32", "runtime.deterministic=true",
    )  # fmt: skip


def test_tiny_finetuning_on_the_device_exports_what_transformers_computes(
    tmp_path: Path, corpus: Path
) -> None:
    model_dir = pretrain(tmp_path, corpus, "pre") / "model"
    reviews = tmp_path / "reviews.csv"
    rows = [
        f"{i % 2}\t" + " ".join(str(100 + (i * 7 + j) % 40) for j in range(12)) for i in range(64)
    ]
    reviews.write_text("label\ttext\n" + "\n".join(rows) + "\n")
    run_dir = tmp_path / "ft"
    result = run_module(
        "finetune", "+experiment=finetune_tiny", "task=tianchi", f"runtime.device={DEVICE}",
        "runtime.precision=bf16", f"model.path={model_dir}", f"tasks.tianchi.train={reviews}",
        "tasks.tianchi.max_seq_len=64", f"paths.output_dir={tmp_path}", f"hydra.run.dir={run_dir}",
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["best"]["dev_score"] <= 1.0
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").to(DEVICE)
    classify = pipeline("text-classification", model=model, tokenizer=str(run_dir / "model"))
    assert classify(rows[0].split("\t")[1])[0]["label"] in {"0", "1"}


@pytest.mark.parametrize(
    "compiling",
    [
        ["runtime.compile=true", "runtime.padding=buckets"],
        ["runtime.compile=true", "runtime.compile_mode=reduce-overhead", "runtime.padding=buckets"],
    ],
    ids=["compiled", "cudagraphs"],
)
def test_compiled_finetuning_over_length_buckets_trains_and_exports(
    tmp_path: Path, corpus: Path, compiling: list[str]
) -> None:
    """What the fine-tuning benchmark's GPU row runs: a compiled forward (with CUDA graphs) over
    batches padded to a few fixed lengths, two micro-batches a step (CUDA graphs with
    accumulation), evaluation bucketed too; texts of 3-60 IDs fill both buckets (32 and 64)."""
    model_dir = pretrain(tmp_path, corpus, "pre") / "model"
    reviews = tmp_path / "reviews.csv"
    rows = [
        f"{i % 2}\t" + " ".join(str(100 + (i * 7 + j) % 40) for j in range(3 + (i * 11) % 58))
        for i in range(96)
    ]
    reviews.write_text("label\ttext\n" + "\n".join(rows) + "\n")
    run_dir = tmp_path / "ft"
    result = run_module(
        "finetune", "+experiment=finetune_tiny", "task=tianchi", f"runtime.device={DEVICE}",
        "runtime.precision=bf16", *compiling, "train.batch_size=16", "train.micro_batch_size=8",
        f"model.path={model_dir}", f"tasks.tianchi.train={reviews}", "tasks.tianchi.max_seq_len=64",
        f"paths.output_dir={tmp_path}", f"hydra.run.dir={run_dir}", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] > 0 and 0.0 <= metrics["best"]["dev_score"] <= 1.0
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert next(model.parameters()).dtype == torch.float32
