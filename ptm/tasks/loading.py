"""Labelled task files -> encoded splits: the data structures and the machinery every kind of
task shares, checked at the boundary with errors naming file and line.

What differs between kinds — which columns hold text, what an answer looks like, how a row
becomes model inputs — belongs to the kind (`ptm.tasks.kinds`); `read_task` runs the steps they
share and asks the kind at each. Files are tab-separated tables with a header (the Tianchi
news layout); a test file may hold the text only, as the competition's ``test_a.csv`` does, its
answers (when known) in a separate ``label`` file. Files without a header (the Tianchi multi-task
competition's ``id\ttext\tlabel``) are read by position, the task naming the columns
(``columns:``); a test file there leaves out the label, and its ``id_column`` is kept for the
submission, where an id given twice would make two answers for one question — an error.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from ptm.errors import InputError
from ptm.tasks.config import TaskConfig
from ptm.tasks.splits import RawSplit, Split, TaskData
from ptm.tasks.tables import Table, TextEncoder

log = logging.getLogger(__name__)

UNKNOWN_WARNING = 0.05  # share of [UNK] tokens in a split above which the run warns


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


def check_tag(tag: str, path: Path, line: int) -> None:
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


# ----------------------------------------------------------------------------- reading a task


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` of ``folds`` stratified folds of a training file (cross-validation): the
    run trains on the other folds and predicts this one (the ``oof`` split); which rows form
    which fold is a function of ``seed`` alone, the same in every fold's run."""

    index: int
    folds: int
    seed: int


def read_task(
    cfg: TaskConfig,
    kind: Any,
    tokenizer: PreTrainedTokenizerBase,
    limit: int | None,
    fold: Fold | None = None,
):
    """Read, check and encode every split of one task, asking ``kind`` (a
    `ptm.tasks.kinds.TaskKind`) wherever kinds differ.

    ``limit`` keeps that many rows of every file, spread evenly over it (smoke runs, sweeps).
    ``fold``: cross-validation's held-out fold of the training file becomes the ``oof`` split,
    and the dev split too when the task has no dev file (each fold then selects on its own
    held-out part).
    """
    assert cfg.max_seq_len is not None, f"task {cfg.name}: max_seq_len follows the model first"
    encoder = TextEncoder(tokenizer)
    raw_train = read_split(cfg, kind, cfg.train, encoder, answers="required", limit=limit)
    labels = kind.label_set(cfg, raw_train.answers, raw_train.path)
    index = {label: i for i, label in enumerate(labels)}

    def encode(name: str, raw: RawSplit) -> Split:
        answers = None if raw.answers is None else kind.answer_indices(cfg, raw, index)
        return kind.encode(cfg, name, raw, answers, tokenizer)

    train = encode("train", raw_train)
    held_out = {}
    if fold is not None:
        train, held_out["oof"] = cross_validation_fold(cfg, train, kind.strata(train), fold)
    if cfg.dev is not None:
        dev = encode("dev", read_split(cfg, kind, cfg.dev, encoder, "required", limit))
    elif fold is not None:
        dev = held_out["oof"]
    else:
        train, dev = hold_out(cfg, train, kind.strata(train))
    if cfg.train_rows is not None and cfg.train_rows < train.n_rows:
        keep = label_budget(kind.strata(train), train.n_rows, cfg.train_rows, cfg.train_rows_seed)
        log.info(
            "task %s: a label budget of %d of %d training rows (train_rows_seed %d)",
            cfg.name,
            len(keep),
            train.n_rows,
            cfg.train_rows_seed,
        )
        train = train.select_rows(keep, "train")
    splits = {"train": train, "dev": dev, **held_out}
    if cfg.test is not None:
        in_file = "optional" if kind.answers_in_test_file else "none"
        raw_test = read_split(cfg, kind, cfg.test, encoder, in_file, limit)
        if cfg.test_labels is not None:
            read_test_labels(cfg, kind, raw_test)
        splits["test"] = encode("test", raw_test)
    elif cfg.test_labels is not None:
        raise InputError(
            cfg.test_labels, "test_labels is set but test is not", "set the task's test file too"
        )
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
    return TaskData(cfg, kind, labels, splits, chance_loss=kind.chance_loss(train, len(labels)))


def task_table(cfg: TaskConfig, path: Path) -> Table:
    """One of the task's files: headed, or laid out as the task's ``columns`` (the label may be
    missing, as in a test file)."""
    return Table(path, cfg.columns, cfg.label_column)


