"""The analytic FLOP count behind MFU, checked against PyTorch's own FLOP counter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig

from finetune.train import run as finetune
from pretrain.train import run
from ptm.models.mlm import MaskedLMObjective
from ptm.training.mfu import mlm_training_flops, peak_flops, peak_of_gpu
from tests.conftest import pretrain_config
from tests.finetune_helpers import tiny_model_dir
from tests.test_finetune import cls_config
from tests.test_pretrain import scalars, tiny_mlm_batch

# Eight masked positions in every row: the masked-only last layer pads each row's count up to a
# multiple of 8, so with eight it computes exactly the rows the formula counts.
EIGHT_PER_ROW = {row: [1, 2, 4, 6, 8, 10, 12, 14] for row in range(4)}


def counted_flops(step) -> int:
    """FLOPs of a forward + backward as PyTorch counts them, op by op."""
    with FlopCounterMode(display=False) as counter:
        step().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("arch", ["bert", "albert"])
def test_formula_counts_what_ptms_objective_computes(arch: str) -> None:
    model, ids, attention, labels = tiny_mlm_batch(arch, 3, EIGHT_PER_ROW)
    model.train()  # training on CPU: the matrix-product attention, whose matmuls are counted
    objective = MaskedLMObjective(model)
    rows, length = ids.shape
    last_layer_rows = 32 if objective.masked_only else None
    assert objective.masked_only == (arch == "bert")
    expected = mlm_training_flops(model.config, rows, length, 32, last_layer_rows)
    assert counted_flops(lambda: objective(ids, attention, labels)[0]) == expected


def test_formula_counts_a_full_head_on_every_position() -> None:
    model, ids, attention, labels = tiny_mlm_batch("bert", 2, EIGHT_PER_ROW)
    model.train()
    rows, length = ids.shape
    expected = mlm_training_flops(model.config, rows, length, head_rows=rows * length)
    counted = counted_flops(
        lambda: model(input_ids=ids, attention_mask=attention, labels=labels).loss
    )
    assert counted == expected


@pytest.mark.parametrize(
    ("name", "precision", "tf32", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", True, 989.4),
        ("NVIDIA H100 PCIe", "bf16", True, 756.0),
        ("NVIDIA H200", "fp32", True, 494.7),
        ("NVIDIA GH200 480GB", "fp16", True, 989.4),
        ("NVIDIA A100-SXM4-80GB", "fp32", False, 19.5),
        ("NVIDIA L4", "bf16", True, 121.0),
        ("NVIDIA L40", "bf16", True, None),  # not in the table: no MFU rather than a wrong one
        ("NVIDIA GeForce RTX 4090", "bf16", True, None),
    ],
)
def test_peak_lookup_by_device_name(name: str, precision: str, tf32: bool, tflops) -> None:
    peak = peak_of_gpu(name, precision, tf32)
    assert peak == (None if tflops is None else pytest.approx(tflops * 1e12))


def test_configured_peak_wins_and_cpus_have_none_by_default() -> None:
    cpu = torch.device("cpu")
    assert peak_flops(cpu, "fp32", True, None) is None
    assert peak_flops(cpu, "fp32", True, 1.5) == 1.5e12


def test_training_logs_mfu_when_the_peak_is_known(tmp_path: Path, corpus: Path) -> None:
    """With ``runtime.peak_tflops`` set, every logged step has an MFU whose implied FLOPs per
    token match the formula for the run's model at its ~30% masking (units, processes and
    windows wired right), and the run's metrics carry the whole run's MFU."""
    peak_tflops = 1.0
    run_dir = tmp_path / "run"
    metrics = run(
        pretrain_config(
            tmp_path, corpus, run_dir, "train.log_every=1", f"runtime.peak_tflops={peak_tflops}"
        )
    )
    mfu, rate = scalars(run_dir, "train/mfu"), scalars(run_dir, "train/tokens_per_s")
    packing = scalars(run_dir, "train/packing_efficiency")
    assert set(mfu) == set(range(1, 21)) and 0 < metrics["mfu"] < 1
    config = AutoConfig.from_pretrained(run_dir / "model")
    rows, length = 8, 64  # the tiny experiment's global batch and segment length
    for step, value in mfu.items():
        per_token = value * peak_tflops * 1e12 / rate[step]
        tokens = packing[step] * rows * length
        low, high = (
            mlm_training_flops(config, rows, length, int(f * tokens), int(f * tokens)) / tokens
            for f in (0.1, 0.5)  # whole words and the last layer's rows padded to 8 add some
        )
        assert low < per_token < high


def test_no_mfu_without_a_peak_on_cpu(tmp_path: Path, corpus: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = run(pretrain_config(tmp_path, corpus, run_dir, "train.max_steps=5"))
    assert "mfu" not in metrics
    assert "train/mfu" not in EventAccumulator(str(run_dir / "tb")).Reload().Tags()["scalars"]


def test_finetuning_logs_mfu_when_the_peak_is_known(tmp_path: Path) -> None:
    cfg, _ = cls_config(
        tmp_path, tiny_model_dir(tmp_path / "base"), "train.log_every=1", "runtime.peak_tflops=1"
    )
    finetune(cfg)
    mfu = scalars(tmp_path / "run", "train/mfu")
    assert len(mfu) == len(scalars(tmp_path / "run", "train/loss")) > 0
    assert all(0 < value < 1 for value in mfu.values())
