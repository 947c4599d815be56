"""Reading anonymized token-ID text fast, in bounded memory, with errors that name file and line.

Two layouts are read:

* **plain corpus** — one document per line, IDs separated by spaces or tabs. The characters of a
  multi-character word may be joined by ``_`` (``2967_6758 339``): that is how ptm keeps word
  boundaries for whole-word masking. Without ``_`` every ID is its own word.
* **Tianchi CSV** (``.csv``/``.tsv``) — tab-separated with a header; the ``text`` column holds the
  IDs (``label\\ttext`` in ``train_set.csv``, ``text`` alone in ``test_a.csv``).

Parsing is vectorised with numpy over multi-megabyte chunks (tens of millions of IDs per second
on one core) instead of ``str.split`` per token, because pretraining corpora reach gigabytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptm.errors import InputError

CHUNK_BYTES = 8 << 20
_BOM = b"\xef\xbb\xbf"
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_FIX_IDS = "the text must be integer IDs separated by spaces (anonymize raw text first)"


@dataclass
class ParsedLines:
    """IDs of a run of lines: flat ``ids`` with ``line_lengths`` IDs per line (0 for empty)."""

    ids: np.ndarray  # int64 (n_ids,)
    word_start: np.ndarray  # bool (n_ids,): the ID begins a word
    line_lengths: np.ndarray  # int64 (n_lines,)
    has_word_joins: bool


@dataclass
class SourceStats:
    """What reading one file found: filled in while its chunks stream past."""

    path: Path
    sha256: str = ""
    lines: int = 0
    crlf: bool = False
    bom: bool = False


def parse_id_lines(buf: bytes, path: Path, first_line: int) -> ParsedLines:
    """Parse newline-separated lines of IDs; ``first_line`` is the file line number of line 0."""
    b = np.frombuffer(buf, dtype=np.uint8)
    digit = (b - 48) < 10  # uint8 wrap-around makes every non-digit >= 10
    newline = b == 10
    join = b == 95  # "_"
    ok = digit | newline | join | (b == 32) | (b == 9)
    if not ok.all():
        _raise_at(buf, int(np.argmin(ok)), path, first_line, "a character that is not an ID")

    n_lines = int(newline.sum()) + (0 if len(b) == 0 or b[-1] == 10 else 1)
    prev_digit = np.zeros_like(digit)
    prev_digit[1:] = digit[:-1]
    next_digit = np.zeros_like(digit)
    next_digit[:-1] = digit[1:]
    has_joins = bool(join.any())
    if has_joins:
        stray = join & ~(prev_digit & next_digit)
        if stray.any():
            _raise_at(
                buf, int(np.argmax(stray)), path, first_line, "a '_' that does not join two IDs"
            )

    start_mask = digit & ~prev_digit
    starts = np.flatnonzero(start_mask)
    ends = np.flatnonzero(digit & ~next_digit) + 1
    lengths = ends - starts
    if len(lengths) and lengths.max() > 18:
        _raise_at(
            buf, int(starts[np.argmax(lengths)]), path, first_line, "an ID too large to store"
        )

    digit_pos = np.flatnonzero(digit)
    token_of_digit = np.cumsum(start_mask[digit_pos]) - 1
    exponent = ends[token_of_digit] - 1 - digit_pos
    contrib = (b[digit_pos].astype(np.int64) - 48) * _POW10[exponent]
    ids = (
        np.add.reduceat(contrib, np.flatnonzero(start_mask[digit_pos]))
        if len(starts)
        else np.zeros(0, np.int64)
    )
    word_start = np.ones(len(starts), dtype=bool)
    if has_joins:
        word_start[starts > 0] = b[starts[starts > 0] - 1] != 95
    line_of_id = np.searchsorted(np.flatnonzero(newline), starts)
    line_lengths = np.bincount(line_of_id, minlength=n_lines).astype(np.int64)
    return ParsedLines(ids, word_start, line_lengths, has_joins)


def _raise_at(buf: bytes, pos: int, path: Path, first_line: int, what: str) -> None:
    line = first_line + buf.count(b"\n", 0, pos)
    lo = buf.rfind(b"\n", 0, pos) + 1
    hi = buf.find(b"\n", pos)
    text = buf[lo : hi if hi >= 0 else len(buf)]
    at = pos - lo
    token_lo = max(text.rfind(b" ", 0, at), text.rfind(b"\t", 0, at)) + 1
    token_hi = min(x for x in (text.find(b" ", at), text.find(b"\t", at), len(text)) if x >= 0)
    token = text[token_lo:token_hi].decode("utf-8", errors="replace")[:40]
    raise InputError(path, f"{what}: {token!r} (column {at + 1})", _FIX_IDS, line=line)


def iter_line_chunks(
    path: Path, stats: SourceStats, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first_line_number, bytes)`` chunks that end on a line boundary.

    A UTF-8 byte-order mark and CRLF line ends are accepted (files saved on Windows have them) and
    noted in ``stats``; the sha256 of the raw bytes is computed on the way.
    """
    digest = hashlib.sha256()
    line_no = 1
    tail = b""
    with _open(path) as f:
        first = True
        while True:
            block = f.read(chunk_bytes)
            digest.update(block)
            if first:
                first = False
                if block.startswith(_BOM):
                    stats.bom = True
                    block = block[len(_BOM) :]
            if not block:
                break
            block = tail + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                tail = block
                continue
            tail = block[cut:]
            chunk = _strip_cr(block[:cut], stats)
            yield line_no, chunk
            line_no += chunk.count(b"\n")
    if tail:
        chunk = _strip_cr(tail, stats)
        yield line_no, chunk
        line_no += 1
    stats.sha256 = digest.hexdigest()
    stats.lines = line_no - 1


