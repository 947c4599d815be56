"""Cutting documents into segments: full-length rows, tails dropped or kept as pieces to pack,
and a split per document that does not depend on chunking (`ptm.data.segment_cutting`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptm.data.idtext import ParsedLines
from ptm.data.segment_builder import build_segments
from ptm.data.segment_cutting import Cast, cut_chunk, is_eval
from tests.conftest import segment_config
from tests.test_segment_builder import segments_of

CLS, SEP, UNK = 2, 3, 1


def test_long_document_splits_and_short_tail_is_dropped(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(str(100 + i) for i in range(20)) + "\n")  # 20 IDs, body 6
    cfg = segment_config(max_seq_len=8, eval_fraction=0.0, tail_drop_fraction=0.5)
    meta = build_segments([corpus], tmp_path / "seg", cfg)
    segs = segments_of(tmp_path / "seg")
    assert len(segs) == 3 and all(len(s) == 8 for s in segs)  # 3 x 6 IDs; the 2-ID tail is dropped
    assert all(s[0] == 2 and s[-1] == 3 for s in segs)  # [CLS] ... [SEP]
    assert meta["counts"]["dropped_tails"] == 1 and meta["counts"]["dropped_tail_ids"] == 2
    meta = build_segments(
        [corpus],
        tmp_path / "seg2",
        segment_config(max_seq_len=8, eval_fraction=0.0, tail_drop_fraction=0.4),
    )
    assert meta["counts"]["dropped_tails"] == 0 and meta["counts"]["segments"]["train"] == 4


def test_a_chunk_becomes_rows_and_pieces_in_document_order() -> None:
    """Lines of 14, 0, 3 and 9 IDs with a body of 6: two rows and a kept tail of 2 from the first
    (2 + 2 > 0.4 x 8 is worth keeping), nothing from the empty line, the 3-ID document whole,
    one row and a 3-ID tail from the last."""
    lengths = np.array([14, 0, 3, 9], np.int64)
    ids = np.arange(10, 10 + lengths.sum(), dtype=np.int64)
    starts = np.ones(len(ids), bool)
    starts[1::2] = False
    parsed = ParsedLines(ids, starts, lengths, has_word_joins=True)
    cfg = segment_config(max_seq_len=8, eval_fraction=0.0, tail_drop_fraction=0.4)
    cut = cut_chunk(parsed, 0, Cast(np.dtype(np.uint16)), cfg, (CLS, SEP, UNK))
    tokens, marks = cut.rows["train"]
    assert "eval" not in cut.rows
    assert tokens.tolist() == [
        [CLS, 10, 11, 12, 13, 14, 15, SEP],
        [CLS, 16, 17, 18, 19, 20, 21, SEP],
        [CLS, 27, 28, 29, 30, 31, 32, SEP],
    ]
    assert marks[0].tolist() == [True, True, False, True, False, True, False, True]
    assert [(split, p.tolist()) for split, p, _ in cut.pieces] == [
        ("train", [22, 23]),
        ("train", [24, 25, 26]),
        ("train", [33, 34, 35]),
    ]
    counts = cut.counts
    assert (counts.documents, counts.empty_lines, counts.ids) == (3, 1, 26)
    assert (counts.dropped_tails, counts.unknown_ids) == (0, 0)


def test_the_split_follows_the_document_number_not_the_chunk() -> None:
    docs = np.arange(100_000)
    chosen = is_eval(docs, seed=0, fraction=0.1)
    assert abs(chosen.mean() - 0.1) < 0.005
    assert np.array_equal(is_eval(docs[5000:6000], 0, 0.1), chosen[5000:6000])
    assert not np.array_equal(is_eval(docs, 1, 0.1), chosen)  # the seed moves it
    assert not is_eval(docs, 0, 0.0).any()
    # A document in a chunk that starts at document 40 is split as document 40 + i.
    parsed = ParsedLines(np.arange(40) + 10, np.ones(40, bool), np.full(40, 1), False)
    cfg = segment_config(max_seq_len=8, eval_fraction=0.5, seed=3)
    cut = cut_chunk(parsed, 40, Cast(np.dtype(np.uint16)), cfg, (CLS, SEP, UNK))
    in_eval = [split == "eval" for split, _, _ in cut.pieces]
    assert in_eval == is_eval(np.arange(40, 80), 3, 0.5).tolist()
