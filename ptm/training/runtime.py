"""Settings that change speed, not results: device precision, TF32, ``torch.compile``, and how
fine-tuning pads its batches."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ptm.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    device: str  # auto | cpu | cuda
    precision: str  # auto | fp32 | bf16 | fp16
    compile: bool
    compile_mode: str  # torch.compile's mode, one of COMPILE_MODES (reduce-overhead: CUDA graphs)
    tf32: bool
    peak_tflops: float | None  # one device's peak at the run's precision, for MFU
    deterministic: bool  # deterministic kernels (exact GPU resume; slower)
    padding: str  # fine-tuning batches: one of PADDINGS (`pads_to_buckets`)


def cpu_has_amx_bf16() -> bool:
    """bf16 autocast pays off on CPUs with AMX tiles (~1.5x on BERT-mini); elsewhere it does not."""
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and "amx_bf16" in cpuinfo.read_text()


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_amx_bf16() else "fp32"
    if requested not in {"fp32", "bf16", "fp16"}:
        raise InputError(
            None, f"runtime.precision={requested!r} is unknown", "use auto, fp32, bf16 or fp16"
        )
    if requested == "fp16" and device.type != "cuda":
        raise InputError(None, "runtime.precision=fp16 needs a GPU", "use bf16 or fp32 on CPU")
    return requested


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# How fine-tuning and evaluation pad a batch: to its longest example (rounded up to 8 on GPUs), or
# to a few fixed lengths (`ptm.tasks.batching.length_buckets`); auto picks buckets on GPUs.
PADDINGS = ("auto", "longest", "buckets")


def pads_to_buckets(padding: str, device: torch.device) -> bool:
    """Whether batches on ``device`` are padded to fixed lengths (``runtime.padding``).

    On a GPU a new padded length is a new graph for ``torch.compile`` and a new CUDA-graph
    recording, while a little more padding costs nothing at BERT-mini's launch-bound sizes; on a
    CPU padding costs compute in proportion and nothing is recorded, so ``auto`` pads to the
    longest there — which also keeps CPU results bit-identical to runs before this setting.
    """
    if padding not in PADDINGS:
        raise InputError(
            None, f"runtime.padding={padding!r} is unknown", f"use one of {', '.join(PADDINGS)}"
        )
    return padding == "buckets" or (padding == "auto" and device.type == "cuda")


def prepare(cfg: RuntimeConfig, device: torch.device) -> str:
    """Set the backends up for ``device`` and return the precision the run will use."""
    if cfg.compile_mode not in COMPILE_MODES:
        raise InputError(
            None,
            f"runtime.compile_mode={cfg.compile_mode!r} is unknown",
            f"use one of {', '.join(COMPILE_MODES)}",
        )
    pads_to_buckets(cfg.padding, device)  # a misspelt setting stops the run before any work
    setup_backends(cfg, device)
    return resolve_precision(cfg.precision, device)


def setup_backends(cfg: RuntimeConfig, device: torch.device) -> None:
    if cfg.deterministic:
        # cuBLAS reads this when its first handle is made; set before any matmul on the GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda" and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        keep_freed_memory()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Have glibc keep large freed blocks for the next allocation instead of unmapping them.

    CPU tensors come from malloc, and glibc serves large blocks with a fresh ``mmap`` and unmaps
    them on free, so every big activation of every training step is page-faulted and zeroed
    anew: a multiply of a 33 MB tensor took 15.6 ms that way and 4.3 ms from reused memory, and a
    BERT-mini step at 32 x 256 got 6% faster. Raising the mmap and trim thresholds keeps those
    blocks in the heap, as tcmalloc and jemalloc (Intel's advice for PyTorch on CPU) do. The
    price: the process holds on to its peak memory between steps. Returns whether it applied
    (glibc only; elsewhere the allocator is left as it is).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, for one)
        return False
    if not hasattr(libc, "mallopt"):
        return False
    applied = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    return bool(applied and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; fp32 runs without autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling; for bf16/fp32 the scaler is disabled and passes through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def maybe_compile(
    module: nn.Module, cfg: RuntimeConfig, device: torch.device, dynamic: bool | None = None
) -> nn.Module:
    """``torch.compile`` (``cfg.compile``, in ``cfg.compile_mode``) where it can work; otherwise
    say why and run eagerly.

    Compilation needs a C compiler for CPU kernels (Inductor) and a supported platform; the
    checks here catch the usual cases before a confusing failure at the first step.
    ``dynamic=False`` compiles one static-shape graph per input shape (what Inductor's tuned
    kernels and CUDA graphs want), for callers that keep their shapes to a handful; the
    recompile limit is raised so that handful never falls back to eager. ``None`` is dynamo's
    default: static first, symbolic after a shape changes (fine-tuning's many padded lengths).
    """
    if not cfg.compile:
        return module
    reasons = []
    if device.type == "cpu" and not (
        shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    ):
        reasons.append("no C compiler on PATH (Inductor builds CPU kernels with one)")
    if not hasattr(torch, "compile"):
        reasons.append("this torch has no torch.compile")
    if reasons:
        log.warning("runtime.compile=true ignored: %s; running eagerly", "; ".join(reasons))
        return module
    if dynamic is False:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    mode = None if cfg.compile_mode == "default" else cfg.compile_mode
    return torch.compile(module, dynamic=dynamic, mode=mode)
