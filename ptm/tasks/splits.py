"""What a task's data is once read: `RawSplit` (a file's rows as tokens, before the kind
encodes them), `Split` (encoded examples, ready to batch) and `TaskData` (a task's splits with its
kind and labels). Reading fills them (`ptm.tasks.loading`); the kinds encode and predict them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptm.tasks.config import TaskConfig

IGNORE = -100  # label of positions that carry no answer (specials, padding, sub-word pieces)


@dataclass
class Split:
    """One split of one task, encoded: every example is a full model input ([CLS] ... [SEP]).

    A token-task row longer than the model becomes several examples (windows); ``row`` maps each
    example back to its row and ``word_at`` each position to its word, so predictions are
    reassembled per row with one tag per word.
    """

    name: str
    path: Path
    input_ids: list[np.ndarray]  # per example (length,) int32 vocabulary indices
    segment_b: np.ndarray  # (n,) first position of the second text; = length for one text
    row: np.ndarray  # (n,) row of the split each example comes from
    lines: np.ndarray  # (n_rows,) file line of each row, for messages
    ids: np.ndarray | None = None  # (n_rows,) the id of each row as written (id_column), or None
    labels: np.ndarray | None = None  # (n,) class index, or (n, C) 0/1 for multi-label; None
    # when there are no answers
    tags: list[np.ndarray] | None = None  # tokens: per example (length,) tag index or IGNORE
    word_at: list[np.ndarray] | None = None  # tokens: per example (length,) word index or -1
    row_words: np.ndarray | None = None  # tokens: (n_rows,) words per row
    row_answers: list[np.ndarray] | None = None  # tokens: per row, the tag index of each word
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_rows(self) -> int:
        return len(self.lines)

    @property
    def has_answers(self) -> bool:
        return self.labels is not None or self.tags is not None

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), np.int64, len(self.input_ids))

    def select_rows(self, rows: np.ndarray, name: str) -> Split:
        """The examples of the given rows (sorted), renumbered from 0."""
        rows = np.sort(rows)
        keep = np.flatnonzero(np.isin(self.row, rows))
        renumber = np.full(self.n_rows, -1, np.int64)
        renumber[rows] = np.arange(len(rows))

        def pick(items: list[np.ndarray] | None) -> list[np.ndarray] | None:
            return None if items is None else [items[i] for i in keep]

        return Split(
            name=name,
            path=self.path,
            input_ids=[self.input_ids[i] for i in keep],
            segment_b=self.segment_b[keep],
            row=renumber[self.row[keep]],
            lines=self.lines[rows],
            ids=None if self.ids is None else self.ids[rows],
            labels=None if self.labels is None else self.labels[keep],
            tags=pick(self.tags),
            word_at=pick(self.word_at),
            row_words=None if self.row_words is None else self.row_words[rows],
            row_answers=None if self.row_answers is None else [self.row_answers[r] for r in rows],
            stats={"rows": len(rows), "examples": len(keep)},
        )

    def row_labels(self) -> np.ndarray:
        """Per-text answers per row (one example per row for these kinds)."""
        assert self.labels is not None, "row_labels() needs answers"
        return self.labels

    def row_tags(self) -> list[np.ndarray]:
        """Token-task answers per row: one tag index per word."""
        assert self.row_answers is not None, "row_tags() needs tags"
        return self.row_answers


@dataclass
class TaskData:
    cfg: TaskConfig
    kind: Any  # its ptm.tasks.kinds.TaskKind: everything that differs between kinds
    labels: list[str]  # class names (or BIO tags) in index order
    splits: dict[str, Split]  # train, dev and, when given, test
    chance_loss: float  # entropy of the training labels: the loss of predicting their frequencies

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass
class RawSplit:
    """A split as read, before the kind encodes it: each row's tokens, answers and file line.

    ``text_a`` pairs each row's token indices (of its text, or of a pair's first text) with the
    token at which each of its words starts (-1: the word has no token; empty when the kind does
    not track words); ``text_b`` holds a pair's second texts; ``answers`` what the kind parsed
    from each row's answer field (a label, a list of tags, a list of labels). The texts hold
    only the tokens the kind can use (`TaskKind.clip`); ``lengths`` counts each row's tokens as
    written and ``counts`` the split's tokens and unknown tokens, for the log.
    """

    path: Path
    lines: np.ndarray
    text_a: list[tuple[np.ndarray, np.ndarray]]
    text_b: list[np.ndarray] | None
    answers: list[Any] | None
    lengths: np.ndarray  # (n_rows,) tokens of a row before clipping, both texts
    counts: dict[str, int]  # rows, tokens, unknown_tokens
    ids: np.ndarray | None = None  # the id column, as written, when the task has one
    answer_path: Path | None = None  # where the answers come from, for messages
    answer_lines: np.ndarray | None = None
    kept_rows: np.ndarray | None = None  # the rows read, when limited (else all)

    @property
    def where(self) -> tuple[Path, np.ndarray]:
        """The file and line numbers the answers were read from."""
        lines = self.answer_lines if self.answer_lines is not None else self.lines
        return self.answer_path or self.path, lines
