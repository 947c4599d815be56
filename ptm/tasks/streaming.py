"""Predicting a task file of any size: read, encode, predict and write a chunk of rows at a time,
so memory stays flat in the file's size (a 50,000-row test B is never held whole).

Every step is the one fine-tuning runs on its test file, applied to a chunk: the file is read by
`ptm.tasks.tables.Table` (its UTF-8, NUL and field-count checks, the task's headerless
``columns``), each chunk's text is encoded by the kind (`encode_text`, then `encode`: truncation,
pairs, token windows) and predicted by the kind (`predict`, batches sorted by length within the
chunk), and its answers are appended to the submission files. A row's token windows never
straddle two chunks, since chunks are cut between rows. The checks fine-tuning makes on a test
file give the same one-line errors here: a missing column, a label column in a text-only test
file, an empty text, an empty or repeated id (`check_unique_ids`, across chunks too — the only
state kept from chunk to chunk is the ids seen, a few bytes a row).

The files are those a run writes into ``predictions/<task>/`` — ``submission.csv``,
``probabilities.csv`` for kinds that predict probabilities, the ``{"id", "label"}`` lines of a
``submission_format: jsonl`` task — written by the kind's own `write_submission` for each chunk
and appended (`AppendedFiles`), so they cannot drift from a run's.

Chunked batches differ from a whole-file run's only in which rows share a batch (and so its
padded width): probabilities equal to float rounding (so the answers too, but for a near-tie);
with one chunk holding the whole file and the run's ``eval_batch_size`` they are the same bytes.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ptm.models.heads import TaskModel
from ptm.progress import format_count
from ptm.tasks.inference import Prediction
from ptm.tasks.loading import (
    UNKNOWN_WARNING,
    check_unique_ids,
    read_rows,
    read_split,
    task_table,
)
from ptm.tasks.splits import RawSplit, Split, TaskData
from ptm.tasks.tables import TextEncoder

log = logging.getLogger(__name__)


def raw_chunks(
    task: TaskData, path: Path, encoder: TextEncoder, chunk_rows: int
) -> Iterator[RawSplit]:
    """The rows of a test file, ``chunk_rows`` at a time, read and checked as fine-tuning reads
    its test file (`ptm.tasks.loading.read_split`) and encoded to token indices by the kind.

    A kind whose answers may ride in the test file (tokens) has them ignored here: prediction
    needs the text only.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows}; use a positive number")
    cfg, kind = task.cfg, task.kind
    table = task_table(cfg, path)
    text_cols = [table.column(c) for c in kind.text_columns(cfg)]
    id_col = None if cfg.id_column is None else table.column(cfg.id_column)
    if cfg.label_column in table.header and not kind.answers_in_test_file:
        _raise_as_fine_tuning_does(task, path, encoder)
    seen: dict[str, int] = {}  # id -> its line, across chunks
    rows_read = 0
    for lines, rows in _rechunk(table.batches(), chunk_rows):
        counts: Counter = Counter()
        text_a, text_b, lengths = read_rows(
            cfg, kind, encoder, path, lines, rows, text_cols, counts
        )
        raw = RawSplit(path, lines, text_a, text_b, None, lengths, dict(counts))
        if id_col is not None:
            raw.ids = np.array([r[id_col].strip() for r in rows], dtype=object)
            _check_ids(task, raw, seen)
        rows_read += len(rows)
        yield raw
    if rows_read == 0:
        _raise_as_fine_tuning_does(task, path, encoder)
    if table.blank_lines:
        log.warning("task %s: skipped %d empty line(s) in %s", cfg.name, table.blank_lines, path)


def _raise_as_fine_tuning_does(task: TaskData, path: Path, encoder: TextEncoder) -> None:
    """The error fine-tuning gives this test file (a label column in a text-only test file; no
    rows): `read_split` raises it before it holds a row, so the message is the same one."""
    answers = "optional" if task.kind.answers_in_test_file else "none"
    read_split(task.cfg, task.kind, path, encoder, answers, None)
    raise AssertionError(f"read_split accepted {path}, which the chunked reader refused")


def _rechunk(
    batches: Iterator[tuple[np.ndarray, list[list[str]]]], size: int
) -> Iterator[tuple[np.ndarray, list[list[str]]]]:
    """``(lines, rows)`` batches of any size -> batches of exactly ``size`` rows (the last one
    shorter)."""
    lines: list[np.ndarray] = []
    rows: list[list[str]] = []
    held = 0
    for batch_lines, batch_rows in batches:
        at = 0
        while at < len(batch_rows):
            take = min(size - held, len(batch_rows) - at)
            lines.append(batch_lines[at : at + take])
            rows += batch_rows[at : at + take]
            held += take
            at += take
            if held == size:
                yield np.concatenate(lines), rows
                lines, rows, held = [], [], 0
    if held:
        yield np.concatenate(lines), rows