def _strip_cr(chunk: bytes, stats: SourceStats) -> bytes:
    if b"\r" in chunk:
        stats.crlf = True
        chunk = chunk.replace(b"\r\n", b"\n")
    return chunk


def _open(path: Path):
    if not path.is_file():
        raise InputError(
            path, "no such file", "check the path (relative paths start at the current folder)"
        )
    return path.open("rb")


def is_table(path: Path) -> bool:
    """Tianchi-style tables are ``.csv``/``.tsv`` with a header; anything else is a plain corpus."""
    return path.suffix.lower() in {".csv", ".tsv"}


def read_header(path: Path, first_chunk: bytes, column: str) -> tuple[list[str], int]:
    """The header's column names and the index of ``column``, or a clear error."""
    header = first_chunk.split(b"\n", 1)[0].decode("utf-8", errors="replace").split("\t")
    if column not in header:
        raise InputError(
            path,
            f"no '{column}' column in the header {header[:4]}",
            f"a Tianchi file starts with a tab-separated header such as 'label\\t{column}'",
            line=1,
        )
    return header, header.index(column)


def iter_text_chunks(
    path: Path, stats: SourceStats, text_column: str = "text", chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yield chunks holding only the ID text of each line, one line per document.

    Plain corpora pass through unchanged. For tables the header is checked and the ``text_column``
    field of every row is cut out, keeping the row count so line numbers stay right.
    """
    chunks = iter_line_chunks(path, stats, chunk_bytes)
    if not is_table(path):
        yield from chunks
        return
    column = -1
    for line_no, chunk in chunks:
        rows = chunk.split(b"\n")
        if rows[-1] == b"":
            rows.pop()
        if column < 0:
            header, column = read_header(path, chunk, text_column)
            rows, line_no = rows[1:], line_no + 1
            n_fields = len(header)
        texts = []
        for i, row in enumerate(rows):
            fields = row.split(b"\t")
            if len(fields) != n_fields:
                raise InputError(
                    path,
                    f"{len(fields)} tab-separated fields where the header has {n_fields}",
                    "every row needs one value per header column, separated by single tabs",
                    line=line_no + i,
                )
            texts.append(fields[column])
        if texts:
            yield line_no, b"\n".join(texts) + b"\n"
    if column < 0:
        raise InputError(
            path, "the file is empty", "a Tianchi file needs a header and rows", line=1
        )
