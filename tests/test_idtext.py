"""Parsing ID text: the vectorised parser against a plain-Python reference, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptm.data.idtext import SourceStats, iter_text_chunks, parse_id_lines
from ptm.errors import InputError


def reference(text: str) -> tuple[list[int], list[bool], list[int]]:
    ids, starts, lengths = [], [], []
    rows = text.split("\n")
    if text == "" or text.endswith("\n"):
        rows = rows[:-1]  # an empty buffer has no line; a final newline ends the last one
    for line in rows:
        n = 0
        for word in line.split():
            pieces = word.split("_")
            ids += [int(p) for p in pieces]
            starts += [True] + [False] * (len(pieces) - 1)
            n += len(pieces)
        lengths.append(n)
    return ids, starts, lengths


words = st.lists(st.integers(0, 10**9), min_size=1, max_size=3).map(lambda w: "_".join(map(str, w)))
lines = st.lists(st.lists(words, max_size=8).map(" ".join), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(lines=lines, trailing_newline=st.booleans())
def test_parser_matches_reference(lines: list[str], trailing_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    parsed = parse_id_lines(text.encode(), Path("x.txt"), 1)
    ids, starts, lengths = reference(text)
    assert parsed.ids.tolist() == ids
    assert parsed.word_start.tolist() == starts
    assert parsed.line_lengths.tolist() == lengths
    assert parsed.has_word_joins == ("_" in text)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("1 2 3\n4 x5 6\n", 2, "'x5'"),
        ("1 2\n\n3 4.5\n", 3, "'4.5'"),
        ("1 2_ 3\n", 1, "'_'"),
        ("7 _8\n", 1, "'_8'"),
        ("1 12345678901234567890\n", 1, "too large"),
    ],
)
def test_bad_tokens_name_file_line_and_token(text: str, line: int, fragment: str) -> None:
    with pytest.raises(InputError) as e:
        parse_id_lines(text.encode(), Path("corpus.txt"), 1)
    assert e.value.line == line
    message = str(e.value)
    assert message.startswith(f"corpus.txt:{line}:")
    assert fragment in message
    assert "\n" not in message


def _read(path: Path, chunk_bytes: int = 1 << 20) -> tuple[str, SourceStats]:
    stats = SourceStats(path)
    text = b"".join(chunk for _, chunk in iter_text_chunks(path, stats, chunk_bytes=chunk_bytes))
    return text.decode(), stats


def test_crlf_and_bom_are_accepted_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbf1 2 3\r\n4 5\r\n")
    text, stats = _read(path)
    assert text == "1 2 3\n4 5\n"
    assert stats.crlf and stats.bom and stats.lines == 2


def test_chunking_keeps_lines_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("".join(f"{i} {i + 1} {i + 2}\n" for i in range(500)) + "9 9")
    stats = SourceStats(path)
    chunks = list(iter_text_chunks(path, stats, chunk_bytes=64))
    assert len(chunks) > 10
    for first_line, chunk in chunks:
        first = chunk.split(b"\n", 1)[0]
        assert first == (
            b"9 9"
            if first_line == 501
            else f"{first_line - 1} {first_line} {first_line + 1}".encode()
        )
    assert stats.lines == 501
    assert len(stats.sha256) == 64


def test_tianchi_csv_text_column(tmp_path: Path) -> None:
    path = tmp_path / "train_set.csv"
    path.write_text("label\ttext\n2\t10 11 12\n0\t13 14\n")
    text, _ = _read(path)
    assert text == "10 11 12\n13 14\n"


def test_tianchi_errors(tmp_path: Path) -> None:
    no_header = tmp_path / "a.csv"
    no_header.write_text("2\t10 11\n")
    with pytest.raises(InputError, match=r"a\.csv:1: no 'text' column"):
        _read(no_header)
    ragged = tmp_path / "b.csv"
    ragged.write_text("label\ttext\n1\t5 6\n1\t5 6\textra\n")
    with pytest.raises(InputError, match=r"b\.csv:3: 3 tab-separated fields"):
        _read(ragged)
    empty = tmp_path / "c.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        _read(empty)
    with pytest.raises(InputError, match="no such file"):
        _read(tmp_path / "missing.txt")


def test_line_numbers_in_tables_count_the_header(tmp_path: Path) -> None:
    from ptm.data.idtext import parse_id_lines as parse

    path = tmp_path / "t.csv"
    path.write_text("label\ttext\n1\t5 6\n1\t7 oops\n")
    first_line, chunk = next(iter_text_chunks(path, SourceStats(path)))
    with pytest.raises(InputError) as e:
        parse(chunk, path, first_line)
    assert e.value.line == 3


def test_parser_throughput_shape() -> None:
    """A multi-megabyte chunk parses to the right count (speed itself lives in `make bench`)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7000, 200_000)
    text = "\n".join(" ".join(map(str, ids[i : i + 1000])) for i in range(0, len(ids), 1000)) + "\n"
    parsed = parse_id_lines(text.encode(), Path("big.txt"), 1)
    assert np.array_equal(parsed.ids, ids)
    assert parsed.line_lengths.tolist() == [1000] * 200
