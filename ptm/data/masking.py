"""Dynamic masked-LM masking at batch time, with whole-word masking and BERT's 80/10/10 rule.

Why our own rather than transformers' collators (5.x): ``DataCollatorForLanguageModeling`` can
draw special tokens as the "random" replacement, and its ``whole_word_mask=True`` needs offset
mappings and turns every chosen token into ``[MASK]`` (no 80/10/10). Here:

* candidates are all non-special positions; ``[PAD] [CLS] [SEP] [MASK] [UNK]`` are never chosen
  and never drawn as a random replacement;
* each sequence gets ``rate`` of its candidates in expectation *exactly*: words are taken in a
  random order until the target is met, and the word that would cross the target is taken with
  the probability that keeps the expected count at ``rate * candidates`` (for single tokens the
  count is ``rate * candidates`` rounded up or down at random, exact in expectation);
* with word-start marks every piece of a chosen word is chosen (Cui et al., 2019, BERT-wwm);
  each chosen position then becomes ``[MASK]`` / a random ordinary token / itself with
  probabilities ``mask_fraction`` / ``random_fraction`` / the rest, position by position, as in
  Google's ``create_pretraining_data.py``.

Everything is vectorised over the batch on the batch's device, so it costs no host time on GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True, kw_only=True)
class MaskingConfig:
    rate: float
    mask_fraction: float
    random_fraction: float
    whole_word: bool  # used where the data carries word-start marks

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"masking rate must be in (0, 1), got {self.rate}")
        if (
            self.mask_fraction < 0
            or self.random_fraction < 0
            or self.mask_fraction + self.random_fraction > 1
        ):
            raise ValueError(
                f"mask_fraction + random_fraction must be within [0, 1], got "
                f"{self.mask_fraction} + {self.random_fraction}"
            )


class Masker:
    """Applies `MaskingConfig` to batches of token IDs."""

    def __init__(
        self, cfg: MaskingConfig, vocab_size: int, special_ids: list[int], mask_id: int
    ) -> None:
        self.cfg = cfg
        self.mask_id = mask_id
        self.special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[self.special] = True
        self.ordinary = torch.nonzero(~is_special).squeeze(1)
        if len(self.ordinary) == 0:
            raise ValueError("the vocabulary has no ordinary token to mask")

    def __call__(
        self,
        input_ids: torch.Tensor,
        word_start: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(masked_input_ids, labels)``; labels are ``-100`` where nothing is predicted."""
        device = input_ids.device
        eligible = ~torch.isin(input_ids, self.special.to(device))
        chosen = self.choose(eligible, word_start if self.cfg.whole_word else None, generator)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        u = torch.rand(input_ids.shape, device=device, generator=generator)
        to_mask = chosen & (u < self.cfg.mask_fraction)
        to_random = (
            chosen
            & (u >= self.cfg.mask_fraction)
            & (u < self.cfg.mask_fraction + self.cfg.random_fraction)
        )
        ordinary = self.ordinary.to(device)
        draw = torch.randint(len(ordinary), input_ids.shape, device=device, generator=generator)
        out = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        out = torch.where(to_random, ordinary[draw], out)
        return out, labels

    def choose(
        self,
        eligible: torch.Tensor,
        word_start: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Boolean (B, L): the positions to predict, whole words at a time where marks exist."""
        batch, length = eligible.shape
        device = eligible.device
        if word_start is None:
            begins = eligible
        else:
            prev_eligible = torch.nn.functional.pad(eligible[:, :-1], (1, 0), value=False)
            begins = eligible & (word_start.bool() | ~prev_eligible)
        # Non-eligible positions get word slots of their own with length 0, never chosen.
        begins = begins | ~eligible
        word_id = torch.cumsum(begins.long(), dim=1) - 1  # (B, L) in [0, L)
        word_len = torch.zeros(batch, length, dtype=torch.long, device=device)
        word_len.scatter_add_(1, word_id, eligible.long())
        # Stochastic rounding: E[target] = rate * candidates, never off by more than one.
        expected = self.cfg.rate * eligible.sum(1, keepdim=True).float()
        target = torch.floor(
            expected + torch.rand(expected.shape, device=device, generator=generator)
        )

        score = torch.rand(batch, length, device=device, generator=generator)
        score = torch.where(word_len > 0, score, torch.full_like(score, 2.0))
        order = torch.argsort(score, dim=1)
        sorted_len = torch.gather(word_len, 1, order).float()
        cum = torch.cumsum(sorted_len, dim=1)
        before = cum - sorted_len
        crossing_p = ((target - before) / sorted_len.clamp(min=1)).clamp(0, 1)
        take_crossing = torch.rand(batch, length, device=device, generator=generator) < crossing_p
        take_sorted = (sorted_len > 0) & (before < target) & ((cum <= target) | take_crossing)
        take_word = torch.zeros_like(take_sorted).scatter_(1, order, take_sorted)
        return torch.gather(take_word, 1, word_id) & eligible
