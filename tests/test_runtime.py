"""The runtime (`ptm.training.runtime`): `runtime.compile_mode` reaches torch.compile as its mode,
and a misspelt one stops the run in one line before any work (the GPU check measures what each
mode is worth: docs/GPU.md); freed memory is kept for reuse on CPUs."""

from __future__ import annotations

import dataclasses
import platform
import resource

import pytest
import torch
from torch import nn

from pretrain.config import PretrainConfig
from ptm.config import from_conf
from ptm.errors import InputError
from ptm.training import runtime


def _runtime(**changes) -> runtime.RuntimeConfig:
    cfg = from_conf(PretrainConfig, "pretrain", overrides=("runtime.device=cpu",)).runtime
    return dataclasses.replace(cfg, **changes)


@pytest.mark.parametrize(
    "mode, passed", [("default", None), ("reduce-overhead", "reduce-overhead")]
)
def test_compile_mode_is_torch_compiles_mode(monkeypatch, mode: str, passed: str | None) -> None:
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda module, **kw: seen.update(kw) or module)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")  # a C compiler
    module = nn.Linear(2, 2)
    with torch._dynamo.config.patch(recompile_limit=torch._dynamo.config.recompile_limit):
        out = runtime.maybe_compile(
            module, _runtime(compile=True, compile_mode=mode), torch.device("cpu"), dynamic=False
        )
    assert out is module and seen == {"dynamic": False, "mode": passed}


def test_compile_off_leaves_the_module_alone(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda module, **kw: pytest.fail("compiled"))
    module = nn.Linear(2, 2)
    assert (
        runtime.maybe_compile(
            module, _runtime(compile=False, compile_mode="max-autotune"), torch.device("cpu")
        )
        is module
    )


def test_an_unknown_compile_mode_is_one_line_naming_the_choices() -> None:
    with pytest.raises(
        InputError, match=r"runtime.compile_mode='reduce_overhead' is unknown.*reduce-overhead"
    ):
        runtime.prepare(_runtime(compile_mode="reduce_overhead"), torch.device("cpu"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_new_page_faults() -> None:
    """A training step allocates the same large tensors over and over: once the heap has grown
    to hold them, a new one must not page-fault (a fresh mapping faults on each of its 8,192
    pages of 4 KB, every time)."""
    assert runtime.keep_freed_memory()

    def faults_of_a_32_mb_tensor() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(8 << 20)  # allocated, written, freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults = [faults_of_a_32_mb_tensor() for _ in range(16)]
    assert sum(faults[-4:]) < 1000, faults
