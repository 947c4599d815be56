"""Labelled task files -> encoded examples, checked at the boundary with errors naming file and line.

Three kinds of task, all read from tab-separated tables with a header (the Tianchi layout):

* ``classification`` — ``label\\ttext``; a test file holds ``text`` only, as the competition's
  ``test_a.csv`` does, and its answers (when known) sit in a separate ``label`` file.
* ``pair`` — two text columns (``text_a\\ttext_b\\tlabel``); token types 0 and 1, as in BERT.
* ``tokens`` — one BIO tag per ID (``text\\ttags``); a test file may carry the tags (answers).

Labels are kept exactly as written; their order is the natural one (numeric when every label is
an integer, so Tianchi's ``0..13`` stay in order) unless the task lists them. A dev or test label
the training file never had is an error, not a silently dropped row.

Documents longer than the model are truncated at the head, the tail, or both ends: Sun et al.,
"How to Fine-Tune BERT for Text Classification?" (2019) found keeping the first quarter and the
last three quarters of the budget best on long documents, hence the default. Token tasks are never
truncated — every ID must get a tag — so a long sentence is cut into consecutive windows at word
boundaries and its predictions are stitched back together.

Reading and encoding the tables is `ptm.tasks.tables`'s job.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from ptm.errors import InputError
from ptm.tasks.tables import Table, TextEncoder

log = logging.getLogger(__name__)

KINDS = ("classification", "pair", "tokens")
TRUNCATIONS = ("head", "tail", "head_tail")
UNKNOWN_WARNING = 0.05  # share of [UNK] tokens in a split above which the run warns
IGNORE = -100  # label of positions that carry no answer (specials, padding, sub-word pieces)


@dataclass(frozen=True)
class TaskConfig:
    """One labelled task; ``name`` is its key under ``tasks:`` in the config."""

    name: str
    train: Path
    kind: str = "classification"  # classification | pair | tokens
    dev: Path | None = None  # null: hold out dev_fraction of train (stratified, fixed split_seed)
    test: Path | None = None
    test_labels: Path | None = None  # classification/pair: one `label` column, test order
    text_column: str = "text"
    text_b_column: str = "text_b"  # pair only
    label_column: str = "label"  # tokens: the column of space-separated tags
    labels: list[str] | None = None  # explicit class order; null: the training file's, sorted
    dev_fraction: float = 0.1
    split_seed: int = 0  # the held-out dev split does not move with train.seed
    max_seq_len: int = 256  # positions, [CLS] and [SEP] included
    truncation: str = "head_tail"  # head | tail | head_tail (classification and pair)
    head_fraction: float = 0.25  # head_tail: share of the budget kept from the start
    weight: float | None = None  # multi-task sampling weight; null: from train.mix_temperature

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is unknown; use one of {list(KINDS)}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation={self.truncation!r}; use one of {list(TRUNCATIONS)}")
        if not 0.0 <= self.head_fraction <= 1.0:
            raise ValueError(f"head_fraction={self.head_fraction}; use a value in [0, 1]")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction={self.dev_fraction}; use a value in (0, 1)")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len={self.max_seq_len} is too short; use 8 or more")
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"weight={self.weight}; use a positive number or null")

    @property
    def is_tokens(self) -> bool:
        return self.kind == "tokens"


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
    labels: np.ndarray | None = None  # (n,) class index; None when there are no answers
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
            labels=None if self.labels is None else self.labels[keep],
            tags=pick(self.tags),
            word_at=pick(self.word_at),
            row_words=None if self.row_words is None else self.row_words[rows],
            row_answers=None if self.row_answers is None else [self.row_answers[r] for r in rows],
            stats={"rows": len(rows), "examples": len(keep)},
        )

    def row_labels(self) -> np.ndarray:
        """Classification answers per row (one example per row for these tasks)."""
        assert self.labels is not None, "row_labels() needs answers"
        return self.labels

    def row_tags(self) -> list[np.ndarray]:
        """Token-task answers per row: one tag index per word."""
        assert self.row_answers is not None, "row_tags() needs tags"
        return self.row_answers


@dataclass
class TaskData:
    cfg: TaskConfig
    labels: list[str]  # class names (or BIO tags) in index order
    splits: dict[str, Split]  # train, dev and, when given, test
    chance_loss: float  # entropy of the training labels: the loss of predicting their frequencies

    @property
    def name(self) -> str:
        return self.cfg.name


# ----------------------------------------------------------------------------- truncation


def truncate(ids: np.ndarray, budget: int, how: str, head_fraction: float) -> np.ndarray:
    """At most ``budget`` tokens: the head, the tail, or ``head_fraction`` head + the rest tail."""
    if len(ids) <= budget:
        return ids
    if how == "head":
        return ids[:budget]
    if how == "tail":
        return ids[len(ids) - budget :]
    head = round(budget * head_fraction)
    return np.concatenate([ids[:head], ids[len(ids) - (budget - head) :]])


def pair_budget(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Longest-first (BERT's and transformers' rule): trim the longer text until both fit."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if len_a <= len_b:
        keep_a = min(len_a, (budget + 1) // 2)
        return keep_a, budget - keep_a
    keep_b = min(len_b, budget // 2)
    return budget - keep_b, keep_b


def windows(first_token: np.ndarray, n_tokens: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` token windows of at most ``budget``, cut where a word starts."""
    starts = np.sort(first_token[first_token >= 0])
    out, lo = [], 0
    while lo < n_tokens:
        hi = min(lo + budget, n_tokens)
        if hi < n_tokens:
            cut = starts[(starts > lo) & (starts <= hi)]
            hi = int(cut[-1]) if len(cut) else hi  # a word longer than the budget is split
        out.append((lo, hi))
        lo = hi
    return out or [(0, 0)]


