"""Held-out masked-LM evaluation: loss, accuracy and perplexity on segments no step trains on.

Every evaluation masks the same positions — fixed, token-level 15 % masking from a fixed seed —
so its numbers compare across steps, runs, masking settings and corpora with or without word
marks. The work is shared over the processes and summed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ptm.data.feed import mask_on_device
from ptm.data.masking import Masker, MaskingConfig
from ptm.data.segment_store import SegmentData
from ptm.models.mlm import MaskedLMObjective
from ptm.training import dist
from ptm.training.runtime import autocast

log = logging.getLogger(__name__)
EVAL_MASKING = MaskingConfig(rate=0.15, mask_fraction=0.8, random_fraction=0.1, whole_word=False)
EVAL_SEED = 1234


@dataclass(frozen=True)
class HeldOut:
    """The held-out sets of a run and how to read them: ``eval`` (the corpus's own held-out
    segments, at most ``max_segments``) and, for continued training, ``general`` text that shows
    what the run forgets."""

    eval_set: SegmentData
    general_set: SegmentData | None
    masker: Masker
    max_segments: int
    micro_batch_size: int
    pad_id: int

    @property
    def any(self) -> bool:
        return min(len(self.eval_set), self.max_segments) > 0 or self.general_set is not None

    def evaluate_all(
        self, objective: MaskedLMObjective, info: dist.DistInfo, precision: str
    ) -> dict[str, float]:
        out = {}
        if min(len(self.eval_set), self.max_segments) > 0:
            out = self.evaluate(objective, self.eval_set, "eval", info, precision)
        if self.general_set is not None:
            out |= self.evaluate(objective, self.general_set, "general", info, precision)
        return out

    def evaluate(
        self,
        objective: MaskedLMObjective,
        data: SegmentData,
        prefix: str,
        info: dist.DistInfo,
        precision: str,
    ) -> dict[str, float]:
        n, device, size = min(len(data), self.max_segments), info.device, self.micro_batch_size
        objective.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, predicted
        with torch.no_grad():
            for lo in np.arange(info.rank * size, n, size * info.world_size):
                host = [(int(lo), data.batch(np.arange(lo, min(lo + size, n)), self.pad_id))]
                (m,) = mask_on_device(host, device, self.masker, lambda chunk: EVAL_SEED + chunk)
                with autocast(device, precision):
                    loss_sum, correct, count = objective(
                        m.input_ids, m.attention_mask, m.labels, m.width
                    )
                sums += torch.stack([loss_sum.double(), correct.double(), count.double()])
        dist.all_reduce_sum(sums)
        objective.train()
        loss = (sums[0] / sums[2].clamp(min=1)).item()
        return {
            f"{prefix}/loss": loss,
            f"{prefix}/accuracy": (sums[1] / sums[2].clamp(min=1)).item(),
            f"{prefix}/perplexity": math.exp(min(loss, 50.0)),
        }


def eval_masker(vocab_size: int, special_ids: list[int], mask_id: int) -> Masker:
    return Masker(EVAL_MASKING, vocab_size, special_ids, mask_id)


def log_eval(when: str, metrics: dict[str, float], entropy: float) -> None:
    for prefix in ("eval", "general"):
        if f"{prefix}/loss" in metrics:
            log.info(
                "%s | %s loss %.4f | accuracy %.4f | perplexity %.1f | unigram entropy %.4f",
                when,
                prefix,
                metrics[f"{prefix}/loss"],
                metrics[f"{prefix}/accuracy"],
                metrics[f"{prefix}/perplexity"],
                entropy,
            )
