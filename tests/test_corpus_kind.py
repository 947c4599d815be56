"""What a corpus holds, IDs or raw text, and one-line errors when it does not suit the tokenizer
or the other files (`ptm.data.corpus_kind`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptm.data.corpus_kind import corpus_kind, sniff_file
from ptm.data.segment_builder import build_segments
from ptm.data.tokenizer import (
    GOOGLE_SPECIALS,
    SPECIAL_TOKENS,
    build_tokenizer,
    build_wordpiece_tokenizer,
)
from ptm.errors import InputError
from tests.conftest import segment_config


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def wordpiece():
    return build_wordpiece_tokenizer([*GOOGLE_SPECIALS, *"诸葛亮是三国人。"], 64)


def test_the_first_non_empty_lines_decide_and_tables_are_read_through_their_text_column(
    tmp_path: Path,
) -> None:
    ids = write(tmp_path / "ids.txt", "\n\n2967 6758_339 2021\n")
    raw = write(tmp_path / "raw.txt", "\n诸葛亮是三国人。\n")
    # A Tianchi table saved on Windows: byte-order mark, CRLF, and a header that is not IDs.
    table = write(tmp_path / "train.csv", b"\xef\xbb\xbflabel\ttext\r\n3\t2967 6758\r\n")
    assert sniff_file(ids, "text") == ("ids", 3, b"2967 6758_339 2021")
    assert sniff_file(raw, "text") == ("text", 2, "诸葛亮是三国人。".encode())
    assert sniff_file(table, "text") == ("ids", 2, b"2967 6758")
    assert sniff_file(write(tmp_path / "empty.txt", "\n \n"), "text") is None
    assert corpus_kind([ids, table], "text", None) == "ids"
    assert corpus_kind([raw], "text", None) == "text"
    assert corpus_kind([tmp_path / "empty.txt", raw], "text", wordpiece()) == "text"


def test_raw_text_with_an_id_tokenizer_is_one_clear_error(tmp_path: Path) -> None:
    id_tok = build_tokenizer([*SPECIAL_TOKENS, "2967", "6758"], 32)
    raw = write(tmp_path / "raw.txt", "\n诸葛亮是三国人。\n")
    with pytest.raises(InputError, match=r"raw\.txt:2: raw text \('诸葛亮是三国人。'\) but the "
                       r"tokenizer \(m\) is an ID vocabulary — raw text needs a WordPiece"):  # fmt: skip
        build_segments([raw], tmp_path / "s", segment_config(), id_tok, tokenizer_source="m")


def test_ids_with_a_wordpiece_tokenizer_is_one_clear_error(tmp_path: Path) -> None:
    ids = write(tmp_path / "ids.txt", "2967 6758_339 2021\n")
    with pytest.raises(InputError, match=r"ids\.txt:1: anonymized IDs .* WordPiece vocabulary"):
        build_segments([ids], tmp_path / "s", segment_config(), wordpiece())


def test_mixed_kinds_and_a_segmenter_on_ids_are_one_clear_error(tmp_path: Path) -> None:
    ids = write(tmp_path / "ids.txt", "2967 6758 339\n")
    raw = write(tmp_path / "raw.txt", "诸葛亮\n")
    with pytest.raises(InputError, match=r"raw\.txt:1: raw text .* but .*ids\.txt holds IDs"):
        build_segments([ids, raw], tmp_path / "s", segment_config())
    with pytest.raises(InputError, match=r"ids\.txt: data.word_segmenter=jieba .* holds IDs"):
        build_segments([ids], tmp_path / "s", segment_config(), word_segmenter="jieba")
    assert not list(tmp_path.glob("s*"))  # nothing half built is left
