"""The segment builder: cutting, tail dropping, packing, splits, determinism, bounded memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptm.data import idtext
from ptm.data.segment_builder import _Packer, build_segments, prepare_segments
from ptm.data.segment_store import SegmentData
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError
from tests.conftest import segment_config, write_corpus


def segments_of(folder: Path, split: str = "train") -> list[list[int]]:
    data = SegmentData(folder, split)
    return [data.tokens[data.offsets[i] : data.offsets[i + 1]].tolist() for i in range(len(data))]


def folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


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


def test_eval_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 300)
    cfg = segment_config(max_seq_len=64, eval_fraction=0.1)
    build_segments([corpus], tmp_path / "a", cfg)
    build_segments([corpus], tmp_path / "b", cfg)
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert 0 < meta["counts"]["segments"]["eval"] < meta["counts"]["segments"]["train"]
    other = build_segments(
        [corpus], tmp_path / "c", segment_config(max_seq_len=64, eval_fraction=0.1, seed=1)
    )
    assert other["counts"]["segments"]["eval"] != meta["counts"]["segments"][
        "eval"
    ] or folder_digest(tmp_path / "c") != folder_digest(tmp_path / "a")


def test_streaming_in_small_chunks_gives_the_same_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk boundaries change only where full-length segments sit in the file, not what is built."""
    corpus = write_corpus(tmp_path / "c.txt", 200, words=True)
    cfg = segment_config(max_seq_len=64, eval_fraction=0.05)
    big = build_segments([corpus], tmp_path / "big", cfg)
    monkeypatch.setattr(idtext, "CHUNK_BYTES", 333)
    monkeypatch.setattr(idtext.iter_text_chunks, "__defaults__", ("text", 333))
    small = build_segments([corpus], tmp_path / "small", cfg)
    assert big["counts"] == small["counts"] and big["vocab_hash"] == small["vocab_hash"]

    def rows(d: SegmentData) -> list[tuple]:
        spans = zip(d.offsets[:-1].tolist(), d.offsets[1:].tolist(), strict=True)
        return sorted((tuple(d.tokens[a:b]), tuple(d.word_start[a:b])) for a, b in spans)

    for split in ("train", "eval"):
        assert rows(SegmentData(tmp_path / "big", split)) == rows(
            SegmentData(tmp_path / "small", split)
        )


def test_word_starts_stored_and_dtype_uint16(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("100_101 102 103_104_105\n")
    meta = build_segments(
        [corpus], tmp_path / "seg", segment_config(max_seq_len=16, eval_fraction=0.0)
    )
    assert meta["word_boundaries"] and meta["dtype"] == "uint16"
    data = SegmentData(tmp_path / "seg", "train")
    batch = data.batch(np.array([0]), pad_id=0)
    assert batch["word_start"][0, :8].tolist() == [
        True,
        True,
        False,
        True,
        True,
        False,
        False,
        True,
    ]
    assert batch["input_ids"].shape == (1, 8)  # 8 positions, padded to a multiple of 8
    assert batch["attention_mask"][0].tolist() == [1] * 8


def test_tianchi_table_and_existing_tokenizer(tmp_path: Path) -> None:
    table = tmp_path / "train_set.csv"
    table.write_text("label\ttext\n1\t100 101 102\n0\t103 999\n")
    first = build_segments(
        [table], tmp_path / "a", segment_config(max_seq_len=16, eval_fraction=0.0)
    )
    assert first["vocab_size"] == 5 + 5
    tok = load_tokenizer(tmp_path / "a" / "tokenizer")
    other = tmp_path / "other.txt"
    other.write_text("100 555\n")
    meta = build_segments(
        [other], tmp_path / "b", segment_config(max_seq_len=16, eval_fraction=0.0), tok
    )
    assert meta["counts"]["unknown_ids"] == 1 and meta["vocab_hash"] == first["vocab_hash"]


def test_empty_lines_are_counted_not_silent(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("100 101\n\n   \n102 103\n")
    meta = build_segments(
        [corpus], tmp_path / "seg", segment_config(max_seq_len=16, eval_fraction=0.0)
    )
    assert meta["counts"]["empty_lines"] == 2 and meta["counts"]["documents"] == 2


def test_bad_corpus_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 five 6\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: .*'five'"):
        build_segments([bad], tmp_path / "seg", segment_config(max_seq_len=16))
    assert not (tmp_path / "seg").exists() and not (tmp_path / "seg.tmp").exists()
    with pytest.raises(InputError, match="no such corpus file"):
        prepare_segments([tmp_path / "missing.txt"], None, tmp_path / "cache", segment_config())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="no IDs"):
        build_segments([empty], tmp_path / "seg", segment_config(max_seq_len=16))


def test_prepare_reuses_cache_and_rebuilds_on_change(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 50)
    cfg = segment_config(max_seq_len=32)
    a = prepare_segments([corpus], None, tmp_path / "cache", cfg)
    assert prepare_segments([corpus], None, tmp_path / "cache", cfg) == a
    assert prepare_segments([corpus], None, tmp_path / "cache", segment_config(max_seq_len=64)) != a


def test_parse_error_names_the_first_bad_line_whatever_thread_parses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are parsed on several threads; the error reported is still the first in the file."""
    lines = [f"{i} {i + 1} {i + 2}" for i in range(100)]
    lines[39], lines[89] = "7 x1 8", "9 y2 10"
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(idtext.iter_text_chunks, "__defaults__", ("text", 64))
    with pytest.raises(InputError, match=r"c\.txt:40: .*'x1'"):
        build_segments([corpus], tmp_path / "seg", segment_config(max_seq_len=16))


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
    packer = _Packer(31, window, lambda pieces: emitted.append([int(p[0][0]) for p in pieces]))
    for piece, size in enumerate(sizes):
        packer.add(np.full(size, piece), np.ones(size, bool))
    packer.flush()
    assert emitted == _scan_best_fit(sizes, 31, window)