def read_split(
    cfg: TaskConfig, kind: Any, path: Path, encoder: TextEncoder, answers: str, limit: int | None
) -> RawSplit:
    """``answers``: ``required`` (train/dev), ``optional`` (a test file that may carry them) or
    ``none`` (a text-only test file). A test file must carry the task's id column, if it has one,
    with no id twice; train and dev files keep theirs where they have it."""
    table = task_table(cfg, path)
    text_cols = [table.column(c) for c in kind.text_columns(cfg)]
    test = answers != "required"
    id_col = None
    if cfg.id_column is not None and (test or cfg.id_column in table.header):
        id_col = table.column(cfg.id_column)
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
    lines, text_a, values, ids, lengths = [], [], [], [], []
    text_b = [] if len(text_cols) > 1 else None
    counts: Counter = Counter()
    keep = table.spread(limit)
    for batch_lines, rows in table.batches(keep):
        rows_a, rows_b, batch_lengths = read_rows(
            cfg, kind, encoder, path, batch_lines, rows, text_cols, counts
        )
        text_a += rows_a
        if text_b is not None:
            text_b += rows_b
        lengths.append(batch_lengths)
        if label_col is not None:
            values += [r[label_col].strip() for r in rows]
        if id_col is not None:
            ids += [r[id_col].strip() for r in rows]
        lines.append(batch_lines)
    if not lines:
        where = "after the header" if table.named else "in the file"
        raise InputError(path, f"no rows {where}", "add examples to the file", 1 + table.named)
    if table.blank_lines:
        log.warning(
            "task %s: skipped %d empty line(s) in %s",
            cfg.name,
            table.blank_lines,
            path,
        )
    raw = RawSplit(
        path, np.concatenate(lines), text_a, text_b, None, np.concatenate(lengths), dict(counts),
        kept_rows=keep,
    )  # fmt: skip
    if id_col is not None:
        raw.ids = np.array(ids, dtype=object)
        if test:
            check_unique_ids(cfg, raw)
    if label_col is not None:
        raw.answers = kind.parse_answers(cfg, values, path, raw.lines, text_a)
    return raw


def read_test_labels(cfg: TaskConfig, kind: Any, raw: RawSplit) -> None:
    """Attach the answers of a text-only test file, checking there is one per test row."""
    table = Table(cfg.test_labels)
    col = table.column(cfg.label_column)
    values, lines = [], []
    for batch_lines, rows in table.batches():
        values += [r[col].strip() for r in rows]
        lines.append(batch_lines)
    n_test = len(raw.lines) if raw.kept_rows is None else task_table(cfg, raw.path).count_rows()
    if len(values) != n_test:
        raise InputError(
            cfg.test_labels,
            f"{len(values)} labels for {n_test} rows of {raw.path}",
            "give one label per test row, in the test file's order",
        )
    lines = np.concatenate(lines)
    if raw.kept_rows is not None:
        values, lines = [values[i] for i in raw.kept_rows], lines[raw.kept_rows]
    raw.answers = kind.parse_answers(cfg, values, cfg.test_labels, lines, None)
    raw.answer_path, raw.answer_lines = cfg.test_labels, lines


def check_unique_ids(cfg: TaskConfig, raw: RawSplit) -> None:
    """Every test row's id once: the submission answers by id, and two rows with one id would be
    two answers to one question. Empty ids are refused too."""
    seen: dict[str, int] = {}
    for value, line in zip(raw.ids, raw.lines, strict=True):
        if not value:
            raise InputError(
                raw.path, f"an empty {cfg.id_column!r}", "give every test row its id", int(line)
            )
        if value in seen:
            raise InputError(
                raw.path,
                f"{cfg.id_column} {value!r} repeats line {seen[value]}",
                "give every test row its own id (the submission answers each id once)",
                int(line),
            )
        seen[value] = int(line)


def explicit_labels(cfg: TaskConfig, seen: set[str], path: Path) -> list[str]:
    """The task's own label list (``labels:``), checked against the labels the file uses."""
    labels = [str(x) for x in cfg.labels]
    extra = sorted(seen - set(labels))
    if extra:
        raise InputError(
            path,
            f"label(s) {extra[:5]} are not in the task's labels {labels[:10]}",
            "add them to the task's labels list, or set labels: null to take them from train",
        )
    return labels


def at_least_two(seen: set[str], path: Path) -> list[str]:
    """The labels a training file uses, in natural order; a classifier needs two or more."""
    if len(seen) < 2:
        raise InputError(
            path,
            f"the training file has only the label(s) {sorted(seen)}",
            "a classifier needs examples of at least two classes",
        )
    return natural_order(seen)


def unknown_label(raw: RawSplit, what: str, value: str, i: int, index: dict[str, int]):
    """The error for a dev/test answer the training data never had (row ``i`` of ``raw``)."""
    path, lines = raw.where
    return InputError(
        path,
        f"{what} {value!r} does not occur in the training data (known: {list(index)[:10]})",
        "fix the value, or list every label in the task's labels so the model has a class for it",
        int(lines[i]),
    )