# ----------------------------------------------------------------------------- labels


def natural_order(values: set[str]) -> list[str]:
    """Integers by value (``2`` before ``10``), anything else alphabetically."""
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def tag_order(tags: set[str]) -> list[str]:
    """``O`` first, then by entity type with ``B-`` before ``I-``."""
    return sorted(tags, key=lambda t: ("" if t == "O" else t[2:], t[:1]))


def _check_tag(tag: str, path: Path, line: int) -> None:
    if tag != "O" and not re.fullmatch(r"[BI]-\S+", tag):
        raise InputError(
            path,
            f"tag {tag!r} is not BIO",
            "use O, B-TYPE or I-TYPE, one tag per ID, separated by spaces",
            line,
        )


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------- loading a task


def load_task(
    cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase, limit: int | None = None
) -> TaskData:
    """Read, check and encode every split of one task.

    ``limit`` keeps that many rows of every file, spread evenly over it (smoke runs, sweeps).
    """
    encoder = TextEncoder(tokenizer)
    raw_train = _read(cfg, cfg.train, encoder, answers="required", limit=limit)
    labels = _label_set(cfg, raw_train)
    index = {label: i for i, label in enumerate(labels)}
    train = _encode(cfg, "train", raw_train, index, tokenizer)
    if cfg.dev is None:
        train, dev = _hold_out(cfg, train)
    else:
        dev = _encode(cfg, "dev", _read(cfg, cfg.dev, encoder, "required", limit), index, tokenizer)
    splits = {"train": train, "dev": dev}
    if cfg.test is not None:
        raw_test = _read(cfg, cfg.test, encoder, "optional" if cfg.is_tokens else "none", limit)
        if cfg.test_labels is not None:
            _read_test_labels(cfg, raw_test)
        splits["test"] = _encode(cfg, "test", raw_test, index, tokenizer)
    elif cfg.test_labels is not None:
        raise InputError(
            cfg.test_labels, "test_labels is set but test is not", "set the task's test file too"
        )
    if train.tags is not None:
        counts = np.bincount(np.concatenate([t[t >= 0] for t in train.tags]), minlength=len(labels))
    else:
        counts = np.bincount(train.labels, minlength=len(labels))
    for name, split in splits.items():
        log.info(
            "task %s, %s: %d rows -> %d examples from %s%s",
            cfg.name,
            name,
            split.n_rows,
            len(split),
            split.path,
            "".join(f"; {k} {v}" for k, v in split.stats.items() if k not in ("rows", "examples")),
        )
        unknown = split.stats.get("unknown_tokens", 0) / max(split.stats.get("tokens", 0), 1)
        if unknown > UNKNOWN_WARNING:
            log.warning(
                "task %s, %s: %.0f%% of the tokens are unknown to the tokenizer — was the model "
                "pretrained on other data, or is model.tokenizer not the model's own?",
                cfg.name,
                name,
                100 * unknown,
            )
    return TaskData(cfg, labels, splits, chance_loss=entropy(counts))


@dataclass
class _Raw:
    """A split as read: token indices per row (and the second text, the answers) + line numbers."""

    path: Path
    lines: np.ndarray
    first: list[tuple[np.ndarray, np.ndarray]]  # (token indices, first token of each word)
    second: list[np.ndarray] | None
    answers: list[str] | list[list[str]] | None
    answer_path: Path | None = None  # where the answers come from, for messages
    answer_lines: np.ndarray | None = None
    kept_rows: np.ndarray | None = None  # the rows read, when limited (else all)


