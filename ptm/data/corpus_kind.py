"""What a corpus holds, anonymized IDs or raw text, told from its first lines and checked against
the tokenizer, so a raw-text corpus never meets an ID vocabulary (or the reverse) unnoticed.

Each file's first chunk with a non-empty line decides (`ptm.data.rawtext.sniff_kind` votes over
its first lines); Tianchi tables are read through their text column, and a byte-order mark or
CRLF line ends are dropped on the way (`ptm.data.idtext.iter_text_chunks`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ptm.data.idtext import SourceStats, iter_text_chunks
from ptm.data.rawtext import sniff_kind
from ptm.data.tokenizer import is_id_vocabulary
from ptm.errors import InputError

_FIX_ID_TOKENIZER = (
    "raw text needs a WordPiece vocabulary: set model.init_from (or data.tokenizer) to a Chinese "
    "BERT folder or its vocab.txt, or leave both unset to build a character vocabulary from the "
    "corpus"
)
_FIX_TEXT_TOKENIZER = (
    "anonymized IDs need an ID vocabulary: leave data.tokenizer and model.init_from unset to "
    "build one from the corpus, or point them to a model pretrained by ptm on IDs"
)


def corpus_kind(
    sources: list[Path],
    text_column: str,
    tokenizer: PreTrainedTokenizerBase | None,
    tokenizer_source: str | None = None,
    word_segmenter: str = "none",
) -> str:
    """``"ids"`` or ``"text"``: what the sources hold (from their first lines), checked against
    the tokenizer, so a raw-text corpus never meets an ID vocabulary (or the reverse) unnoticed.
    """
    expected = None if tokenizer is None else "ids" if is_id_vocabulary(tokenizer) else "text"
    named = f"the tokenizer ({tokenizer_source or 'given'})"
    found: tuple[str, Path] | None = None
    for path in sources:
        sniffed = sniff_file(path, text_column)
        if sniffed is None:
            continue  # no text at all: the build says so
        kind, at, line = sniffed
        sample = line[:40].decode("utf-8", errors="replace")
        if expected == "ids" and kind == "text":
            raise InputError(
                path,
                f"raw text ({sample!r}) but {named} is an ID vocabulary",
                _FIX_ID_TOKENIZER,
                at,
            )
        if expected == "text" and kind == "ids":
            raise InputError(
                path,
                f"anonymized IDs ({sample!r}) but {named} is a WordPiece vocabulary",
                _FIX_TEXT_TOKENIZER,
                at,
            )
        if found is not None and found[0] != kind:
            raise InputError(
                path,
                f"{'raw text' if kind == 'text' else 'anonymized IDs'} ({sample!r}), but "
                f"{found[1]} holds {'raw text' if found[0] == 'text' else 'IDs'}",
                "pretrain on one kind of corpus at a time",
                at,
            )
        found = (kind, path)
    kind = expected or (found[0] if found else "ids")
    if kind == "ids" and word_segmenter != "none":
        raise InputError(
            sources[0],
            f"data.word_segmenter={word_segmenter} segments raw text, but this corpus holds IDs",
            "ID corpora mark words by joining IDs with '_'; set data.word_segmenter=none",
        )
    return kind


def sniff_file(path: Path, text_column: str) -> tuple[str, int, bytes] | None:
    """`ptm.data.rawtext.sniff_kind` on the file's first chunk that has a non-empty line, with
    the file line number of the line that decided it."""
    chunks = iter_text_chunks(path, SourceStats(path), text_column)
    try:
        for first_line, chunk in chunks:
            sniffed = sniff_kind(chunk)
            if sniffed is not None:
                return sniffed[0], first_line + sniffed[1], sniffed[2]
        return None
    finally:
        chunks.close()
