"""Kinds of task as objects: everything that differs between a classification, a sentence-pair
and a tagging task lives in one class per kind, behind one small protocol (`TaskKind`).

The training loop, inference, export, the report and the sweep summary hold a task's kind and
ask it — which columns to read, which head to build, the loss, how to predict and score, the
metric to select on, the transformers class to export, how to write the submission — and never
compare kind names (tests/test_tasks.py checks every module for it). Adding a kind is one class
here, registered in `KINDS`, and one task file in ``conf/task/`` — and, for the report, a
classical baseline in `ptm.tasks.baselines` that the class names. A task file must name its kind
(`kind_of`): none is guessed.

* ``classification`` — ``label\\ttext``: one label per text, softmax over the classes, macro-F1
  (what the Tianchi competition scores; accuracy hides a model that ignores small classes).
* ``pair`` — ``text_a\\ttext_b\\tlabel``: the same over two texts, token types 0 and 1 as in BERT,
  too-long pairs trimmed longest-first.
* ``tokens`` — ``text\\ttags``: one BIO tag per ID, entity-level F1 (seqeval); rows longer than
  the model are cut into windows and stitched back, never truncated; each row is decoded to the
  most probable valid BIO sequence (`ptm.tasks.bio`).
* ``multi_label`` — ``label\\ttext`` with any number of labels per row (``a,b``): a sigmoid per
  label, binary cross-entropy, a threshold chosen on dev, macro-F1 over labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, precision_recall_fscore_support
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from ptm.errors import InputError
from ptm.models.heads import HeadConfig, TaskModel
from ptm.tasks.bio import bio_decode, bio_transitions
from ptm.tasks.config import TaskConfig
from ptm.tasks.inference import Prediction, logits_batches
from ptm.tasks.loading import (
    Fold,
    at_least_two,
    check_tag,
    entropy,
    explicit_labels,
    pair_budget,
    read_task,
    tag_order,
    truncate,
    unknown_label,
    windows,
)
from ptm.tasks.metrics import classification_metrics, per_class, token_metrics
from ptm.tasks.splits import IGNORE, RawSplit, Split, TaskData
from ptm.tasks.submission import write_answers, write_table
from ptm.tasks.tables import TextEncoder


@runtime_checkable
class TaskKind(Protocol):
    """What a kind of task decides. Attributes first (what the report, the sweep summary and the
    export read), then the methods, in the order a run calls them."""

    name: str  # the ``kind:`` of a task in conf/task/*.yaml
    metric: str  # the key of `score`'s result a run selects its best step on; higher is better
    metric_label: str  # how tables and logs name that metric ("macro-F1")
    secondary: str  # a second metric of `score`'s result, for the dev log line
    head: str  # the ptm.models.heads head: "sequence" (pooled, one output per text) or "token"
    hf_task: str | None  # the transformers class a one-task export writes: "SequenceClassification"
    problem_type: str | None  # the transformers config's problem_type for that class
    baseline: str | None  # its classical baseline for the report: a key of ptm.tasks.baselines
    answers_in_test_file: bool  # tags ride in the test file; labels come as a test_labels file
    linear_probe: bool  # pretraining's probe (ptm.tasks.probe) can score it on frozen states
    # One probability row per text, decided by its largest entry: cross-validation folds and
    # ensembles of runs average these rows (finetune.cv, finetune.ensemble).
    averaged: bool

    # Reading and encoding a split (called by ptm.tasks.loading.read_task).
    def text_columns(self, cfg: TaskConfig) -> list[str]: ...
    def encode_text(
        self, encoder: TextEncoder, texts: list[str], path: Path, lines: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]: ...
    def clip(self, cfg: TaskConfig, ids: np.ndarray) -> np.ndarray: ...
    def parse_answers(
        self, cfg: TaskConfig, values: list[str], path: Path, lines: np.ndarray, text_a: list | None
    ) -> list: ...
    def label_set(self, cfg: TaskConfig, answers: list, path: Path) -> list[str]: ...
    def answer_indices(self, cfg: TaskConfig, raw: RawSplit, index: dict[str, int]) -> Any: ...
    def encode(
        self,
        cfg: TaskConfig,
        name: str,
        raw: RawSplit,
        answers: Any,
        tokenizer: PreTrainedTokenizerBase,
    ) -> Split: ...
    def strata(self, train: Split) -> np.ndarray | None: ...
    def budget_strata(self, answers: list[str]) -> np.ndarray | None: ...
    def chance_loss(self, train: Split, n_labels: int) -> float: ...
    def check_model(self, task: TaskData, config: PretrainedConfig) -> None: ...

    # Training: the loss of a batch as a sum over its items, and what it predicted.
    def count_items(self, labels: torch.Tensor) -> int: ...
    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...
    def predicted_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    # Evaluation, export and submission.
    def predict(
        self,
        model: TaskModel,
        task: TaskData,
        split: Split,
        device: torch.device,
        precision: str,
        batch_size: int,
        pad_id: int,
        padding: str = "auto",
    ) -> Prediction: ...
    def tune(self, task: TaskData, split: Split, prediction: Prediction) -> dict: ...
    def score(
        self, task: TaskData, split: Split, prediction: Prediction, decision: dict
    ) -> dict[str, Any]: ...
    def export_meta(self, task: TaskData, head: HeadConfig, decision: dict) -> dict: ...
    def submission_rows(
        self, task: TaskData, prediction: Prediction, decision: dict
    ) -> list[str]: ...
    def write_submission(
        self, folder: Path, task: TaskData, prediction: Prediction, decision: dict
    ) -> dict[str, str]: ...


# ----------------------------------------------------------------------------- one text, one label


class _Kind:
    """What most kinds share: one text column, nothing to check on the model or to choose on
    dev, and the same entry in ``finetune.json``."""

    def text_columns(self, cfg: TaskConfig) -> list[str]:
        return [cfg.text_column]

    def check_model(self, task: TaskData, config: PretrainedConfig) -> None:
        pass

    def clip(self, cfg: TaskConfig, ids: np.ndarray) -> np.ndarray:
        """The tokens of one text the kind can use: every one (a tagging task cuts a long row
        into windows; it never truncates)."""
        return ids

    def tune(self, task: TaskData, split: Split, prediction: Prediction) -> dict:
        """Nothing to choose on dev."""
        return {}

    def export_meta(self, task: TaskData, head: HeadConfig, decision: dict) -> dict:
        cfg = task.cfg
        return {
            "kind": self.name,
            "head": self.head,
            "hf_task": self.hf_task,
            "problem_type": self.problem_type,
            "labels": task.labels,
            "pooling": head.pooling if self.head == "sequence" else None,
            "max_seq_len": cfg.max_seq_len,  # token kinds cut longer rows into windows
            "truncation": cfg.truncation,
            "head_fraction": cfg.head_fraction,
            "columns": cfg.columns,
            "id_column": cfg.id_column,
            "text_column": cfg.text_column,
            "text_b_column": cfg.text_b_column if len(self.text_columns(cfg)) > 1 else None,
            "label_column": cfg.label_column,
            # How its submission is written, so a copied model/ folder predicts a new file in
            # the competition's format (finetune.predict).
            "submission_format": cfg.submission_format,
            "submission_name": cfg.submission_name,
            **({"decision": decision} if decision else {}),
        }

    def write_submission(
        self, folder: Path, task: TaskData, prediction: Prediction, decision: dict
    ) -> dict[str, str]:
        """``submission.csv`` — one answer per test row, in file order, under the task's label
        column — and, for ``submission_format: jsonl``, the id/label lines
        (`ptm.tasks.submission`)."""
        return write_answers(folder, task, self.submission_rows(task, prediction, decision))


class _Softmax:
    """One class per item (a text, or a token): cross-entropy over the classes, summed over the
    labelled items (`IGNORE` marks the others), so a step divides by the items of its whole
    global batch."""

    def count_items(self, labels: torch.Tensor) -> int:
        return int((labels != IGNORE).sum())

    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat = logits.float().reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE, reduction="sum")

    def predicted_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """How often each class was predicted over the labelled items (the collapse check).
        Counted into a fixed-size tensor (unlabelled items into a last slot that is dropped):
        boolean indexing and bincount would wait for the GPU to size their output."""
        n = logits.shape[-1]
        guess = logits.detach().reshape(-1, n).argmax(-1)
        slot = torch.where(labels.reshape(-1) != IGNORE, guess, n)
        counts = torch.zeros(n + 1, dtype=torch.float64, device=logits.device)
        return counts.index_add_(0, slot, torch.ones_like(slot, dtype=torch.float64))[:n]


class Classification(_Softmax, _Kind):
    """One label per text: ``label\\ttext`` (a text-only test file, its answers apart)."""

    name = "classification"
    metric, metric_label, secondary = "macro_f1", "macro-F1", "accuracy"
    head = "sequence"
    hf_task, problem_type = "SequenceClassification", None
    baseline = "tfidf"
    answers_in_test_file = False
    linear_probe = True
    averaged = True

    def encode_text(
        self, encoder: TextEncoder, texts: list[str], path: Path, lines: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(ids, np.zeros(0, np.int64)) for ids in encoder.texts(texts, path, lines)]

    def parse_answers(
        self, cfg: TaskConfig, values: list[str], path: Path, lines: np.ndarray, text_a: list | None
    ) -> list:
        for label, line in zip(values, lines, strict=True):
            if not label:
                raise InputError(path, "empty label", "every row needs a label", int(line))
        return values

    def label_set(self, cfg: TaskConfig, answers: list, path: Path) -> list[str]:
        seen = set(answers)
        return (
            explicit_labels(cfg, seen, path) if cfg.labels is not None else at_least_two(seen, path)
        )

    def answer_indices(self, cfg: TaskConfig, raw: RawSplit, index: dict[str, int]) -> Any:
        for i, label in enumerate(raw.answers):
            if label not in index:
                raise unknown_label(raw, "label", label, i, index)
        return [index[label] for label in raw.answers]

    def encode(
        self,
        cfg: TaskConfig,
        name: str,
        raw: RawSplit,
        answers: Any,
        tokenizer: PreTrainedTokenizerBase,
    ) -> Split:
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        stats = Counter(raw.counts)
        ids_out, b_out = [], []
        for (a, _), written in zip(raw.text_a, raw.lengths.tolist(), strict=True):
            kept = self.clip(cfg, a)
            stats["truncated"] += len(kept) < written
            ids_out.append(np.concatenate([[cls], kept, [sep]]).astype(np.int32))
            b_out.append(len(kept) + 2)
        return self._split(name, raw, ids_out, b_out, answers, stats)

    def _split(
        self, name: str, raw: RawSplit, ids: list, b: list, answers: Any, stats: Counter
    ) -> Split:
        stats["examples"] = len(ids)
        return Split(
            name,
            raw.path,
            ids,
            np.array(b, np.int64),
            np.arange(len(ids)),
            raw.lines,
            ids=raw.ids,
            labels=None if answers is None else np.asarray(answers, np.int64),
            stats=dict(stats),
        )

    def clip(self, cfg: TaskConfig, ids: np.ndarray) -> np.ndarray:
        """Head, tail or head + tail (``cfg.truncation``) within the positions [CLS] and [SEP]
        leave."""
        return truncate(ids, cfg.max_seq_len - 2, cfg.truncation, cfg.head_fraction)

    def strata(self, train: Split) -> np.ndarray | None:
        return train.labels

    def budget_strata(self, answers: list[str]) -> np.ndarray | None:
        """`strata` of rows not encoded — their answers as written (the report's classical
        baselines draw a label budget from them): the same partition of the rows, which is all
        that `ptm.tasks.loading.label_budget` reads."""
        return np.unique(answers, return_inverse=True)[1]

    def chance_loss(self, train: Split, n_labels: int) -> float:
        """The entropy of the training labels: the loss of predicting their frequencies."""
        return entropy(np.bincount(train.labels, minlength=n_labels))

    def predict(
        self,
        model: TaskModel,
        task: TaskData,
        split: Split,
        device: torch.device,
        precision: str,
        batch_size: int,
        pad_id: int,
        padding: str = "auto",
    ) -> Prediction:
        n_labels = len(task.labels)
        loss_sum, n_labelled = 0.0, 0
        counts = np.zeros(n_labels, np.int64)
        probs = np.zeros((len(split), n_labels), np.float32)
        for idx, logits, labels, _ in logits_batches(
            model,
            task.name,
            split,
            device,
            precision,
            batch_size,
            pad_id,
            padding=padding,
            max_len=task.cfg.max_seq_len,
        ):
            predicted = logits.argmax(-1)
            if labels is not None:
                loss_sum += self.loss_sum(logits, labels).item()
                n_labelled += self.count_items(labels)
            counts += np.bincount(predicted.cpu().numpy(), minlength=n_labels)
            probs[idx] = self.probabilities(logits).cpu().numpy()
        loss = loss_sum / n_labelled if n_labelled else None
        return Prediction(loss, counts, probs=probs)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, -1)

    def submission_rows(self, task: TaskData, prediction: Prediction, decision: dict) -> list[str]:
        """Each test row's label, as the training file wrote it."""
        return [task.labels[i] for i in prediction.classes]

    def score(
        self, task: TaskData, split: Split, prediction: Prediction, decision: dict
    ) -> dict[str, Any]:
        metrics = classification_metrics(split.row_labels(), prediction.classes, task.labels)
        return {"loss": prediction.loss, **metrics}

    def write_submission(
        self, folder: Path, task: TaskData, prediction: Prediction, decision: dict
    ) -> dict[str, str]:
        """The submission (`_Kind.write_submission`: the competition's format — one label
        column, one row per test row, in order) and ``probabilities.csv`` (a column per class,
        tab-separated like the inputs)."""
        return {
            **super().write_submission(folder, task, prediction, decision),
            "probabilities": write_table(
                folder / "probabilities.csv",
                task.labels,
                ([f"{p:.6f}" for p in row] for row in prediction.probs),
            ),
        }


