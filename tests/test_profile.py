"""`bench.gpu.profile`: where a training step's time goes, as a table whose categories add up to
the profiled window. On a CPU for real (a tiny pretraining run); the GPU timeline — kernels
matched to the host operators that launched them, idle time between kernels — from a small
trace of the shape ``torch.profiler`` exports on a GPU."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bench.gpu.profile import CATEGORIES, profile_stage, render, summarize
from tests.conftest import tiny_pretrain_overrides


def test_a_tiny_pretraining_profile_adds_up_and_is_recorded(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "profile"
    record = profile_stage("pretrain", tiny_pretrain_overrides(tmp_path, corpus), out, 3, 1)
    assert json.loads((out / "profile.json").read_text()) == record
    assert record["kind"] == "profile" and record["config"]["steps"] == 3
    metrics = record["metrics"]
    assert metrics["timeline"] == "cpu" and metrics["steps"] == 3
    seconds = metrics["seconds"]
    assert set(seconds) == set(CATEGORIES) and min(seconds.values()) >= 0
    assert sum(seconds.values()) == pytest.approx(metrics["total_seconds"], rel=1e-9)
    assert sum(metrics["share"].values()) == pytest.approx(1.0)
    # ptm trains attention on CPU as matrix products: the range around it tells them apart
    for category in ("matmul", "attention", "head", "optimizer", "other"):
        assert seconds[category] > 0, category
    assert record["extra"]["top"] and record["machine"]["device"] == "cpu"
    assert "| **total** (CPU timeline) |" in (out / "profile.md").read_text()
    assert json.loads(gzip.decompress((out / "trace.json.gz").read_bytes()))["traceEvents"]


def _x(cat: str, name: str, ts: float, dur: float, tid: int = 1, **args) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": tid, "args": args}


def test_on_a_gpu_kernels_count_by_their_launching_operator_and_gaps_are_idle() -> None:
    """Host thread 1 runs one step (0-100 us); the backward thread 2 launches one kernel; the
    GPU runs six kernels of the window between 30 and 95 us (one overlapping another, one of no
    known launch, as in a CUDA graph) and one launched after the window, left out."""
    vocab = 65
    events = [
        _x("user_annotation", "ProfilerStep#3", 0, 100),
        _x("cpu_op", "aten::addmm", 5, 5, **{"Input Dims": [[32], [96, 32], [32, 32]]}),
        _x("cuda_runtime", "cudaLaunchKernel", 6, 1, correlation=1),
        _x("cpu_op", "aten::mm", 10, 5, **{"Input Dims": [[96, 32], [32, vocab]]}),  # MLM head
        _x("cuda_runtime", "cudaLaunchKernel", 11, 1, correlation=2),
        _x("cpu_op", "aten::_scaled_dot_product_flash_attention", 20, 5, **{"Sequence number": 7}),
        _x("cuda_runtime", "cudaLaunchKernel", 21, 1, correlation=3),
        _x("cpu_op", "SomeBackward0", 40, 5, tid=2, **{"Sequence number": 7}),  # its forward: SDPA
        _x("cuda_runtime", "cudaLaunchKernel", 41, 1, tid=2, correlation=4),
        _x("cpu_op", "aten::item", 50, 5),
        _x("cpu_op", "aten::_local_scalar_dense", 51, 3),
        _x("cuda_runtime", "cudaStreamSynchronize", 52, 1),  # .item(): the host waits
        _x("user_annotation", "ptm.optimizer_step", 60, 30),
        _x("cuda_runtime", "cudaLaunchKernel", 61, 1, correlation=5),
        _x("cuda_runtime", "cudaLaunchKernel", 150, 1, correlation=6),
        _x("kernel", "sm90_xmma_gemm_bf16", 30, 10, tid=7, correlation=1),
        _x("kernel", "nvjet_hsh_192x128", 35, 10, tid=8, correlation=2),  # overlaps: 5 us count
        _x("kernel", "triton_red_fused_0", 50, 10, tid=7, correlation=4),  # attention backward
        _x("kernel", "pytorch_flash::flash_fwd_kernel", 60, 5, tid=7, correlation=3),
        _x("kernel", "multi_tensor_apply_kernel", 80, 15, tid=7, correlation=5),
        _x("kernel", "void cutlass_gemm_in_a_graph", 66, 4, tid=7),  # no known launch: by name
        _x("kernel", "sm90_xmma_gemm_bf16", 160, 10, tid=7, correlation=6),  # after the window
    ]
    table = summarize(events, {vocab})
    assert table.timeline == "gpu" and table.steps == 1
    us = {c: round(s * 1e6, 6) for c, s in table.seconds.items()}
    assert us == {
        "matmul": 14, "head": 5, "attention": 15, "optimizer": 15, "other": 0, "idle": 16,
    }  # fmt: skip
    assert table.total == pytest.approx(65e-6) and table.host_seconds == pytest.approx(100e-6)
    assert table.syncs == [{"where": "aten::item > aten::_local_scalar_dense", "per_step": 1.0}]
    assert table.waits_per_step == 1.0
    text = render(
        {
            "timeline": table.timeline,
            "steps": table.steps,
            "total_seconds": table.total,
            "host_seconds": table.host_seconds,
            "seconds": table.seconds,
            "share": {c: table.share(c) for c in CATEGORIES},
        }
    )
    assert "| idle: host gaps between kernels | 0.02 | 24.6 % |" in text


def test_a_trace_without_a_profiled_step_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ProfilerStep"):
        summarize([_x("cpu_op", "aten::mm", 0, 1)], set())


def test_the_payoff_time_is_when_the_held_out_loss_first_reached_the_target(
    tmp_path: Path,
) -> None:
    """`bench.gpu.payoff` on a run folder whose log has the held-out loss at 3 evaluations."""
    import os

    from torch.utils.tensorboard import SummaryWriter

    from bench.gpu.payoff import main, time_to_target

    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    summary = {"device": "cpu", "precision": "fp32"}
    (run / "run.json").write_text(json.dumps({"summary": summary, "config": {"seed": 1}}))
    os.utime(run / "run.json", (1000.0, 1000.0))  # training started at t = 1000 s
    writer = SummaryWriter(str(run / "tb"))
    for step, loss, t in ((500, 2.9, 1030.0), (1000, 2.39, 1060.0), (1500, 2.35, 1090.0)):
        writer.add_scalar("eval/loss", loss, step, walltime=t)
    writer.close()
    got = time_to_target(run, 2.40, started=990.0)
    assert got["reached"] and got["step"] == 1000
    assert got["seconds_from_training_start"] == pytest.approx(60.0)
    assert got["seconds_from_command_start"] == pytest.approx(70.0)
    assert got["final_step"] == 1500 and got["final_eval_loss"] == pytest.approx(2.35)
    assert not time_to_target(run, 2.0)["reached"]
    main([str(run), "--target", "2.40", "--out", str(tmp_path / "payoff.json")])
    record = json.loads((tmp_path / "payoff.json").read_text())
    assert record["kind"] == "payoff" and record["metrics"]["step"] == 1000
