"""Where `build_adamw` fuses: every device type torch has the fused kernel for (CPU and CUDA,
the two ``runtime.device`` chooses from, always among them), and nowhere else. That the fused
update is torch's reference AdamW is tests/test_optim.py's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptm.training import optim
from ptm.training.optim import build_adamw, fused_device_types, param_groups


def test_cpu_and_cuda_always_fuse() -> None:
    assert {"cpu", "cuda"} <= set(fused_device_types())


@pytest.mark.parametrize("listed, fused", [(("cpu", "cuda"), True), (("cuda",), False)])
def test_adamw_is_fused_exactly_where_torch_lists_the_kernel(
    monkeypatch, listed: tuple[str, ...], fused: bool
) -> None:
    monkeypatch.setattr(optim, "fused_device_types", lambda: listed)
    model = nn.Linear(3, 2)
    opt = build_adamw(param_groups(model, 0.01), 1e-3, (0.9, 0.999), 1e-8, torch.device("cpu"))
    assert bool(opt.defaults["fused"]) is fused
    model(torch.ones(1, 3)).sum().backward()
    opt.step()  # the chosen implementation runs
    assert torch.isfinite(model.weight).all()
