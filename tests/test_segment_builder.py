"""The segment builder: splits, determinism, tables and tokenizers, errors, and the cache: built
once when runs ask for it together, left intact by a full disk (`ptm.data.segment_builder`)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from ptm import files
from ptm.data.segment_builder import build_segments, cache_key, prepare_segments
from ptm.data.segment_store import SegmentData
from ptm.data.segment_writer import SplitWriter
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import DiskFullError, InputError
from ptm.files import exclusive
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
    assert not list(tmp_path.glob("seg*"))  # neither the folder nor a temporary one
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


def test_runs_that_ask_together_wait_for_one_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the folder's lock is held (as by another process building it), every run asking
    for the folder says it waits; once released, one builds and the others reuse its folder."""
    caplog.set_level(logging.INFO)
    corpus = write_corpus(tmp_path / "c.txt", 50)
    cfg = segment_config(max_seq_len=32)
    cache = tmp_path / "cache"
    folder = cache / cache_key([corpus], cfg, None)
    waiting = threading.Semaphore(0)

    class Waits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(f"waiting for another process building {folder}"):
                waiting.release()

    handler = Waits()
    logging.getLogger("ptm.files").addHandler(handler)
    found: list[Path] = []
    runs = [
        threading.Thread(target=lambda: found.append(prepare_segments([corpus], None, cache, cfg)))
        for _ in range(3)
    ]
    try:
        with exclusive(folder):
            for run in runs:
                run.start()
            for _ in runs:
                assert waiting.acquire(timeout=60), "a run did not wait for the lock"
            assert not folder.exists()
        for run in runs:
            run.join(timeout=120)
    finally:
        logging.getLogger("ptm.files").removeHandler(handler)
    assert found == [folder] * 3
    said = [r.getMessage() for r in caplog.records if r.name == "ptm.data.segment_builder"]
    assert sum(m.startswith("segments: reusing") for m in said) == 2
    assert sum(m.endswith(f"-> {folder}") for m in said) == 1  # built once
    assert sorted(p.name for p in cache.iterdir()) == [folder.name]  # no lock or temporary left


def test_a_full_disk_keeps_the_old_segments_and_names_the_bytes_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 80)
    cfg = segment_config(max_seq_len=32)
    out = tmp_path / "seg"
    build_segments([corpus], out, cfg)
    before = folder_digest(out)
    flush = SplitWriter.flush

    def flush_then_full(self: SplitWriter) -> None:  # some bytes reach the disk, then no more
        flush(self)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(SplitWriter, "flush", flush_then_full)
    monkeypatch.setattr(files, "_free_bytes", lambda path: 1000)
    with pytest.raises(DiskFullError) as e:
        build_segments([corpus], out, cfg)
    assert folder_digest(out) == before
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{out}: the disk filled up")
    assert e.value.needed >= corpus.stat().st_size and f"{e.value.needed:,} bytes" in message
    cache = tmp_path / "cache"
    with pytest.raises(DiskFullError, match=str(cache)):
        prepare_segments([corpus], None, cache, cfg)
    assert list(cache.iterdir()) == []  # no half-built folder, temporary or lock holds space
    monkeypatch.undo()  # space was freed: the next run builds it
    folder = prepare_segments([corpus], None, cache, cfg)
    assert SegmentData(folder, "train").meta["counts"]["documents"] == 80
