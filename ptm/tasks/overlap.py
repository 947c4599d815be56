"""How much of a task's text a pretraining corpus holds: the task files and the corpus read into
token sequences and searched with `ptm.data.overlap` (``python -m pretrain.overlap``)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ptm.data.idtext import SourceStats, iter_text_chunks, parse_id_lines
from ptm.data.overlap import HeldOutIndex
from ptm.errors import InputError
from ptm.tasks.tables import Table


def text_tokens(text: str) -> np.ndarray:
    """What is compared: the IDs of anonymized text (``_`` word joins read as spaces), or the
    characters of raw text with whitespace removed (tokenizer-free, so any model's corpus and
    task files compare alike)."""
    text = text.strip()
    if _ID_TEXT.fullmatch(text):
        return np.array(text.replace("_", " ").split(), np.int64)
    return np.frombuffer("".join(text.split()).encode("utf-32-le"), np.uint32).astype(np.int64)


_ID_TEXT = re.compile(r"[\d _\t]*\d[\d _\t]*")


def read_texts(table: Table, columns: list[str]) -> list[np.ndarray]:
    """The given text columns of every row of a task table (`ptm.tasks.loading.task_table`:
    headed, or by the task's columns), as compared tokens."""
    cols = [table.column(c) for c in columns]
    return [text_tokens(row[c]) for _, rows in table.batches() for row in rows for c in cols]


def corpus_documents(
    paths: list[Path], text_column: str, chunk_docs: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The corpus as runs of documents ``(ids back to back, lengths)``, streamed: plain files
    one document per line, tables (``.csv``/``.tsv``) by their ``text_column``. ID text goes
    through the fast chunk parser; a file whose first line is not IDs is read as raw text."""
    for path in paths:
        stats = SourceStats(path)
        chunks = iter_text_chunks(path, stats, text_column)
        first = next(chunks, None)
        if first is None:
            continue
        head = first[1].split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
        if not head or _ID_TEXT.fullmatch(head):
            for line_no, chunk in itertools.chain([first], chunks):
                parsed = parse_id_lines(chunk, path, line_no)
                yield parsed.ids, parsed.line_lengths
            continue
        for line_no, chunk in itertools.chain([first], chunks):
            try:
                lines = chunk.decode("utf-8").split("\n")
            except UnicodeDecodeError as e:
                line = line_no + chunk.count(b"\n", 0, e.start)
                raise InputError(
                    path, f"not UTF-8 text ({e.reason})", "save it as UTF-8", line
                ) from e
            for lo in range(0, len(lines), chunk_docs):
                yield _join([text_tokens(t) for t in lines[lo : lo + chunk_docs]])


def _join(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not docs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(docs), np.array([len(d) for d in docs], np.int64)


def measure_overlap(
    corpus: list[Path], text_column: str, held_out: dict[str, list[np.ndarray]], min_len: int
) -> dict[str, dict[str, float]]:
    """For every named set of held-out texts: how many rows, how many were checked (long
    enough), how many occur inside a corpus document, and that share of the checked ones."""
    names = list(held_out)
    texts = [t for name in names for t in held_out[name]]
    owner = np.repeat(np.arange(len(names)), [len(held_out[n]) for n in names])
    index = HeldOutIndex(texts, min_len)
    found = np.zeros(len(texts), bool)
    for ids, lengths in corpus_documents(corpus, text_column):
        for _, t in index.scan(ids, lengths):
            found[t] = True
    report = {}
    for i, name in enumerate(names):
        mine = owner == i
        checked = int((index.checked & mine).sum())
        inside = int((found & mine).sum())
        report[name] = {
            "rows": int(mine.sum()),
            "checked": checked,
            "contained": inside,
            "share": inside / checked if checked else 0.0,
        }
    return report