class Pair(Classification):
    """One label per pair of texts: ``text_a\\ttext_b\\tlabel``; token types 0 and 1, as in BERT."""

    name = "pair"
    baseline = None
    linear_probe = False  # the probe reads one text a row
    averaged = True

    def text_columns(self, cfg: TaskConfig) -> list[str]:
        return [cfg.text_column, cfg.text_b_column]

    def encode(
        self,
        cfg: TaskConfig,
        name: str,
        raw: RawSplit,
        answers: Any,
        tokenizer: PreTrainedTokenizerBase,
    ) -> Split:
        budget = cfg.max_seq_len - 3
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        stats = Counter(raw.counts)
        ids_out, b_out = [], []
        for (a, _), b, written in zip(raw.text_a, raw.text_b, raw.lengths.tolist(), strict=True):
            ka, kb = pair_budget(len(a), len(b), budget)
            stats["truncated"] += ka + kb < written
            ids_out.append(np.concatenate([[cls], a[:ka], [sep], b[:kb], [sep]]).astype(np.int32))
            b_out.append(ka + 2)
        return self._split(name, raw, ids_out, b_out, answers, stats)

    def clip(self, cfg: TaskConfig, ids: np.ndarray) -> np.ndarray:
        """The start of each text, at most what the pair's positions hold: longest-first trimming
        (`ptm.tasks.loading.pair_budget`) keeps no more of either, and keeps its start."""
        return ids[: cfg.max_seq_len - 3]

    def check_model(self, task: TaskData, config: PretrainedConfig) -> None:
        if getattr(config, "type_vocab_size", 0) < 2:
            raise InputError(
                None,
                f"task {task.name} has text pairs but the model has no second token type",
                "use a BERT-style model (type_vocab_size 2)",
            )


