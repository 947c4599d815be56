"""The segment folders a pretraining run reads: its corpus (with, optionally, a sample of general
text mixed in) and, optionally, general text that is only evaluated — to see what continued
training on a small corpus forgets."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from pretrain.config import DataConfig
from ptm.data.segment_builder import hash_file_versions, prepare_segments
from ptm.errors import InputError
from ptm.files import write_file_atomically


def prepare_run_data(data: DataConfig, tokenizer_source: str | None) -> tuple[Path, Path | None]:
    """``(corpus folder, general-text folder or None)``, built on first use.

    The general text is tokenized with the corpus folder's tokenizer (the model's own, or the one
    built from the corpus) and kept whole: every document of it lands in the folder's train
    split, which the run only evaluates. It needs no word marks: evaluation masks single tokens.
    """
    corpus = list(data.corpus)
    if data.rehearsal_documents > 0:
        corpus.append(
            rehearsal_sample(
                data.rehearsal, data.rehearsal_documents, data.cache_dir, data.segments.seed
            )
        )
    folder = prepare_segments(
        corpus, tokenizer_source, data.cache_dir, data.segments, data.word_segmenter
    )
    if not data.general_eval:
        return folder, None
    whole = replace(data.segments, eval_fraction=0.0)
    general = prepare_segments(data.general_eval, str(folder / "tokenizer"), data.cache_dir, whole)
    return folder, general


def rehearsal_sample(files: list[Path], documents: int, cache_dir: Path, seed: int) -> Path:
    """A file of ``documents`` non-empty lines drawn uniformly from ``files`` (one document per
    line), written once under ``cache_dir`` and named after what it was drawn from.

    Rehearsal: continued training on a small corpus alone also relearns which tokens are common,
    and the model forgets the rest of its language (measured on the fact example of
    `tests/test_pretrain.py`: a tiny model's held-out general accuracy fell from 4.9% to 0.5%
    without it, to 3.9% with 20 documents mixed in, which still taught it the fact). Reservoir
    sampling keeps only the sample in memory; the seed makes it the same every time.
    """
    if not files:
        raise InputError(
            None,
            f"data.rehearsal_documents={documents} but data.rehearsal lists no file",
            "name the general text to draw from, or set data.rehearsal_documents=0",
        )
    for path in files:
        if not Path(path).is_file():
            raise InputError(path, "no such rehearsal file", "check data.rehearsal")
    h = hashlib.sha256(f"{documents}|{seed}".encode())
    hash_file_versions(h, files)
    out = Path(cache_dir) / "rehearsal" / f"{h.hexdigest()[:12]}.txt"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    seen = 0
    for path in files:
        with Path(path).open(encoding="utf-8", errors="strict") as f:
            for line in f:
                if not line.strip():
                    continue
                if seen < documents:
                    chosen.append(line.rstrip("\n"))
                else:
                    j = int(rng.integers(seen + 1))
                    if j < documents:
                        chosen[j] = line.rstrip("\n")
                seen += 1
    # Runs started together draw the same sample: each writes it whole under its own name and
    # renames it into place, so none reads a file another is still writing.
    write_file_atomically(out, ("\n".join(chosen) + "\n").encode("utf-8"))
    return out
