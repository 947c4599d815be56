"""Shapes that stay put for ``torch.compile``, and attention without a mask where nothing is
padding. Compiled with a counting backend that runs the captured graphs eagerly, so counting
costs seconds on a CPU; the GPU leg (tests/test_gpu.py) compiles with Inductor for real."""

from __future__ import annotations

import torch

from pretrain.train import announcing_new_shapes
from ptm.config import from_conf
from ptm.data.feed import round_width
from ptm.data.masking import IGNORE_INDEX, Masker, MaskingConfig
from ptm.models.mlm import MaskedLMObjective, ModelConfig, build_mlm_model

VOCAB, SPECIAL, MASK = 60, [0, 1, 2, 3, 4], 4


def tiny_objective(arch: str = "bert") -> MaskedLMObjective:
    torch.manual_seed(0)
    cfg = from_conf(
        ModelConfig, "pretrain", "model", arch=arch, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
        embedding_size=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return MaskedLMObjective(build_mlm_model(cfg, VOCAB, pad_token_id=0))


def masked_batch(seed: int, rate: float, rows: int = 6, length: int = 48):
    """Random IDs framed by [CLS]/[SEP], whole-word marks, masked by ptm's masker."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (rows, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    starts = torch.rand(rows, length, generator=g) < 0.6
    masking = from_conf(MaskingConfig, "pretrain", "data.masking", rate=rate, whole_word=True)
    masker = Masker(masking, VOCAB, SPECIAL, MASK)
    return masker(ids, starts, g)


class CountingBackend:
    """A ``torch.compile`` backend that counts the graphs dynamo hands it and runs them as is."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return gm.forward


def test_varying_masks_compile_a_handful_of_graphs_not_one_per_step() -> None:
    """30 steps of 15% whole-word masking, a new mask every step, compiled as pretraining
    compiles (static shapes): the per-row masked count changes from step to step, but the width
    is rounded on the host, so dynamo builds one graph per rounded width — a handful — and the
    compiled losses and gradients are the eager ones."""
    torch._dynamo.reset()
    eager = tiny_objective()
    compiled_model = tiny_objective()
    backend = CountingBackend()
    compiled = torch.compile(compiled_model, backend=backend, fullgraph=True, dynamic=False)
    exact, widths = set(), set()
    for step in range(30):
        ids, labels = masked_batch(step, rate=0.15, rows=16, length=128)
        most = int((labels != IGNORE_INDEX).sum(dim=1).max())
        exact.add(most)
        width = round_width(most, labels.size(1))
        widths.add(width)
        for objective in (eager, compiled_model):
            objective.zero_grad()
        a = eager(ids, None, labels, width)
        b = compiled(ids, None, labels, width)
        a[0].backward()
        b[0].backward()
        torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
        grad_a = eager.model.bert.embeddings.word_embeddings.weight.grad
        grad_b = compiled_model.model.bert.embeddings.word_embeddings.weight.grad
        # eager attention is ptm's matrix products (training on CPU), compiled it is SDPA: the
        # same sums in another order
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-5)
    assert len(exact) >= 4  # unrounded, one graph per distinct count
    assert backend.graphs == len(widths) <= 2


def test_no_mask_equals_an_all_ones_mask() -> None:
    """A batch with no padding runs attention without a mask (SDPA may then take its flash
    kernel); the result is the masked computation's."""
    objective = tiny_objective().eval()
    ids, labels = masked_batch(1, rate=0.2)
    width = round_width(int((labels != IGNORE_INDEX).sum(dim=1).max()), labels.size(1))
    with torch.no_grad():
        unmasked = objective(ids, None, labels, width)
        masked = objective(ids, torch.ones_like(ids), labels, width)
    torch.testing.assert_close(unmasked[0], masked[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(unmasked[1], masked[1]) and torch.equal(unmasked[2], masked[2])


def test_each_new_compiled_shape_after_the_first_is_logged(caplog) -> None:
    """A compiled pretraining step pauses to build a graph for each new shape; the log says so."""
    calls = []
    forward = announcing_new_shapes(lambda *args: calls.append(args) or len(calls))
    ids = torch.zeros(4, 16, dtype=torch.long)
    with caplog.at_level("INFO", logger="pretrain.train"):
        for mask, width in [(None, 8), (None, 8), (None, 16), (torch.ones(4, 16), 8), (None, 16)]:
            forward(ids, mask, ids, width)
    lines = [r.getMessage() for r in caplog.records]
    assert len(calls) == 5  # every call goes through
    assert lines == [
        "torch.compile: graph 2, for 4 rows x 16, masked width 16, no padding",
        "torch.compile: graph 3, for 4 rows x 16, masked width 8, with padding",
    ]