# ----------------------------------------------------------------------------- one tag per ID


class Tokens(_Softmax, _Kind):
    """One BIO tag per ID: ``text\\ttags``; a test file may carry the tags (then it is scored)."""

    name = "tokens"
    metric, metric_label, secondary = "entity_f1", "entity F1", "tag_accuracy"
    head = "token"
    hf_task, problem_type = "TokenClassification", None
    baseline = "window_tagger"
    answers_in_test_file = True
    linear_probe = True
    averaged = False  # a tag per word, not a row of class probabilities

    def encode_text(
        self, encoder: TextEncoder, texts: list[str], path: Path, lines: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return encoder.words(texts, path, lines)

    def parse_answers(
        self, cfg: TaskConfig, values: list[str], path: Path, lines: np.ndarray, text_a: list | None
    ) -> list:
        answers = []
        for (_, word_first), tags, line in zip(text_a, values, lines, strict=True):
            row_tags = tags.split()
            if len(row_tags) != len(word_first):
                raise InputError(
                    path,
                    f"{len(row_tags)} tags for {len(word_first)} IDs",
                    "give exactly one tag per ID, separated by spaces",
                    int(line),
                )
            for tag in row_tags:
                check_tag(tag, path, int(line))
            answers.append(row_tags)
        return answers

    def label_set(self, cfg: TaskConfig, answers: list, path: Path) -> list[str]:
        seen = {t for tags in answers for t in tags}
        if cfg.labels is None:
            return tag_order(seen | {"O"})
        listed = [str(x) for x in cfg.labels]
        if "O" not in listed:
            raise InputError(
                path, f"the task's labels {listed[:10]} lack 'O'", "add O to the tag list"
            )
        return explicit_labels(cfg, seen, path)

    def answer_indices(self, cfg: TaskConfig, raw: RawSplit, index: dict[str, int]) -> Any:
        out = []
        for i, tags in enumerate(raw.answers):
            for t in tags:
                if t not in index:
                    raise unknown_label(raw, "tag", t, i, index)
            out.append(np.array([index[t] for t in tags], np.int64))
        return out

    def encode(
        self,
        cfg: TaskConfig,
        name: str,
        raw: RawSplit,
        answers: Any,
        tokenizer: PreTrainedTokenizerBase,
    ) -> Split:
        budget = cfg.max_seq_len - 2
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        stats = Counter(raw.counts)
        ids_out, b_out, row_out, tags_out, words_out = [], [], [], [], []
        for r, (ids, word_start) in enumerate(raw.text_a):
            tag_of_token = np.full(len(ids), IGNORE, np.int64)
            word_of_token = np.full(len(ids), -1, np.int64)
            has = word_start >= 0
            word_of_token[word_start[has]] = np.flatnonzero(has)
            if answers is not None:
                tag_of_token[word_start[has]] = answers[r][has]
            spans = windows(word_start, len(ids), budget)
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
            ids=raw.ids,
            tags=tags_out if answers is not None else None,
            word_at=words_out,
            row_words=np.array([len(f) for _, f in raw.text_a], np.int64),
            row_answers=answers,
            stats=dict(stats),
        )

    def strata(self, train: Split) -> np.ndarray | None:
        return None  # a row has many tags: the held-out rows are drawn at random

    def budget_strata(self, answers: list[str]) -> np.ndarray | None:
        return None

    def chance_loss(self, train: Split, n_labels: int) -> float:
        """The entropy of the tags: the loss of predicting their frequencies at every ID."""
        tags = np.concatenate([t[t >= 0] for t in train.tags])
        return entropy(np.bincount(tags, minlength=n_labels))

    def predict(
        self,
        model: TaskModel,
        task: TaskData,
        split: Split,
        device: torch.device,
        precision: str,
        batch_size: int,
        pad_id: int,
        padding: str = "auto",
    ) -> Prediction:
        """A tag per word of every row: windows stitched back, then the most probable valid BIO
        sequence of each row (`ptm.tasks.bio`: no ``I-X`` without its ``B-X``); a word that got no
        token (an empty piece of a WordPiece split) is tagged ``O``. ``counts`` are the
        per-token argmax tags (what the collapse check judges)."""
        n_labels = len(task.labels)
        loss_sum, n_labelled = 0.0, 0
        counts = np.zeros(n_labels, np.int64)
        outside = task.labels.index("O")
        row_scores = [np.full((int(n), n_labels), -np.inf, np.float32) for n in split.row_words]
        for scores in row_scores:
            scores[:, outside] = 0.0
        for idx, logits, labels, attention_mask in logits_batches(
            model,
            task.name,
            split,
            device,
            precision,
            batch_size,
            pad_id,
            padding=padding,
            max_len=task.cfg.max_seq_len,
        ):
            predicted = logits.argmax(-1)
            if labels is not None:
                loss_sum += self.loss_sum(logits, labels).item()
                labelled = labels.reshape(-1) != IGNORE
                n_labelled += int(labelled.sum())
                scored = predicted.reshape(-1)[labelled]
            else:
                scored = predicted[attention_mask.bool()]
            counts += np.bincount(scored.cpu().numpy(), minlength=n_labels)
            on_host = torch.log_softmax(logits, -1).cpu().numpy()  # one copy per batch
            for row, i in enumerate(idx):
                words = split.word_at[i]
                at = words >= 0
                row_scores[split.row[i]][words[at]] = on_host[row, : len(words)][at]
        loss = loss_sum / n_labelled if n_labelled else None
        start, step = bio_transitions(task.labels)
        row_tags = [bio_decode(scores, start, step) for scores in row_scores]
        return Prediction(loss, counts, row_tags=row_tags)

    def score(
        self, task: TaskData, split: Split, prediction: Prediction, decision: dict
    ) -> dict[str, Any]:
        truth = [[task.labels[i] for i in row] for row in split.row_tags()]
        guess = [[task.labels[i] for i in row] for row in prediction.row_tags]
        return {"loss": prediction.loss, **token_metrics(truth, guess, task.labels)}

    def submission_rows(self, task: TaskData, prediction: Prediction, decision: dict) -> list[str]:
        """The tags of every test row, space-separated."""
        return [" ".join(task.labels[i] for i in row) for row in prediction.row_tags]


