"""Classical baselines: what a model without pretraining or a GPU scores on a task, so the report
(`finetune.report`, mode ``tfidf``) can say whether fine-tuning earns its cost.

Each kind names its baseline (`ptm.tasks.kinds.TaskKind.baseline`, a key of `BASELINES`); a
kind without one (``pair``) has none, and the report records that run as failed, saying so. All
fit scikit-learn models on the rows the fine-tuning runs read (the same ``limit`` spread, the
same label budget, `split_rows`) and choose their settings on dev, as the fine-tuned models
choose a step:

* ``tfidf`` (classification) — TF-IDF of ID unigrams and bigrams + logistic regression, C
  chosen on dev macro-F1;
* ``tfidf_one_vs_rest`` (multi_label) — the same features, one logistic regression per label;
  C and the decision threshold chosen on dev, the threshold by the kind's own rule
  (`ptm.tasks.kinds.MultiLabel.threshold_on`), scored by the kind's macro-F1 over labels;
* ``window_tagger`` (tokens) — per-ID logistic regression (SGD) on hashed features of the ID and
  its neighbours (+-2 IDs and the two bigrams around it), the classic window tagger, decoded to
  valid BIO sequences as the fine-tuned taggers are (`ptm.tasks.bio`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptm.errors import InputError
from ptm.tasks.bio import bio_decode, bio_transitions
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import MultiLabel, TaskKind, kind_named
from ptm.tasks.loading import label_budget, natural_order, tag_order, task_table
from ptm.tasks.metrics import classification_metrics, token_metrics
from ptm.tasks.splits import RawSplit
from ptm.tasks.tables import Table

C_GRID = (0.25, 1.0, 4.0, 16.0)  # logistic regression's C, chosen on dev


@dataclass(frozen=True)
class Rows:
    """One split as the fine-tuning runs read it, unencoded: each row's text and its answer as
    written, and where the answers are (file and line of each), for messages."""

    texts: list[str]
    answers: list[str]
    path: Path
    lines: np.ndarray

    def select(self, keep: np.ndarray) -> Rows:
        return Rows(
            [self.texts[i] for i in keep],
            [self.answers[i] for i in keep],
            self.path,
            self.lines[keep],
        )


Fit = Callable[[TaskKind, TaskConfig, dict[str, Rows], int], dict[str, float]]


@dataclass(frozen=True)
class Baseline:
    label: str  # the report's name for it
    note: str  # how its seeds differ, a clause of the report's preamble
    fit: Fit  # (kind, task, rows by split, seed) -> the kind's metric on dev (and test)


def fit_baseline(task: TaskConfig, seed: int, limit: int | None = None) -> dict[str, float]:
    """The task's classical baseline, fitted on its rows: ``{"dev": score, "test": score}`` (no
    test entry without test answers), the score being the kind's selection metric."""
    kind = kind_named(task.kind)
    if kind.baseline is None:
        raise InputError(
            None,
            f"task {task.name}: the {kind.name} kind has no classical baseline",
            "leave tfidf out of the report's modes",
        )
    return BASELINES[kind.baseline].fit(kind, task, split_rows(task, limit), seed)


def split_rows(task: TaskConfig, limit: int | None) -> dict[str, Rows]:
    """Train / dev / test rows of a one-text task, as its fine-tuning runs see them: ``limit``
    rows spread over each file and the label budget's training rows (`label_budget`, stratified
    as the kind stratifies); test only where its answers are known."""
    kind = kind_named(task.kind)
    (text,) = kind.text_columns(task)
    answer = task.label_column
    if task.dev is None:
        raise InputError(None, f"task {task.name} has no dev file", "give tasks.<name>.dev")
    spread = {p: task_table(task, p).spread(limit) for p in (task.train, task.dev, task.test) if p}
    rows = {"train": _read(task_table(task, task.train), text, answer, spread[task.train])}
    if task.train_rows is not None:  # the label budget's rows: the fine-tuning runs' own
        answers = rows["train"].answers
        strata = kind.budget_strata(answers)
        keep = label_budget(strata, len(answers), task.train_rows, task.train_rows_seed)
        rows["train"] = rows["train"].select(keep)
    rows["dev"] = _read(task_table(task, task.dev), text, answer, spread[task.dev])
    if task.test is not None and kind.answers_in_test_file:
        rows["test"] = _read(task_table(task, task.test), text, answer, spread[task.test])
    elif task.test is not None and task.test_labels is not None:
        texts = _read(task_table(task, task.test), text, None, spread[task.test])
        labels = _read(Table(task.test_labels), None, answer, spread[task.test])
        rows["test"] = Rows(texts.texts, labels.answers, labels.path, labels.lines)
    return rows


def _read(table: Table, text: str | None, answer: str | None, keep: np.ndarray | None) -> Rows:
    columns = {c: table.column(c) for c in (text, answer) if c is not None}
    texts, answers, lines = [], [], []
    for batch_lines, batch in table.batches(keep):
        if text is not None:
            texts += [row[columns[text]] for row in batch]
        if answer is not None:
            answers += [row[columns[answer]] for row in batch]
        lines.append(batch_lines)
    return Rows(texts, answers, table.path, np.concatenate(lines) if lines else np.zeros(0, int))


