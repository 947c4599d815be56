"""The segment folders a pretraining run reads: its corpus and, optionally, general text that is
only evaluated (to see what continued training on a small corpus forgets)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pretrain.config import DataConfig
from ptm.data.segment_builder import prepare_segments


def prepare_run_data(data: DataConfig, tokenizer_source: str | None) -> tuple[Path, Path | None]:
    """``(corpus folder, general-text folder or None)``, built on first use.

    The general text is tokenized with the corpus folder's tokenizer (the model's own, or the one
    built from the corpus) and kept whole: every document of it lands in the folder's train
    split, which the run only evaluates. It needs no word marks: evaluation masks single tokens.
    """
    folder = prepare_segments(
        data.corpus, tokenizer_source, data.cache_dir, data.segments, data.word_segmenter
    )
    if not data.general_eval:
        return folder, None
    whole = replace(data.segments, eval_fraction=0.0)
    general = prepare_segments(data.general_eval, str(folder / "tokenizer"), data.cache_dir, whole)
    return folder, general