# ----------------------------------------------------------------------------- several labels a text


class MultiLabel(Classification):
    """Any number of labels per text: ``label\ttext`` with a row's labels joined by the task's
    ``label_separator`` (``sports,finance``); every row has at least one.

    One sigmoid per label (binary cross-entropy, averaged over every text x label cell, as
    transformers' ``multi_label_classification`` computes it). A label is predicted when its
    probability reaches one threshold, chosen on dev at every evaluation (the one that maximises
    dev macro-F1; ties go to the one nearest 0.5) and kept with the best step; a text with no
    label above it gets its most probable one, since no training row is empty. Selected on
    macro-F1 over labels (rare labels count as much as common ones, as in the competitions this
    serves); micro-F1, exact-match accuracy and per-label P/R/F1 come with it. Exported as
    ``<Arch>ForSequenceClassification`` with ``problem_type="multi_label_classification"``, so
    transformers' pipeline applies the sigmoid; the threshold is in ``finetune.json``.
    """

    name = "multi_label"
    metric, metric_label, secondary = "macro_f1", "macro-F1", "micro_f1"
    problem_type = "multi_label_classification"
    baseline = "tfidf_one_vs_rest"
    linear_probe = False  # the probe fits one class a text
    averaged = False  # each label decided by its own threshold, not by the largest
    THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)

    def parse_answers(
        self, cfg: TaskConfig, values: list[str], path: Path, lines: np.ndarray, text_a: list | None
    ) -> list:
        answers = []
        for value, line in zip(values, lines, strict=True):
            parts = [p.strip() for p in value.split(cfg.label_separator)]
            if not value or not all(parts):
                raise InputError(
                    path,
                    f"an empty label in {value!r}",
                    f"give every row one label or more, separated by {cfg.label_separator!r}",
                    int(line),
                )
            answers.append(list(dict.fromkeys(parts)))  # a label given twice is the same label
        return answers

    def label_set(self, cfg: TaskConfig, answers: list, path: Path) -> list[str]:
        return super().label_set(cfg, [label for row in answers for label in row], path)

    def answer_indices(self, cfg: TaskConfig, raw: RawSplit, index: dict[str, int]) -> Any:
        hot = np.zeros((len(raw.answers), len(index)), np.int64)
        for i, row in enumerate(raw.answers):
            for label in row:
                if label not in index:
                    raise unknown_label(raw, "label", label, i, index)
                hot[i, index[label]] = 1
        return hot

    def strata(self, train: Split) -> np.ndarray | None:
        return None  # a row has several labels: the held-out rows are drawn at random

    def budget_strata(self, answers: list[str]) -> np.ndarray | None:
        return None

    def chance_loss(self, train: Split, n_labels: int) -> float:
        """The mean binary entropy of the labels: the loss of predicting each label's frequency."""
        p = train.labels.mean(0)
        inner = np.where((p > 0) & (p < 1), p, 0.5)
        h = -(inner * np.log(inner) + (1 - inner) * np.log(1 - inner))
        return float(np.where((p > 0) & (p < 1), h, 0.0).mean())

    def count_items(self, labels: torch.Tensor) -> int:
        return labels.numel()

    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")

    def predicted_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """How often each label was a text's most probable one: a collapsed model gives every
        text the same. (A fixed-size count: bincount would wait for the GPU.)"""
        n, guess = logits.shape[-1], logits.detach().argmax(-1)
        counts = torch.zeros(n, dtype=torch.float64, device=logits.device)
        return counts.index_add_(0, guess, torch.ones_like(guess, dtype=torch.float64))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def decide(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        """``(n, C)`` 0/1: the labels at or above ``threshold``, else the most probable one."""
        chosen = (probs >= threshold).astype(np.int64)
        empty = chosen.sum(1) == 0
        chosen[empty, probs[empty].argmax(1)] = 1
        return chosen

    def tune(self, task: TaskData, split: Split, prediction: Prediction) -> dict:
        """The threshold that maximises dev macro-F1 (ties: the one nearest 0.5)."""
        return {"threshold": self.threshold_on(split.row_labels(), prediction.probs)}

    def threshold_on(self, truth: np.ndarray, probs: np.ndarray) -> float:
        """Of `THRESHOLDS`, the one whose decisions on ``probs`` (``(n, C)``) score the best
        macro-F1 against ``truth`` (``(n, C)`` 0/1); ties go to the one nearest 0.5. What `tune`
        chooses on dev, and the report's classical baseline too."""

        def macro(t: float) -> float:
            return f1_score(truth, self.decide(probs, t), average="macro", zero_division=0)

        scores = {float(t): macro(float(t)) for t in self.THRESHOLDS}
        return max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))

    def score(
        self, task: TaskData, split: Split, prediction: Prediction, decision: dict
    ) -> dict[str, Any]:
        truth = split.row_labels()
        guess = self.decide(prediction.probs, decision["threshold"])
        p, r, f, support = precision_recall_fscore_support(
            truth, guess, average=None, zero_division=0
        )
        return {
            "loss": prediction.loss,
            **self.label_scores(truth, guess),
            "threshold": decision["threshold"],
            "per_class": per_class(task.labels, p, r, f, support),
        }

    def label_scores(self, truth: np.ndarray, guess: np.ndarray) -> dict[str, float]:
        """Macro-F1 over labels (the metric), micro-F1 and exact-match accuracy of ``(n, C)`` 0/1
        decisions."""
        return {
            "macro_f1": float(f1_score(truth, guess, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(truth, guess, average="micro", zero_division=0)),
            "exact_match": float((truth == guess).all(1).mean()),
        }

    def export_meta(self, task: TaskData, head: HeadConfig, decision: dict) -> dict:
        return {
            **super().export_meta(task, head, decision),
            "label_separator": task.cfg.label_separator,
        }

    def submission_rows(self, task: TaskData, prediction: Prediction, decision: dict) -> list[str]:
        """Each test row's labels joined by the task's separator."""
        chosen = self.decide(prediction.probs, decision["threshold"])
        sep = task.cfg.label_separator
        return [sep.join(task.labels[i] for i in np.flatnonzero(row)) for row in chosen]


# ----------------------------------------------------------------------------- the registry

KINDS: dict[str, TaskKind] = {k.name: k for k in (Classification(), Pair(), Tokens(), MultiLabel())}


def kind_named(name: str) -> TaskKind:
    if name not in KINDS:
        raise ValueError(f"kind={name!r} is unknown; use one of {list(KINDS)}")
    return KINDS[name]


def kind_of(task: str, settings: Mapping[str, Any]) -> TaskKind:
    """The kind that ``tasks.<task>`` of a config names. A task without ``kind:`` is an error, not
    a guess: a tagging file read as classification would train on its tag strings as labels."""
    name = settings.get("kind")
    if name is None:
        raise InputError(
            None,
            f"tasks.{task} names no kind",
            f"add kind: (one of {list(KINDS)}) to its task file, or give +tasks.{task}.kind=...",
        )
    if name not in KINDS:
        raise InputError(
            None, f"tasks.{task}.kind={name!r} is unknown", f"use one of {list(KINDS)}"
        )
    return KINDS[name]


def load_task(
    cfg: TaskConfig,
    tokenizer: PreTrainedTokenizerBase,
    limit: int | None = None,
    fold: Fold | None = None,
) -> TaskData:
    """Read, check and encode every split of one task (`ptm.tasks.loading.read_task`), the way
    its kind says. ``limit`` keeps that many rows of every file, spread evenly over it; ``fold``
    holds one cross-validation fold of the training file out."""
    return read_task(cfg, kind_named(cfg.kind), tokenizer, limit, fold)
