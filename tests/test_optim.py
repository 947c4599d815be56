"""AdamW with BERT's weight-decay exclusions, fused, and the learning-rate schedule over budget
progress (`ptm.training.optim`)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptm.training.optim import build_adamw, lr_factor, param_groups


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.dense = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 2)
        self.frozen.requires_grad_(False)


def test_biases_and_layer_norms_are_not_decayed_and_frozen_weights_not_trained() -> None:
    model = Tiny()
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.embed.weight), id(model.dense.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model.dense.bias),
        id(model.norm.weight),
        id(model.norm.bias),
    }


def test_the_fused_update_is_torchs_reference_adamw() -> None:
    """One step of the fused kernel matches the default implementation, decay exclusions and
    all (nanochat checks its fused AdamW the same way)."""
    torch.manual_seed(0)
    models = [Tiny(), Tiny()]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_adamw(param_groups(models[0], 0.1), 1e-2, (0.9, 0.98), 1e-6, torch.device("cpu"))
    plain = torch.optim.AdamW(param_groups(models[1], 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    x = torch.randint(0, 10, (8,))
    for _ in range(3):
        for model, opt in zip(models, (fused, plain), strict=True):
            opt.zero_grad()
            model.norm(model.dense(model.embed(x))).pow(2).sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(models[0].dense.weight, Tiny().dense.weight)


def test_linear_warm_up_then_each_decay_shape() -> None:
    assert lr_factor(0.0, 0.1, "linear") == 0.0
    assert lr_factor(0.05, 0.1, "linear") == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1, "linear") == 1.0
    assert lr_factor(0.55, 0.1, "linear") == pytest.approx(0.5)
    assert lr_factor(1.0, 0.1, "linear") == 0.0
    assert lr_factor(0.55, 0.1, "cosine") == pytest.approx(0.5)
    assert lr_factor(0.325, 0.1, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(0.7, 0.1, "constant") == 1.0
    assert lr_factor(1.0, 0.1, "cosine", min_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(0.55, 0.1, "linear", min_factor=0.2) == pytest.approx(0.6)


def test_progress_outside_the_budget_is_clamped_and_no_warm_up_starts_at_the_peak() -> None:
    assert lr_factor(-0.5, 0.1, "linear") == 0.0
    assert lr_factor(1.5, 0.1, "linear") == 0.0
    assert lr_factor(0.0, 0.0, "cosine") == 1.0
    with pytest.raises(ValueError, match="unknown decay 'step'"):
        lr_factor(0.5, 0.1, "step")
