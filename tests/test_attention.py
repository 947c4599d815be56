"""ptm's attention (`ptm.models.attention`): the CPU training path computes what SDPA computes,
forward and backward, directly and behind transformers' attention interface.

Its speed is measured in `make bench`; here, that it is the same attention.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import BertModel

from ptm.models.attention import ATTENTION, attend, use_math_attention
from tests.finetune_helpers import tiny_config


def _qkv(grad: bool) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    shapes = [(3, 2, 5, 8), (3, 2, 11, 8), (3, 2, 11, 8)]
    return tuple(torch.randn(s, requires_grad=grad) for s in shapes)


def _padding_mask() -> torch.Tensor:
    key_mask = torch.ones(3, 1, 1, 11, dtype=torch.bool)
    key_mask[1, ..., 7:] = False
    return key_mask


@pytest.mark.parametrize("dropout_p", [0.0, 1e-6])  # 1e-6 rounds to dropping nothing
def test_math_path_matches_sdpa_forward_and_backward(dropout_p: float) -> None:
    """Scores, padding mask, softmax, dropout mask and output scale: PyTorch's kernel's result,
    and its gradients."""
    ours_in, ref_in = _qkv(grad=True), _qkv(grad=True)
    assert use_math_attention(ours_in[0])
    ours = attend(*ours_in, _padding_mask(), dropout_p, 0.35)
    reference = F.scaled_dot_product_attention(*ref_in, attn_mask=_padding_mask(), scale=0.35)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    (reference * weights).sum().backward()
    for a, b in zip(ours_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_inference_keeps_sdpa() -> None:
    """Without gradients SDPA is the quicker kernel on CPU too, so it is the one used."""
    query, key, value = _qkv(grad=False)
    assert not use_math_attention(query)
    torch.testing.assert_close(
        attend(query, key, value, _padding_mask(), 0.0, 0.35),
        F.scaled_dot_product_attention(query, key, value, attn_mask=_padding_mask(), scale=0.35),
    )


def test_dropout_drops_probabilities_and_rescales() -> None:
    """One key, so every probability is 1: the output is the value, zeroed where dropped and
    scaled up where kept."""
    torch.manual_seed(0)
    value = torch.randn(4, 2, 1, 8)
    query = torch.randn(4, 2, 300, 8, requires_grad=True)
    out = attend(query, torch.randn(4, 2, 1, 8), value, None, 0.5, 1.0).detach()
    dropped = (out == 0).all(dim=-1)
    assert 0.4 < dropped.float().mean() < 0.6
    torch.testing.assert_close(out[~dropped], (2 * value).expand_as(out)[~dropped])


def test_transformers_models_take_it_and_save_plain_configs(tmp_path) -> None:
    """A BERT loaded with ``attn_implementation=ATTENTION`` trains to the same outputs and
    gradients as with SDPA, padding included, and the folder it saves names no ptm attention."""
    config = tiny_config(vocab_size=50, max_positions=64, pad_id=0)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0  # outputs comparable
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path)
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 6:] = 0
    results = {}
    for impl in (ATTENTION, "sdpa"):
        model = BertModel.from_pretrained(tmp_path, attn_implementation=impl).train()
        assert model.config._attn_implementation == impl
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        (out * mask[..., None]).sum().backward()
        results[impl] = (out.detach(), model.encoder.layer[0].attention.self.query.weight.grad)
        if impl == ATTENTION:
            model.save_pretrained(tmp_path / "saved")
    for ours, reference in zip(results[ATTENTION], results["sdpa"], strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert ATTENTION not in {str(v) for v in saved.values()}
    BertModel.from_pretrained(tmp_path / "saved")  # plain transformers loads it
