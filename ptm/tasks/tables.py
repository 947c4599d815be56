"""Reading tab-separated task tables and encoding their text, with errors naming file and line.

Text is encoded by the fast numpy parser of `ptm.data.idtext` when the tokenizer is an ID vocabulary
(the tokenizer's Python bindings are ~100x slower on 200,000 long documents), and by the tokenizer
itself otherwise (a WordPiece model on real text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from ptm.data.idtext import parse_id_lines
from ptm.data.tokenizer import IdMapper, is_id_vocabulary
from ptm.errors import InputError

_BATCH_ROWS = 4096
_FIX_ROW = "every row needs one value per header column, separated by single tabs"
_FIX_ROW_HEADERLESS = (
    "every row needs one value per column, separated by single tabs (a tab inside a text must go)"
)
_FIX_ENCODING = "save the file as UTF-8 (e.g. iconv -f GB18030 -t UTF-8 in.csv > out.csv)"


class Table:
    """A tab-separated file, read in batches of rows with their line numbers.

    The first line names the columns, unless the task names them (``columns``): the files of the
    Tianchi multi-task competition have no header, and a test file there holds every column but
    the label — so a headerless file may leave out the ``optional`` column, decided by its first
    row and then required of every row.

    Every line is checked as it is read, the header included: bytes that are not UTF-8 and NUL
    bytes (a binary file, or UTF-16 text) are errors naming the line and column, never a
    traceback and never text silently changed. A UTF-8 byte-order mark and CRLF line ends are
    accepted. An empty line in a table of two columns or more cannot be a row (a row has tabs):
    it is skipped and counted in ``blank_lines`` for the log. In a one-column table it could be
    an empty document, and dropping it would shift every later answer of a submission: there it
    is an error, except at the end of the file.
    """

    def __init__(
        self, path: Path, columns: list[str] | None = None, optional: str | None = None
    ) -> None:
        path = Path(path)
        if not path.is_file():
            hint = "run `make data` first" if "embedded" in str(path) else "check the path"
            raise InputError(path, "no such file", hint)
        self.path = path
        self.named = columns is None  # the first line is the header
        self.blank_lines = 0
        with self._open() as f:
            first, line = f.readline(), 1
            while not self.named and first and not first.strip():
                first, line = f.readline(), line + 1
        if not first.strip():
            fix = (
                "a Tianchi file starts with a header line"
                if self.named
                else f"give one row per line: {_tabs(columns)}"
            )
            raise InputError(path, "the file is empty", fix, line=line)
        fields = self._checked(first, line).rstrip("\n").split("\t")
        if self.named:
            self.header = fields
        else:
            self.header = list(columns)
            if optional in columns and len(fields) == len(columns) - 1:
                self.header.remove(optional)
            if len(fields) != len(self.header):
                raise InputError(
                    path,
                    f"{len(fields)} tab-separated fields where the task's columns are "
                    f"{_tabs(columns)}"
                    + (f" ({optional!r} may be left out)" if optional in columns else ""),
                    "check that this is the task's file, or set the task's columns to the file's "
                    "layout (columns: null when the first line is a header)",
                    line=line,
                )

    def _open(self):
        # utf-8-sig drops a byte-order mark; universal newlines turn CRLF into LF. Bytes that
        # are not UTF-8 become lone surrogates, so `_checked` reports them with their line.
        return self.path.open(encoding="utf-8-sig", errors="surrogateescape", newline=None)

    def _checked(self, text: str, line: int) -> str:
        if not text.isascii():  # ID text is ASCII: the common case costs one fast scan
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                byte = ord(text[e.start]) - 0xDC00
                utf16 = line == 1 and text.startswith(("\udcff\udcfe", "\udcfe\udcff"))
                raise InputError(
                    self.path,
                    f"{'UTF-16 text' if utf16 else 'not UTF-8 text'}: byte 0x{byte:02x} at "
                    f"column {e.start + 1}",
                    _FIX_ENCODING.replace("GB18030", "UTF-16") if utf16 else _FIX_ENCODING,
                    line=line,
                ) from e
        if "\x00" in text:
            raise InputError(
                self.path,
                f"a NUL byte at column {text.index(chr(0)) + 1}: not a text table",
                "check that this is the tab-separated text file you meant: text has no NUL "
                "bytes (a binary, corrupt or UTF-16 file does)",
                line=line,
            )
        return text

    def column(self, name: str) -> int:
        if name not in self.header and not self.named:
            raise InputError(
                self.path,
                f"the rows have no '{name}' column: their fields are {_tabs(self.header)}",
                f"give every row the task's columns, '{name}' included (train and dev rows carry "
                "the label; a test file may leave it out)",
                line=self._first_row_line(),
            )
        if name not in self.header:
            raise InputError(
                self.path,
                f"no '{name}' column in the header {self.header[:6]}",
                f"the first line must name the columns, tab-separated, including '{name}' "
                "(or set the task's *_column to the name the file uses)",
                line=1,
            )
        return self.header.index(name)

    def count_rows(self) -> int:
        with self._open() as f:
            return sum(1 for line in f if line.strip()) - self.named

    def _first_row_line(self) -> int:
        with self._open() as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip() and (line_no > 1 or not self.named):
                    return line_no
        return 1 + self.named

    def spread(self, limit: int | None) -> np.ndarray | None:
        """``limit`` row numbers spread evenly over the file (order kept), or None for all rows.

        Evenly spread rather than the first ``limit``: files sorted by label would otherwise
        give a smoke run a single class.
        """
        if limit is None:
            return None
        n = self.count_rows()
        return None if limit >= n else np.unique(np.linspace(0, n - 1, limit).round().astype(int))

    def batches(
        self, keep: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, list[list[str]]]]:
        """``(file line numbers, rows of fields)`` of every row (or the rows numbered in ``keep``,
        counted from 0 after the header); empty lines are skipped and counted in ``blank_lines``
        (in a one-column table, only at the end of the file)."""
        n_fields = len(self.header)
        lines: list[int] = []
        rows: list[list[str]] = []
        blank_at, self.blank_lines = 0, 0
        wanted = None if keep is None else set(keep.tolist())
        row_no = -1
        with self._open() as f:
            if self.named:
                f.readline()
            for line_no, raw in enumerate(f, start=1 + self.named):
                text = self._checked(raw, line_no).rstrip("\n")
                if not text.strip():
                    blank_at = blank_at or line_no
                    self.blank_lines += 1
                    continue
                if blank_at and n_fields == 1:
                    raise InputError(
                        self.path,
                        "an empty row",
                        "delete the empty line (or give the document's text)",
                        line=blank_at,
                    )
                row_no += 1
                if wanted is not None and row_no not in wanted:
                    continue
                fields = text.split("\t")
                if len(fields) != n_fields:
                    where = "the header has" if self.named else "the task's columns are"
                    columns = n_fields if self.named else _tabs(self.header)
                    raise InputError(
                        self.path,
                        f"{len(fields)} tab-separated fields where {where} {columns}",
                        _FIX_ROW if self.named else _FIX_ROW_HEADERLESS,
                        line=line_no,
                    )
                lines.append(line_no)
                rows.append(fields)
                if len(rows) == _BATCH_ROWS:
                    yield np.array(lines), rows
                    lines, rows = [], []
        if rows:
            yield np.array(lines), rows


def _tabs(columns: list[str]) -> str:
    """``id, text, label``: column names as a message shows them."""
    return ", ".join(columns)


class TextEncoder:
    """Text field -> vocabulary indices (no special tokens), by the fastest correct route."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids_only = is_id_vocabulary(tokenizer)
        self.to_index = IdMapper(tokenizer) if self.ids_only else None

    def texts(self, texts: list[str], path: Path, lines: np.ndarray) -> list[np.ndarray]:
        for text, line in zip(texts, lines, strict=True):
            if not text.strip():
                raise InputError(
                    path, "empty text", "every row needs at least one ID; drop the row", int(line)
                )
        if not self.ids_only:
            ids = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
            return [np.asarray(x, np.int32) for x in ids["input_ids"]]
        if np.any(np.diff(lines) != 1):  # a subset of rows: parse each on its own line number
            return [self.texts([t], path, lines[i : i + 1])[0] for i, t in enumerate(texts)]
        parsed = parse_id_lines("\n".join(texts).encode(), path, int(lines[0]))
        mapped = self.to_index(parsed.ids).astype(np.int32)
        return np.split(mapped, np.cumsum(parsed.line_lengths)[:-1])

    def words(
        self, texts: list[str], path: Path, lines: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row: token indices and the first token of each word (-1: the word has none)."""
        if self.ids_only:
            return [(ids, np.arange(len(ids))) for ids in self.texts(texts, path, lines)]
        self.texts(texts, path, lines)  # the empty-text check
        words = [t.split() for t in texts]
        enc = self.tokenizer(
            words, is_split_into_words=True, add_special_tokens=False, return_attention_mask=False
        )
        out = []
        for i, w in enumerate(words):
            word_ids = np.array([-1 if x is None else x for x in enc.word_ids(i)], np.int64)
            first = np.full(len(w), -1, np.int64)
            starts = np.flatnonzero(np.r_[True, word_ids[1:] != word_ids[:-1]])
            first[word_ids[starts]] = starts
            out.append((np.asarray(enc["input_ids"][i], np.int32), first))
        return out