def read_rows(
    cfg: TaskConfig,
    kind: Any,
    encoder: TextEncoder,
    path: Path,
    lines: np.ndarray,
    rows: list[list[str]],
    text_cols: list[int],
    counts: Counter,
) -> tuple[list, list | None, np.ndarray]:
    """One batch of a file's rows as tokens: ``(text a with its word starts, text b or None,
    each row's token count)``. Tokens and unknown tokens are added to ``counts`` as written;
    each text then keeps only what the kind can use (`TaskKind.clip`: a 900-ID news item
    truncated to 256 positions holds 254 IDs, not 900), so reading a file takes memory for what
    trains, not for what the files hold."""
    text_a = kind.encode_text(encoder, [r[text_cols[0]] for r in rows], path, lines)
    text_b = None
    if len(text_cols) > 1:
        text_b = encoder.texts([r[text_cols[1]] for r in rows], path, lines)
    lengths = np.array([len(a) for a, _ in text_a], np.int64)
    unknown = encoder.tokenizer.unk_token_id
    counts["rows"] += len(rows)
    counts["tokens"] += int(lengths.sum())
    counts["unknown_tokens"] += sum(int((a == unknown).sum()) for a, _ in text_a)
    if text_b is not None:
        lengths += np.array([len(b) for b in text_b], np.int64)
        counts["tokens"] += sum(len(b) for b in text_b)
        counts["unknown_tokens"] += sum(int((b == unknown).sum()) for b in text_b)
        # Copies: a row of the batch's token array kept as a view would keep all of it alive.
        text_b = [kind.clip(cfg, b).copy() for b in text_b]
    text_a = [(kind.clip(cfg, a).copy(), starts) for a, starts in text_a]
    return text_a, text_b, lengths


def hold_out(cfg: TaskConfig, train: Split, strata: np.ndarray | None) -> tuple[Split, Split]:
    """Dev rows drawn from train: stratified by ``strata`` (a class per row) where every class
    has two rows or more, at random otherwise."""
    rng = np.random.default_rng(cfg.split_seed)
    n = train.n_rows
    n_dev = max(1, round(n * cfg.dev_fraction))
    if n_dev >= n:
        raise InputError(
            train.path, f"{n} rows are too few to hold out a dev split", "give a dev file"
        )
    counts = np.bincount(strata) if strata is not None else np.zeros(0, np.int64)
    if len(counts) and counts[counts > 0].min() >= 2:
        dev_rows = []
        for c in np.unique(strata):
            rows = np.flatnonzero(strata == c)
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


def cross_validation_fold(
    cfg: TaskConfig, train: Split, strata: np.ndarray | None, fold: Fold
) -> tuple[Split, Split]:
    """``(the other folds, this fold)`` of the training rows (`fold_of_rows`)."""
    assigned = fold_of_rows(strata, train.n_rows, fold.folds, fold.seed)
    held = np.flatnonzero(assigned == fold.index)
    if len(held) == 0 or len(held) == train.n_rows:
        raise InputError(
            train.path,
            f"{train.n_rows} rows are too few for {fold.folds} folds",
            "use fewer folds (cv.folds) or more training rows",
        )
    log.info(
        "task %s: cross-validation fold %d of %d holds out %d of %d training rows (cv.seed %d)",
        cfg.name,
        fold.index + 1,
        fold.folds,
        len(held),
        train.n_rows,
        fold.seed,
    )
    rest = np.setdiff1d(np.arange(train.n_rows), held)
    return train.select_rows(rest, "train"), train.select_rows(held, "oof")


def fold_of_rows(strata: np.ndarray | None, n_rows: int, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds - 1) of every row: stratified when ``strata`` gives a class per row
    — each class's rows, in a seeded random order, dealt to the folds in turn, the next class
    going on where the last one stopped, so every fold holds each class's share and the folds
    differ in size by one row at most — at random otherwise."""
    order = np.random.default_rng(seed).permutation(n_rows)
    if strata is not None:
        order = order[np.argsort(np.asarray(strata)[order], kind="stable")]  # class by class
    out = np.empty(n_rows, np.int64)
    out[order] = np.arange(n_rows) % folds
    return out


def label_budget(strata: np.ndarray | None, n_rows: int, budget: int, seed: int) -> np.ndarray:
    """``budget`` of ``n_rows`` rows (sorted row numbers), the same for the same seed whoever asks
    (every model of a label-efficiency curve, the classical baseline included).

    Stratified when ``strata`` gives a class per row: rows are taken in a seeded random order
    within each class, interleaved by their rank over the class size (systematic stratified
    sampling), so every class gets one row before any gets two and then its share of the
    budget. Budgets are nested: a seed's 100 rows are among its 300. Only the partition into
    classes matters, not how the classes are numbered.
    """
    order = np.random.default_rng(seed).permutation(n_rows)
    if strata is not None:
        classes = np.asarray(strata)[order]
        rank = np.zeros(n_rows)
        for c in np.unique(classes):
            at = np.flatnonzero(classes == c)
            rank[at] = np.arange(len(at)) / len(at)
        order = order[np.argsort(rank, kind="stable")]
    return np.sort(order[: min(budget, n_rows)])
