"""Packing short pieces into segments by best fit, and writing a split's files
(`ptm.data.segment_writer`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptm.data.segment_builder import build_segments
from ptm.data.segment_cutting import frame_rows
from ptm.data.segment_writer import Packer, SplitWriter
from ptm.data.tokenizer import load_tokenizer
from tests.conftest import segment_config
from tests.test_segment_builder import segments_of


def test_short_documents_are_packed_with_separators(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"{100 + i} {101 + i} {102 + i}\n" for i in range(0, 60, 3)))
    meta = build_segments(
        [corpus], tmp_path / "seg", segment_config(max_seq_len=32, eval_fraction=0.0)
    )
    segs = segments_of(tmp_path / "seg")
    tok = load_tokenizer(tmp_path / "seg" / "tokenizer")
    assert sum(s.count(3) for s in segs) == 20  # one [SEP] per document
    restored = sorted(tuple(tok.convert_ids_to_tokens(s[1:-1])) for seg in segs for s in [seg])
    docs = sorted(" ".join(t) for t in restored)
    assert len(segs) == 3 and meta["packing_efficiency"]["train"] > 0.8
    assert all(len(s) <= 32 for s in segs)
    assert sum(len(s) for s in segs) == 20 * 4 + len(segs)
    assert docs  # every segment decodes back to IDs of the corpus


def _write(folder: Path, flush_positions: int, monkeypatch: pytest.MonkeyPatch) -> SplitWriter:
    """Packed segments and framed rows, interleaved, as the builder writes them."""
    monkeypatch.setattr(SplitWriter, "FLUSH_POSITIONS", flush_positions)
    folder.mkdir()
    w = SplitWriter(folder, "train", np.dtype(np.uint16), 2, 3)
    ones = np.ones(3, bool)
    w.add_packed([(np.array([10, 11, 12], np.uint16), ones), (np.array([13], np.uint16), ones[:1])])
    rows = np.arange(20, 32, dtype=np.uint16).reshape(3, 4)
    w.add_rows(*frame_rows(rows, np.zeros((3, 4), bool), 2, 3))
    w.add_packed([(np.array([40, 41], np.uint16), np.array([True, False]))])
    w.close()
    return w


def test_split_files_hold_segments_in_order_however_often_they_are_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    once = _write(tmp_path / "once", 1 << 22, monkeypatch)
    every = _write(tmp_path / "every", 1, monkeypatch)  # a write after every segment
    for name in ("tokens", "word_start", "offsets"):
        a = (tmp_path / "once" / f"train.{name}.bin").read_bytes()
        assert a == (tmp_path / "every" / f"train.{name}.bin").read_bytes(), name
    assert once.segments == every.segments == 5 and once.end == 7 + 3 * 6 + 4
    offsets = np.fromfile(tmp_path / "once" / "train.offsets.bin", np.int64)
    assert offsets.tolist() == [0, 7, 13, 19, 25, 29]
    tokens = np.fromfile(tmp_path / "once" / "train.tokens.bin", np.uint16)
    assert tokens[:7].tolist() == [2, 10, 11, 12, 3, 13, 3]  # [CLS] piece [SEP] piece [SEP]
    assert tokens[7:13].tolist() == [2, 20, 21, 22, 23, 3]
    assert tokens[25:].tolist() == [2, 40, 41, 3]
    marks = np.fromfile(tmp_path / "once" / "train.word_start.bin", np.uint8)
    assert marks[7:13].tolist() == [1, 0, 0, 0, 0, 1] and marks[25:].tolist() == [1, 1, 0, 1]


def _scan_best_fit(sizes: list[int], capacity: int, window: int) -> list[list[int]]:
    """The packing rule written plainly: a linear scan of the open segments for every piece."""
    room: list[int] = []
    open_: list[list[int]] = []
    closed: list[list[int]] = []
    for piece, size in enumerate(sizes):
        fits = [i for i, r in enumerate(room) if r >= size + 1]
        if fits:
            best = min(fits, key=room.__getitem__)
        else:
            if len(room) >= window:
                fullest = min(range(len(room)), key=room.__getitem__)
                room.pop(fullest)
                closed.append(open_.pop(fullest))
            room.append(capacity)
            open_.append([])
            best = len(room) - 1
        room[best] -= size + 1
        open_[best].append(piece)
    return closed + open_


@given(
    sizes=st.lists(st.integers(1, 30), max_size=300),
    window=st.integers(1, 8),
)
@settings(max_examples=200, deadline=None)
def test_packer_is_best_fit_over_the_window(sizes: list[int], window: int) -> None:
    emitted: list[list[int]] = []
    packer = Packer(31, window, lambda pieces: emitted.append([int(p[0][0]) for p in pieces]))
    for piece, size in enumerate(sizes):
        packer.add(np.full(size, piece), np.ones(size, bool))
    packer.flush()
    assert emitted == _scan_best_fit(sizes, 31, window)
