"""Reading a corpus on a few threads, in order, in bounded memory: chunking changes nothing, the
first bad line is the one reported, IDs of any size are counted (`ptm.data.corpus_stream`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ptm.data import idtext
from ptm.data.corpus_stream import DENSE_LIMIT, Spill, count_ids, in_order, threads
from ptm.data.idtext import SourceStats
from ptm.data.segment_builder import build_segments
from ptm.data.segment_store import SegmentData
from ptm.errors import InputError
from tests.conftest import segment_config, write_corpus


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


def test_results_come_in_order_with_a_bounded_lead() -> None:
    """Later items may finish first; they are still yielded in order, and no more than two per
    thread are drawn ahead of the consumer."""
    drawn = []
    lock = threading.Lock()

    def items():
        for i in range(40):
            with lock:
                drawn.append(i)
            yield (i,)

    def slow_first(i: int) -> int:
        time.sleep(0.02 if i % 5 == 0 else 0)
        return i * i

    seen = []
    for (i,), result in in_order(slow_first, items()):
        assert result == i * i
        with lock:
            assert len(drawn) - i <= 2 * threads() + 1
        seen.append(i)
    assert seen == list(range(40))


def test_ids_of_any_size_are_counted_and_spilled_exactly(tmp_path: Path) -> None:
    """IDs past `DENSE_LIMIT` take the sorting path; a spilled chunk reads back as parsed."""
    huge = DENSE_LIMIT + 12345
    corpus = tmp_path / "c.txt"
    corpus.write_text(f"5 {huge} 7_5\n\n{2**40} 5 {huge}\n")
    stats = [SourceStats(corpus)]
    (tmp_path / "spill").mkdir()
    spill = Spill(tmp_path / "spill")
    ids, counts = count_ids([corpus], "text", stats, spill)
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == {
        5: 3,
        7: 1,
        huge: 2,
        2**40: 1,
    }
    (back,) = list(spill.replay(int(counts.sum())))
    assert back.ids.tolist() == [5, huge, 7, 5, 2**40, 5, huge]
    assert back.word_start.tolist() == [True, True, True, False, True, True, True]
    assert back.line_lengths.tolist() == [4, 0, 3] and back.has_word_joins
    assert not (tmp_path / "spill").exists()  # deleted once read back
    assert stats[0].lines == 3 and len(stats[0].sha256) == 64
    assert np.array_equal(ids, np.sort(ids))