def _read(
    cfg: TaskConfig, path: Path, encoder: TextEncoder, answers: str, limit: int | None
) -> _Raw:
    """``answers``: ``required`` (train/dev), ``optional`` (token test) or ``none`` (test)."""
    table = Table(path)
    text_col = table.column(cfg.text_column)
    b_col = table.column(cfg.text_b_column) if cfg.kind == "pair" else None
    has_label = cfg.label_column in table.header
    if answers == "none" and has_label:
        raise InputError(
            path,
            f"the test file has a '{cfg.label_column}' column",
            "a test file holds the text only (like the competition's test_a.csv): give its "
            "answers as the task's test_labels (a file with one label column, same order), or "
            "use this file as the task's dev file",
            line=1,
        )
    label_col = table.column(cfg.label_column) if answers == "required" or has_label else None
    lines, first, second, labels = [], [], [] if b_col is not None else None, []
    keep = table.spread(limit)
    for batch_lines, rows in table.batches(keep):
        texts = [r[text_col] for r in rows]
        if cfg.is_tokens:
            first += encoder.words(texts, path, batch_lines)
        else:
            first += [
                (ids, np.zeros(0, np.int64)) for ids in encoder.texts(texts, path, batch_lines)
            ]
        if b_col is not None:
            second += encoder.texts([r[b_col] for r in rows], path, batch_lines)
        if label_col is not None:
            labels += [r[label_col].strip() for r in rows]
        lines.append(batch_lines)
    if not lines:
        raise InputError(path, "no rows after the header", "add examples to the file", line=2)
    raw = _Raw(path, np.concatenate(lines), first, second, None, kept_rows=keep)
    if label_col is not None and cfg.is_tokens:
        raw.answers = []
        for (_, word_first), tags, line in zip(first, labels, raw.lines, strict=True):
            row_tags = tags.split()
            if len(row_tags) != len(word_first):
                raise InputError(
                    path,
                    f"{len(row_tags)} tags for {len(word_first)} IDs",
                    "give exactly one tag per ID, separated by spaces",
                    int(line),
                )
            for tag in row_tags:
                _check_tag(tag, path, int(line))
            raw.answers.append(row_tags)
    elif label_col is not None:
        for label, line in zip(labels, raw.lines, strict=True):
            if not label:
                raise InputError(path, "empty label", "every row needs a label", int(line))
        raw.answers = labels
    return raw


def _read_test_labels(cfg: TaskConfig, raw: _Raw) -> None:
    """Attach the answers of a text-only test file, checking there is one per test row."""
    table = Table(cfg.test_labels)
    col = table.column(cfg.label_column)
    labels, lines = [], []
    for batch_lines, rows in table.batches():
        labels += [r[col].strip() for r in rows]
        lines.append(batch_lines)
    n_test = len(raw.lines) if raw.kept_rows is None else Table(raw.path).count_rows()
    if len(labels) != n_test:
        raise InputError(
            cfg.test_labels,
            f"{len(labels)} labels for {n_test} rows of {raw.path}",
            "give one label per test row, in the test file's order",
        )
    lines = np.concatenate(lines)
    if raw.kept_rows is not None:
        labels, lines = [labels[i] for i in raw.kept_rows], lines[raw.kept_rows]
    raw.answers, raw.answer_path, raw.answer_lines = labels, cfg.test_labels, lines


def _label_set(cfg: TaskConfig, raw: _Raw) -> list[str]:
    seen = {t for tags in raw.answers for t in tags} if cfg.is_tokens else set(raw.answers or [])
    if cfg.labels is not None:
        labels = [str(x) for x in cfg.labels]
        if cfg.is_tokens and "O" not in labels:
            raise InputError(
                raw.path, f"the task's labels {labels[:10]} lack 'O'", "add O to the tag list"
            )
        extra = sorted(seen - set(labels))
        if extra:
            raise InputError(
                raw.path,
                f"label(s) {extra[:5]} are not in the task's labels {labels[:10]}",
                "add them to the task's labels list, or set labels: null to take them from train",
            )
        return labels
    if cfg.is_tokens:
        return tag_order(seen | {"O"})
    if len(seen) < 2:
        raise InputError(
            raw.path,
            f"the training file has only the label(s) {sorted(seen)}",
            "a classifier needs examples of at least two classes",
        )
    return natural_order(seen)


