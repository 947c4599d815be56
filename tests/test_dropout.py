"""ptm's dropout (`ptm.models.dropout`): masks that keep 1 - p and scale to an exact
expectation, repeat under a seed, and swap in for every ``nn.Dropout`` of a model (the other CPU
training shortcuts: freed memory kept for reuse in test_runtime.py, attention in
test_attention.py).

Their speed is measured in `make bench`; here, that they compute what they claim.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from ptm.models.dropout import FastDropout, keep_mask, use_fast_dropout


def test_mask_keeps_one_minus_p_and_scales_to_an_exact_expectation() -> None:
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([1000, 1000]), 0.1)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    drop_levels = round(0.1 * 65536)
    assert scale == 65536 / (65536 - drop_levels)
    assert abs(keep.float().mean().item() - (1 - drop_levels / 65536)) < 0.002  # ~7 sigma


def test_masks_repeat_under_the_same_seed_and_differ_between_calls() -> None:
    shape = torch.Size([7, 33])  # not a multiple of four elements
    torch.manual_seed(3)
    first, second = keep_mask(shape, 0.3)[0], keep_mask(shape, 0.3)[0]
    torch.manual_seed(3)
    assert torch.equal(keep_mask(shape, 0.3)[0], first)
    assert not torch.equal(first, second)


def test_fast_dropout_forward_and_backward() -> None:
    torch.manual_seed(0)
    layer = FastDropout(0.25)
    x = torch.full((400, 500), 2.0, requires_grad=True)
    out = layer(x)
    scale = 65536 / (65536 - round(0.25 * 65536))
    kept = out != 0
    assert torch.equal(out[kept], torch.full_like(out[kept], 2.0 * scale))
    assert abs(out.mean().item() - 2.0) < 0.02  # unbiased
    out.sum().backward()
    assert torch.equal(x.grad, kept.float() * scale)  # the same mask, the same scale
    layer.eval()
    assert torch.equal(layer(x), x)


def test_swapping_keeps_every_rate_mode_and_saved_key() -> None:
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1,
        )
    ).eval()  # fmt: skip
    before = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    keys = set(model.state_dict())
    assert use_fast_dropout(model) == len(before) > 0
    after = {name: m for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert {name: m.p for name, m in after.items()} == before
    assert all(type(m) is FastDropout and not m.training for m in after.values())
    assert set(model.state_dict()) == keys
