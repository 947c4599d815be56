"""Cutting parsed documents into segments: full-length pieces of long documents framed as
``[CLS] ... [SEP]`` rows, tails dropped or kept, short documents left as pieces to pack
(`ptm.data.segment_writer`), and each document's split chosen by a seeded hash of its number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ptm.data.idtext import ParsedLines
from ptm.data.segment_config import SegmentConfig
from ptm.data.segment_store import SPLITS
from ptm.data.tokenizer import IdMapper

CHUNK_COUNTS = (
    "documents",
    "empty_lines",
    "ids",
    "unknown_ids",
    "dropped_tails",
    "dropped_tail_ids",
)


@dataclass
class Counts:
    """What a build met and made: documents, IDs, dropped tails, segments and positions."""

    documents: int = 0
    empty_lines: int = 0
    ids: int = 0
    unknown_ids: int = 0
    dropped_tails: int = 0
    dropped_tail_ids: int = 0
    segments: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    positions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def add(self, chunk: Counts) -> None:
        """Add one chunk's document and ID counts (segments are counted by the writers)."""
        for name in CHUNK_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(chunk, name))


def is_eval(doc_index: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """A seeded hash of the document number decides its split: stable whatever the chunking."""
    with np.errstate(over="ignore"):  # splitmix64 relies on wrap-around
        x = doc_index.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


class Cast:
    """Raw text arrives as vocabulary indices already: only the storage type changes."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return ids.astype(self.dtype)


@dataclass
class Cut:
    """What one chunk of documents becomes: whole segments of each split, framed and ready to
    write, and the pieces (short documents, kept tails) still to be packed, in document order."""

    rows: dict[str, tuple[np.ndarray, np.ndarray]]
    pieces: list[tuple[str, np.ndarray, np.ndarray]]
    counts: Counts


def frame_rows(ids: np.ndarray, starts: np.ndarray, cls_id: int, sep_id: int):
    """``[CLS] row [SEP]`` for every row, with word-start marks to match."""
    n = len(ids)
    tokens = np.empty((n, ids.shape[1] + 2), ids.dtype)
    tokens[:, 0], tokens[:, -1], tokens[:, 1:-1] = cls_id, sep_id, ids
    marks = np.ones(tokens.shape, bool)
    marks[:, 1:-1] = starts
    return tokens, marks


def cut_chunk(
    parsed: ParsedLines,
    first_doc: int,
    to_index: IdMapper,
    cfg: SegmentConfig,
    special: tuple[int, int, int],
) -> Cut:
    """Cut the documents of one parsed chunk: every full-length piece of a long document becomes
    a segment (cut for the whole chunk at once, as one 2-D gather); short documents and the
    tails worth keeping become pieces to pack. ``first_doc`` numbers the chunk's first document
    (its split depends on it); ``special`` is the ``[CLS]``, ``[SEP]`` and ``[UNK]`` index.
    Pure, so chunks are cut on several threads."""
    cls_id, sep_id, unk_id = special
    index = to_index(parsed.ids)
    counts = Counts(ids=len(index), unknown_ids=int((index == unk_id).sum()))
    body = cfg.max_seq_len - 2
    lengths = parsed.line_lengths
    nonempty = lengths > 0
    counts.empty_lines = int((~nonempty).sum())
    counts.documents = int(nonempty.sum())
    eval_doc = is_eval(first_doc + np.cumsum(nonempty) - 1, cfg.seed, cfg.eval_fraction)
    doc_start = np.cumsum(lengths) - lengths

    rows = {}
    long_doc = lengths > body
    n_full = np.where(long_doc, lengths // body, 0)
    if n_full.any():
        seg_doc = np.repeat(np.arange(len(lengths)), n_full)
        k = np.arange(len(seg_doc)) - np.repeat(np.cumsum(n_full) - n_full, n_full)
        cols = (doc_start[seg_doc] + k * body)[:, None] + np.arange(body)  # (segments, body)
        ids, starts, in_eval = index[cols], parsed.word_start[cols], eval_doc[seg_doc]
        for split, chosen in (("train", ~in_eval), ("eval", in_eval)):
            if chosen.any():
                rows[split] = frame_rows(ids[chosen], starts[chosen], cls_id, sep_id)

    rest = np.where(long_doc, lengths % body, lengths)
    drop = long_doc & (rest > 0) & (rest + 2 <= cfg.tail_drop_fraction * cfg.max_seq_len)
    counts.dropped_tails = int(drop.sum())
    counts.dropped_tail_ids = int(rest[drop].sum())
    piece_start = doc_start + lengths - rest
    pieces = []
    for line in np.flatnonzero((rest > 0) & ~drop).tolist():
        lo = int(piece_start[line])
        hi = lo + int(rest[line])
        split = "eval" if eval_doc[line] else "train"
        pieces.append((split, index[lo:hi], parsed.word_start[lo:hi]))
    return Cut(rows, pieces, counts)