def _encode(
    cfg: TaskConfig,
    name: str,
    raw: _Raw,
    index: dict[str, int],
    tokenizer: PreTrainedTokenizerBase,
) -> Split:
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    budget = cfg.max_seq_len - (3 if cfg.kind == "pair" else 2)
    stats = Counter(rows=len(raw.lines))
    all_ids = np.concatenate([ids for ids, _ in raw.first]) if raw.first else np.zeros(0)
    if raw.second is not None:
        all_ids = np.concatenate([all_ids, *raw.second])
    stats["unknown_tokens"] = int((all_ids == tokenizer.unk_token_id).sum())
    stats["tokens"] = len(all_ids)
    answers = _answer_indices(cfg, name, raw, index)

    if cfg.is_tokens:
        ids_out, b_out, row_out, tags_out, words_out = [], [], [], [], []
        for r, (ids, first) in enumerate(raw.first):
            tag_of_token = np.full(len(ids), IGNORE, np.int64)
            word_of_token = np.full(len(ids), -1, np.int64)
            has = first >= 0
            word_of_token[first[has]] = np.flatnonzero(has)
            if answers is not None:
                tag_of_token[first[has]] = answers[r][has]
            spans = windows(first, len(ids), budget)
            stats["windowed_rows"] += len(spans) > 1
            for lo, hi in spans:
                ids_out.append(np.concatenate([[cls], ids[lo:hi], [sep]]).astype(np.int32))
                b_out.append(hi - lo + 2)
                row_out.append(r)
                tags_out.append(np.concatenate([[IGNORE], tag_of_token[lo:hi], [IGNORE]]))
                words_out.append(np.concatenate([[-1], word_of_token[lo:hi], [-1]]))
        stats["examples"] = len(ids_out)
        return Split(
            name,
            raw.path,
            ids_out,
            np.array(b_out, np.int64),
            np.array(row_out, np.int64),
            raw.lines,
            tags=tags_out if answers is not None else None,
            word_at=words_out,
            row_words=np.array([len(f) for _, f in raw.first], np.int64),
            row_answers=answers,
            stats=dict(stats),
        )

    ids_out, b_out = [], []
    for r, (a, _) in enumerate(raw.first):
        if raw.second is None:
            kept = truncate(a, budget, cfg.truncation, cfg.head_fraction)
            stats["truncated"] += len(kept) < len(a)
            ids_out.append(np.concatenate([[cls], kept, [sep]]).astype(np.int32))
            b_out.append(len(kept) + 2)
        else:
            b = raw.second[r]
            ka, kb = pair_budget(len(a), len(b), budget)
            stats["truncated"] += ka + kb < len(a) + len(b)
            ids_out.append(np.concatenate([[cls], a[:ka], [sep], b[:kb], [sep]]).astype(np.int32))
            b_out.append(ka + 2)
    stats["examples"] = len(ids_out)
    return Split(
        name,
        raw.path,
        ids_out,
        np.array(b_out, np.int64),
        np.arange(len(ids_out)),
        raw.lines,
        labels=None if answers is None else np.asarray(answers, np.int64),
        stats=dict(stats),
    )


def _answer_indices(cfg: TaskConfig, name: str, raw: _Raw, index: dict[str, int]):
    if raw.answers is None:
        return None
    where = raw.answer_path or raw.path
    lines = raw.answer_lines if raw.answer_lines is not None else raw.lines

    def unknown(value: str, i: int) -> InputError:
        return InputError(
            where,
            f"{'tag' if cfg.is_tokens else 'label'} {value!r} does not occur in the training "
            f"data (known: {list(index)[:10]})",
            "fix the value, or list every label in the task's labels so the model has a class "
            "for it",
            int(lines[i]),
        )

    if cfg.is_tokens:
        out = []
        for i, tags in enumerate(raw.answers):
            for t in tags:
                if t not in index:
                    raise unknown(t, i)
            out.append(np.array([index[t] for t in tags], np.int64))
        return out
    for i, label in enumerate(raw.answers):
        if label not in index:
            raise unknown(label, i)
    return [index[label] for label in raw.answers]


def _hold_out(cfg: TaskConfig, train: Split) -> tuple[Split, Split]:
    """Dev rows drawn from train: stratified by label where every class has two rows or more."""
    rng = np.random.default_rng(cfg.split_seed)
    n = train.n_rows
    n_dev = max(1, round(n * cfg.dev_fraction))
    if n_dev >= n:
        raise InputError(
            train.path, f"{n} rows are too few to hold out a dev split", "give a dev file"
        )
    counts = np.bincount(train.labels) if train.labels is not None else np.zeros(0, np.int64)
    if len(counts) and counts[counts > 0].min() >= 2:
        dev_rows = []
        for c in np.unique(train.labels):
            rows = np.flatnonzero(train.labels == c)
            take = max(1, math.floor(len(rows) * cfg.dev_fraction + rng.random()))
            dev_rows.append(rng.choice(rows, size=min(take, len(rows) - 1), replace=False))
        dev = np.concatenate(dev_rows)
    else:
        dev = rng.choice(n, size=n_dev, replace=False)
    rest = np.setdiff1d(np.arange(n), dev)
    log.info(
        "task %s: no dev file, holding out %d of %d training rows (split_seed %d)",
        cfg.name,
        len(dev),
        n,
        cfg.split_seed,
    )
    return train.select_rows(rest, "train"), train.select_rows(dev, "dev")
