"""Masking proportions (statistically), special tokens, and whole-word integrity."""

from __future__ import annotations

import pytest
import torch

from ptm.config import from_conf
from ptm.data.masking import IGNORE_INDEX, Masker, MaskingConfig

SPECIAL = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]
VOCAB = 50


def masking(**values) -> MaskingConfig:
    """The masking `make pretrain` uses (conf/data), with ``values`` changed."""
    return from_conf(MaskingConfig, "pretrain", "data.masking", **values)


def batch(n: int = 4000, length: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[n // 2 :, length // 2 :] = 0  # padding on half the rows
    ids[:, 10] = 1  # an [UNK]
    word_start = torch.rand(n, length, generator=g) < 0.45
    return ids, word_start


@pytest.mark.parametrize("whole_word", [False, True])
def test_proportions(whole_word: bool) -> None:
    ids, word_start = batch()
    cfg = masking(whole_word=whole_word)
    masker = Masker(cfg, VOCAB, SPECIAL, mask_id=4)
    out, labels = masker(ids, word_start, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    eligible = ids >= 5
    n = eligible.sum().item()
    rate = chosen.sum().item() / n
    # 30% (the default) of ~190k candidates: the binomial standard error is ~0.001; allow 4.
    assert abs(rate - cfg.rate) < 0.004
    picked = chosen.sum().item()
    masked = (out[chosen] == 4).float().mean().item()
    kept = (out[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    # "kept" = the 10% left alone plus random draws that hit the same token (1/45 of 10%).
    assert abs(kept - (0.1 + 0.1 / 45)) < 0.01
    assert picked > 10_000
    assert torch.equal(labels[chosen], ids[chosen])


def test_special_tokens_never_chosen_nor_drawn() -> None:
    ids, word_start = batch()
    masker = Masker(masking(rate=0.5, mask_fraction=0.0, random_fraction=1.0), VOCAB, SPECIAL, 4)
    out, labels = masker(ids, word_start, torch.Generator().manual_seed(2))
    assert not (labels[ids < 5] != IGNORE_INDEX).any()
    chosen = labels != IGNORE_INDEX
    assert (out[chosen] >= 5).all()  # every random replacement is an ordinary token
    assert torch.equal(out[~chosen], ids[~chosen])


def test_token_level_count_is_exact_up_to_rounding() -> None:
    ids, _ = batch(n=500)
    cfg = masking(whole_word=False)
    masker = Masker(cfg, VOCAB, SPECIAL, 4)
    chosen = masker.choose(ids >= 5, None, torch.Generator().manual_seed(3))
    expected = cfg.rate * (ids >= 5).sum(1).float()
    assert ((chosen.sum(1).float() - expected).abs() < 1.0).all()


def test_whole_words_are_masked_entirely() -> None:
    ids, word_start = batch(n=1000)
    masker = Masker(masking(whole_word=True), VOCAB, SPECIAL, 4)
    chosen = masker.choose(ids >= 5, word_start, torch.Generator().manual_seed(4))
    eligible = ids >= 5
    # Inside a word (not a word start, previous position eligible) the choice must not change.
    inside = eligible[:, 1:] & eligible[:, :-1] & ~word_start[:, 1:]
    assert torch.equal(chosen[:, 1:][inside], chosen[:, :-1][inside])
    assert chosen.any()


def test_masks_are_reproducible_from_the_generator() -> None:
    ids, word_start = batch(n=50)
    masker = Masker(masking(whole_word=True), VOCAB, SPECIAL, 4)
    a = masker(ids, word_start, torch.Generator().manual_seed(9))
    b = masker(ids, word_start, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="rate"):
        masking(rate=0.0)
    with pytest.raises(ValueError, match="within"):
        masking(mask_fraction=0.9, random_fraction=0.2)
