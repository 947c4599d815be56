"""One labelled task's settings, typed. Every default lives in ``conf/task/_base.yaml``, which
each task file extends (``defaults: [_base@<name>]``) and which a task named on the command line
alone takes with ``+task@tasks.<name>=_base``: this class has none of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRUNCATIONS = ("head", "tail", "head_tail")
SUBMISSION_FORMATS = ("csv", "jsonl")


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """One labelled task; ``name`` is its key under ``tasks:`` in the config. What each field
    means: conf/task/_base.yaml."""

    name: str
    kind: str  # a name in ptm.tasks.kinds.KINDS
    train: Path
    dev: Path | None
    test: Path | None
    test_labels: Path | None
    columns: list[str] | None
    id_column: str | None
    text_column: str
    text_b_column: str
    label_column: str
    label_separator: str
    labels: list[str] | None
    dev_fraction: float
    split_seed: int
    max_seq_len: int | None  # None: the model's positions
    truncation: str
    head_fraction: float
    weight: float | None
    submission_format: str
    submission_name: str | None
    train_rows: int | None
    train_rows_seed: int

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation={self.truncation!r}; use one of {list(TRUNCATIONS)}")
        if not 0.0 <= self.head_fraction <= 1.0:
            raise ValueError(f"head_fraction={self.head_fraction}; use a value in [0, 1]")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction={self.dev_fraction}; use a value in (0, 1)")
        if self.max_seq_len is not None and self.max_seq_len < 8:
            raise ValueError(f"max_seq_len={self.max_seq_len} is too short; use 8 or more")
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"weight={self.weight}; use a positive number or null")
        if not self.label_separator:
            raise ValueError("label_separator is empty; use the character between labels")
        if self.train_rows is not None and self.train_rows < 1:
            raise ValueError(f"train_rows={self.train_rows}; use a positive number or null")
        if self.submission_format not in SUBMISSION_FORMATS:
            raise ValueError(
                f"submission_format={self.submission_format!r}; use one of "
                f"{list(SUBMISSION_FORMATS)}"
            )
        if self.submission_format == "jsonl" and not (self.id_column and self.submission_name):
            raise ValueError(
                "submission_format=jsonl writes an id and a label per test row: set the task's "
                "id_column and its submission_name (e.g. ocnli_predict.json)"
            )
        if self.columns is not None:
            if len(set(self.columns)) != len(self.columns) or not self.columns:
                raise ValueError(f"columns={list(self.columns)}: name each column once")
            named = [self.text_column, self.label_column, self.id_column]
            missing = [c for c in named if c is not None and c not in self.columns]
            if missing:
                raise ValueError(
                    f"columns={list(self.columns)} lack {missing}: name the file's columns in "
                    "order, including the task's text, label and id columns"
                )