def _tfidf_features(rows: dict[str, Rows]) -> dict[str, Any]:
    """TF-IDF of ID unigrams and bigrams (``_`` joins a word's IDs: split there too), fitted on
    train."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        token_pattern=r"[^ _]+", ngram_range=(1, 2), sublinear_tf=True, min_df=2
    )
    return {
        s: (vectorizer.fit_transform if s == "train" else vectorizer.transform)(v.texts)
        for s, v in rows.items()
    }


def _tfidf(kind: TaskKind, task: TaskConfig, rows: dict[str, Rows], seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    labels = natural_order(set(rows["train"].answers))
    index = {label: i for i, label in enumerate(labels)}
    x = _tfidf_features(rows)
    y = {s: np.array([index.get(a, -1) for a in v.answers]) for s, v in rows.items()}
    best, best_dev = None, -1.0
    for c in C_GRID:  # C chosen on dev, as the fine-tuned models choose a step
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
            x["train"], y["train"]
        )
        dev = classification_metrics(y["dev"], model.predict(x["dev"]), labels)[kind.metric]
        if dev > best_dev:
            best, best_dev = model, dev
    out = {"dev": best_dev}
    if "test" in x:
        out["test"] = classification_metrics(y["test"], best.predict(x["test"]), labels)[
            kind.metric
        ]
    return out


def _label_sets(kind: TaskKind, task: TaskConfig, rows: dict[str, Rows]) -> dict[str, np.ndarray]:
    """Each split's ``(n, C)`` 0/1 label matrix, parsed and checked by the kind as a fine-tuning
    run parses them (labels in the training rows' order; one unknown to train is an error)."""
    parsed = {
        s: kind.parse_answers(task, [a.strip() for a in v.answers], v.path, v.lines, None)
        for s, v in rows.items()
    }
    labels = kind.label_set(task, parsed["train"], rows["train"].path)
    index = {label: i for i, label in enumerate(labels)}
    return {
        s: kind.answer_indices(
            task, RawSplit(v.path, v.lines, [], None, parsed[s], np.zeros(0), {}), index
        )
        for s, v in rows.items()
    }


def _tfidf_one_vs_rest(
    kind: MultiLabel, task: TaskConfig, rows: dict[str, Rows], seed: int
) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    x, y = _tfidf_features(rows), _label_sets(kind, task, rows)
    best, best_dev, threshold = None, -1.0, 0.5
    for c in C_GRID:  # C and the threshold chosen on dev
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model = OneVsRestClassifier(model).fit(x["train"], y["train"])
        probs = model.predict_proba(x["dev"])
        t = kind.threshold_on(y["dev"], probs)
        dev = kind.label_scores(y["dev"], kind.decide(probs, t))[kind.metric]
        if dev > best_dev:
            best, best_dev, threshold = model, dev, t
    out = {"dev": best_dev}
    if "test" in x:
        guess = kind.decide(best.predict_proba(x["test"]), threshold)
        out["test"] = kind.label_scores(y["test"], guess)[kind.metric]
    return out


def _window_features(ids: list[str]) -> list[list[str]]:
    padded = ["<s>", "<s>", *ids, "</s>", "</s>"]
    out = []
    for i in range(2, len(padded) - 2):
        w = padded[i - 2 : i + 3]
        out.append(
            [f"w{k - 2}={w[k]}" for k in range(5)] + [f"b-={w[1]}_{w[2]}", f"b+={w[2]}_{w[3]}"]
        )
    return out


def _window_tagger(
    kind: TaskKind, task: TaskConfig, rows: dict[str, Rows], seed: int
) -> dict[str, float]:
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import SGDClassifier

    tags = tag_order({t for a in rows["train"].answers for t in a.split()} | {"O"})
    index = {t: i for i, t in enumerate(tags)}
    hasher = FeatureHasher(n_features=1 << 20, input_type="string", alternate_sign=False)

    def featurize(split: Rows) -> tuple[Any, list[list[str]]]:
        feats = [f for text in split.texts for f in _window_features(text.split())]
        return hasher.transform(feats), [a.split() for a in split.answers]

    x_train, y_train = featurize(rows["train"])
    model = SGDClassifier(loss="log_loss", alpha=1e-6, max_iter=10, tol=None, random_state=seed)
    model.fit(x_train, [index[t] for row in y_train for t in row])
    start, step = bio_transitions(tags)
    out = {}
    for split in ("dev", "test"):
        if split not in rows:
            continue
        x, truth = featurize(rows[split])
        flat = np.full((x.shape[0], len(tags)), -np.inf)  # tags train never had: impossible
        flat[:, model.classes_] = model.predict_log_proba(x)
        guess, at = [], 0
        for row in truth:  # decoded as the fine-tuned taggers are: valid BIO sequences
            guess.append([tags[i] for i in bio_decode(flat[at : at + len(row)], start, step)])
            at += len(row)
        out[split] = token_metrics(truth, guess, tags)[kind.metric]
    return out


BASELINES: dict[str, Baseline] = {
    "tfidf": Baseline(
        "TF-IDF + logistic regression",
        "the TF-IDF model (lbfgs) is deterministic, so its seeds agree",
        _tfidf,
    ),
    "tfidf_one_vs_rest": Baseline(
        "TF-IDF + one-vs-rest logistic regression",
        "the one-vs-rest TF-IDF model (lbfgs) is deterministic, so its seeds agree",
        _tfidf_one_vs_rest,
    ),
    "window_tagger": Baseline(
        "window features + logistic regression",
        "the window tagger (SGD) is seeded",
        _window_tagger,
    ),
}
