"""A downstream probe of a frozen encoder, cheap enough to run during pretraining.

The held-out MLM loss says how well the model predicts masked characters, not whether its
states are any use to a task; on the embedded corpus the loss fell from 6.6 to 5.9 nats while
fine-tuning from that model did no better than from random weights. So every ``every`` steps
(and at step 0, and at the end) the probe freezes the encoder and fits linear models on its
final states for the labelled tasks that come with the corpus:

* ``classification`` — logistic regression on the mean of the final states over a text's
  positions (mean pooling: with MLM-only pretraining ``[CLS]`` is never trained), scored by
  dev macro-F1;
* ``tokens`` — logistic regression on each position's final state, one tag per position,
  scored by dev entity F1 (seqeval), as the fine-tuned tagger is.

A linear probe on frozen features is the standard test of what a representation holds (Alain &
Bengio, 2016; the "linear evaluation protocol" of SimCLR); it costs forward passes over a few
thousand rows plus a small fit, not a fine-tuning run. At step 0 it measures random features:
the mean of random embeddings is a random projection of the bag of characters, which already
separates review polarity fairly well, so the curve shows what pretraining adds on top of that.
Rows are spread evenly over each file and fixed for the whole run; the fits are deterministic,
so the curve moves only when the encoder does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ptm.errors import InputError
from ptm.tasks.batching import collate, eval_order
from ptm.tasks.bio import bio_decode, bio_transitions
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import KINDS, TaskKind, kind_named, load_task
from ptm.tasks.metrics import classification_metrics, token_metrics
from ptm.tasks.splits import IGNORE, Split, TaskData
from ptm.training.runtime import autocast

log = logging.getLogger(__name__)
# Above this share of unknown tokens the probe's files were anonymized with another vocabulary
# than the corpus's (a user's corpus with the embedded tasks): its scores would mean nothing.
MAX_UNKNOWN = 0.2


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    every: int  # steps between probes; it also runs at step 0 and at the end
    train_rows: int  # rows per task the linear models are fitted on
    dev_rows: int  # rows per task they are scored on
    c: float  # inverse L2 strength of the logistic regressions (on standardised features)
    max_iter: int  # lbfgs iterations: a fixed budget, part of the probe's definition
    batch_size: int  # rows per forward pass
    # The corpus the tasks' text comes from: the probe runs only when the run's data.corpus is
    # this one (None: on any corpus). Tasks anonymized for another corpus would score nothing.
    corpus: list[Path] | None
    tasks: list[TaskConfig]  # as conf/task/ defines them; their train and dev files are read

    def __post_init__(self) -> None:
        readable = [name for name, kind in KINDS.items() if kind.linear_probe]
        for task in self.tasks:
            if task.kind not in readable:
                raise ValueError(
                    f"probe task {task.name}: kind={task.kind!r}; use one of {readable}"
                )
        if self.every < 1:
            raise ValueError(f"probe every={self.every}; use a positive number of steps")
        if min(self.train_rows, self.dev_rows) < 2:
            raise ValueError("probe train_rows and dev_rows must be 2 or more")
        if not self.tasks:
            raise ValueError("the probe lists no task; set data.probe=null to turn it off")


def spread(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` row numbers spread evenly over ``range(n)``, in order."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


class Probe:
    """Loads the probe's rows once; ``__call__(encoder)`` scores the encoder's frozen states."""

    def __init__(
        self, cfg: ProbeConfig, tokenizer: PreTrainedTokenizerBase, positions: int
    ) -> None:
        """``positions``: the encoder's; a task is read at its ``max_seq_len`` capped at them (at
        them for ``max_seq_len: null``), as fine-tuning reads it."""
        self.cfg = cfg
        self.pad_id = tokenizer.pad_token_id
        self.history: list[dict[str, float]] = []  # one entry per probe: step and scores
        self.tasks: list[tuple[TaskData, Split, Split]] = []
        for task in cfg.tasks:
            # Train and dev only, every row of the file (the probe picks its own), and a length
            # for the model: the probe's encoder is the one being pretrained.
            length = min(task.max_seq_len or positions, positions)
            task_cfg = replace(
                task, test=None, test_labels=None, train_rows=None, max_seq_len=length
            )
            data = load_task(task_cfg, tokenizer, max(cfg.train_rows, cfg.dev_rows))
            for split in data.splits.values():
                unknown = split.stats.get("unknown_tokens", 0) / max(
                    split.stats.get("tokens", 1), 1
                )
                if unknown > MAX_UNKNOWN:
                    raise InputError(
                        split.path,
                        f"{100 * unknown:.0f}% of the probe task's tokens are unknown to the "
                        "corpus's vocabulary: the file does not come from this corpus",
                        "set data.probe=null, or list labelled files of your corpus under "
                        "data.probe.tasks",
                    )
            train, dev = data.splits["train"], data.splits["dev"]
            train = train.select_rows(spread(train.n_rows, cfg.train_rows), "train")
            dev = dev.select_rows(spread(dev.n_rows, cfg.dev_rows), "dev")
            self.tasks.append((data, train, dev))

    def due(self, step: int, last_step: bool) -> bool:
        return step % self.cfg.every == 0 or last_step

    def summary(self, wall_seconds: float) -> dict:
        """For metrics.json: every probe's scores, and what the probes cost in all."""
        spent = sum(h["probe/seconds"] for h in self.history)
        return {
            "history": self.history,
            "seconds": round(spent, 2),
            "share_of_wall": round(spent / max(wall_seconds, 1e-9), 4),
        }

    def __call__(
        self, encoder: torch.nn.Module, device: torch.device, precision: str = "fp32", step: int = 0
    ) -> dict[str, float]:
        """``probe/<task>/<metric>`` for every task, and ``probe/seconds`` (the whole probe);
        also appended to ``history`` under ``step``."""
        start = time.perf_counter()
        was_training = encoder.training
        encoder.eval()
        out = {}
        try:
            for data, train, dev in self.tasks:
                states = [self._states(encoder, split, device, precision) for split in (train, dev)]
                kind = kind_named(data.cfg.kind)
                score = _fit_and_score(kind, train, dev, *states, data.labels, self.cfg)
                out[f"probe/{data.name}/{kind.metric}"] = score
        finally:
            encoder.train(was_training)
        out["probe/seconds"] = time.perf_counter() - start
        self.history.append({"step": step, **out})
        return out

    @torch.no_grad()
    def _states(
        self, encoder: torch.nn.Module, split: Split, device: torch.device, precision: str
    ) -> list[np.ndarray]:
        """Per example, the final states of its real positions: ``(length, hidden)`` float32."""
        out: list[np.ndarray] = [np.zeros(0)] * len(split)
        for idx in eval_order(split.lengths, self.cfg.batch_size):
            batch = collate(split, idx, self.pad_id)
            batch.pop("labels", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                hidden = encoder(**batch).last_hidden_state
            hidden = hidden.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = hidden[row, : len(split.input_ids[i])]
        return out


def _fit_and_score(
    kind: TaskKind,
    train: Split,
    dev: Split,
    train_states: list[np.ndarray],
    dev_states: list[np.ndarray],
    labels: list[str],
    cfg: ProbeConfig,
) -> float:
    if kind.head == "token":  # a label per position: a classifier of each position's state
        x = np.concatenate([s[t != IGNORE] for s, t in zip(train_states, train.tags, strict=True)])
        y = np.concatenate([t[t != IGNORE] for t in train.tags])
        model = _fit(x, y, cfg)
        # Every dev position's log-probabilities at once (not a call per row), placed on its
        # row's words, then each row decoded to its best valid BIO sequence, as fine-tuned
        # taggers are (`ptm.tasks.bio`): argmax leaves I- fragments seqeval counts as entities.
        at = [words >= 0 for words in dev.word_at]
        logp = model.log_proba(np.concatenate([s[a] for s, a in zip(dev_states, at, strict=True)]))
        parts = np.split(logp, np.cumsum([int(a.sum()) for a in at])[:-1])
        rows = [np.full((int(n), len(labels)), -np.inf) for n in dev.row_words]
        for row in rows:
            row[:, labels.index("O")] = 0.0  # a word no window reaches stays outside
        for r, words, a, p in zip(dev.row, dev.word_at, at, parts, strict=True):
            rows[r][words[a]] = -np.inf
            rows[r][np.ix_(words[a], model.classes)] = p
        start, step = bio_transitions(labels)
        guess = [bio_decode(row, start, step) for row in rows]
        truth = [[labels[i] for i in row] for row in dev.row_tags()]
        tags = [[labels[i] for i in row] for row in guess]
        return float(token_metrics(truth, tags, labels)[kind.metric])
    # A label per text: a classifier of the mean of its states.
    model = _fit(np.stack([s.mean(0) for s in train_states]), train.row_labels(), cfg)
    pred = model.predict(np.stack([s.mean(0) for s in dev_states]))
    return float(classification_metrics(dev.row_labels(), pred, labels)[kind.metric])


class LinearProbe:
    """Multinomial logistic regression on standardised features, fitted by L-BFGS in torch.

    The objective is scikit-learn's (mean cross-entropy plus ``|W|^2 / (2 C n)``), but
    scikit-learn 1.9's lbfgs took 23 s for 13 iterations on 43k positions x 256 features and 7
    tags (the names probe), 150 s for its 100; the same fit here takes about a second. Full-batch
    and single-process, so it is deterministic."""

    def __init__(self, x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> None:
        self.classes, target = np.unique(y, return_inverse=True)
        feats = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.mean, self.std = feats.mean(0), feats.std(0).clamp(min=1e-6)
        feats = (feats - self.mean) / self.std
        labels = torch.from_numpy(target.astype(np.int64))
        self.weight = torch.zeros(feats.shape[1], len(self.classes), requires_grad=True)
        self.bias = torch.zeros(len(self.classes), requires_grad=True)
        l2 = 1.0 / (2.0 * cfg.c * len(labels))
        optimizer = torch.optim.LBFGS(
            [self.weight, self.bias], max_iter=cfg.max_iter, line_search_fn="strong_wolfe"
        )

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            value = torch.nn.functional.cross_entropy(feats @ self.weight + self.bias, labels)
            value = value + l2 * self.weight.square().sum()
            value.backward()
            return value

        if len(self.classes) > 1:  # one class: nothing to fit, it is the answer
            optimizer.step(loss)

    @torch.no_grad()
    def log_proba(self, x: np.ndarray) -> np.ndarray:
        """``(n, len(classes))`` log-probabilities, columns in the order of ``classes``."""
        feats = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) - self.mean) / self.std
        return torch.log_softmax(feats @ self.weight + self.bias, 1).double().numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[self.log_proba(x).argmax(1)]


def _fit(x: np.ndarray, y: np.ndarray, cfg: ProbeConfig) -> LinearProbe:
    """Standardised features -> multinomial logistic regression (a fixed iteration budget: the
    probe must stay cheap, and stopping short of convergence is part of its definition)."""
    return LinearProbe(x, y, cfg)