def _check_ids(task: TaskData, raw: RawSplit, seen: dict[str, int]) -> None:
    """`check_unique_ids` within the chunk, and against the ids of the chunks before it (as a
    two-row split: the id's first line and this one, so the message is the same)."""
    check_unique_ids(task.cfg, raw)
    for value, line in zip(raw.ids, raw.lines, strict=True):
        if value in seen:
            pair = RawSplit(
                raw.path, np.array([seen[value], line]), [], None, None, np.zeros(0), {}
            )
            pair.ids = np.array([value, value], dtype=object)
            check_unique_ids(task.cfg, pair)
        seen[value] = int(line)


@dataclass
class FileResult:
    """What predicting one file produced."""

    task: str
    path: Path
    rows: int
    seconds: float
    files: dict[str, str]  # what -> path, as a run's ``predictions`` entry names them
    stats: dict[str, int] = field(default_factory=dict)  # examples, tokens, truncated, ...

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


class AppendedFiles:
    """A task's submission files, grown a chunk at a time. Each chunk's files are written by the
    kind itself (`write_submission`, exactly as a run writes its test predictions) into a
    scratch folder, then appended to the files in ``folder`` — a table without its header line
    after the first chunk — so the result has the bytes of one call over the whole file, whatever
    files and formats the kind writes."""

    HEADERLESS = ("submission_jsonl",)  # JSON lines: every line is a row

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scratch = folder / ".chunk"
        self.files: dict[str, str] = {}  # what -> path, as the run's ``predictions`` names them

    def add(self, task: TaskData, split: Split, prediction: Any, decision: dict) -> None:
        chunk = TaskData(task.cfg, task.kind, task.labels, {"test": split}, task.chance_loss)
        written = task.kind.write_submission(self.scratch, chunk, prediction, decision)
        for what, path in written.items():
            dest = self.folder / Path(path).name
            first = what not in self.files
            with open(path, "rb") as src, dest.open("wb" if first else "ab") as out:
                if not first and what not in self.HEADERLESS:
                    src.readline()
                shutil.copyfileobj(src, out)
            Path(path).unlink()
            self.files[what] = str(dest)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def predict_file(
    models: list[TaskModel],
    task: TaskData,
    decision: dict,
    path: Path,
    folder: Path,
    *,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    precision: str,
    batch_size: int,
    chunk_rows: int,
    padding: str = "auto",
) -> FileResult:
    """Predict every row of ``path`` for ``task`` and write its submission files into
    ``folder``, ``chunk_rows`` rows at a time; ``decision`` is what the run chose on dev (the
    multi-label threshold), as its ``finetune.json`` keeps it. Several ``models`` (the folds of a
    cross-validation) predict each chunk and their class probabilities are averaged
    (`average_predictions`), as the folds' test probabilities are."""
    encoder = TextEncoder(tokenizer)
    kind, pad_id = task.kind, tokenizer.pad_token_id
    files = AppendedFiles(folder)
    stats: Counter = Counter()
    start = time.perf_counter()
    try:
        for raw in raw_chunks(task, path, encoder, chunk_rows):
            split = kind.encode(task.cfg, "test", raw, None, tokenizer)
            predictions = [
                kind.predict(
                    model, task, split, device, precision, batch_size, pad_id, padding=padding
                )
                for model in models
            ]
            prediction = average_predictions(predictions, len(task.labels))
            files.add(task, split, prediction, decision)
            stats.update(split.stats)
            log.info(
                "task %s: %d rows predicted, %s rows/s",
                task.name,
                stats["rows"],
                format_count(stats["rows"] / max(time.perf_counter() - start, 1e-9)),
            )
    finally:
        files.close()
    seconds = time.perf_counter() - start
    _log_stats(task, path, stats)
    return FileResult(task.name, path, stats["rows"], seconds, files.files, dict(stats))


def average_predictions(predictions: list[Prediction], n_labels: int) -> Prediction:
    """One model's prediction as it is; several models' as the mean of their class
    probabilities, decided by its largest entry (kinds with `TaskKind.averaged`)."""
    if len(predictions) == 1:
        return predictions[0]
    probs = np.mean([p.probs for p in predictions], 0)
    return Prediction(None, np.bincount(probs.argmax(1), minlength=n_labels), probs=probs)


def _log_stats(task: TaskData, path: Path, stats: Counter) -> None:
    """What fine-tuning logs of a split, and its warning when the tokenizer does not know the
    text (`ptm.tasks.loading.read_task`)."""
    log.info(
        "task %s: %d rows -> %d examples from %s%s",
        task.name,
        stats["rows"],
        stats["examples"],
        path,
        "".join(f"; {k} {v}" for k, v in stats.items() if k not in ("rows", "examples")),
    )
    if stats["unknown_tokens"] / max(stats["tokens"], 1) > UNKNOWN_WARNING:
        log.warning(
            "task %s: %.0f%% of %s's tokens are unknown to the model's tokenizer — is this the "
            "task's file?",
            task.name,
            100 * stats["unknown_tokens"] / stats["tokens"],
            path,
        )
