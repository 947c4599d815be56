"""BIO-valid decoding: the most probable tag sequence of a row among those a BIO tagger may emit.

Tagging every ID by its own most probable tag (argmax) leaves sequences no annotator writes: an
``I-PER`` after ``O``, an ``I-LOC`` straight after ``B-PER``. The entity scorer (seqeval, like
conlleval) then counts each fragment as an entity of its own, so one wrong tag costs a false
positive and a missed entity at once. Decoding with the transitions a BIO scheme allows — an
``I-X`` only after ``B-X`` or ``I-X``, no ``I-`` first — is the constraint a CRF layer learns
(Lample et al., 2016) and AllenNLP imposes on its CRF (``allowed_transitions``); here it costs no
parameters: a Viterbi pass over the per-token log-probabilities.

Measured on the names task (dev entity F1, 8,000 training rows, 3 epochs, seed 1): 0.684 ->
0.764 for a pretrained BERT-mini, 0.480 -> 0.577 from random weights; precision gains most
(0.64 -> 0.76), as fragments stop counting as entities. The window tagger of ``make report``
gains as much (0.817 -> 0.875 on every training row), so it decodes the same way. The commands
are in the fine-tuning note of the README (names).
"""

from __future__ import annotations

import numpy as np


def bio_transitions(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(C,)`` 0 / -inf for the tags a row may start with, and ``(C, C)`` 0 / -inf for
    ``[previous, next]``: ``I-X`` only after ``B-X`` or ``I-X``."""
    start = np.array([0.0 if not t.startswith("I-") else -np.inf for t in labels])
    step = np.zeros((len(labels), len(labels)))
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            for i, prev in enumerate(labels):
                if prev not in (f"B-{tag[2:]}", tag):
                    step[i, j] = -np.inf
    return start, step


def bio_decode(log_probs: np.ndarray, start: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``(n, C)`` log-probabilities of one row -> ``(n,)`` tag indices: the valid sequence of
    highest total log-probability (Viterbi; ties go to the lower tag index)."""
    n = len(log_probs)
    if n == 0:
        return np.zeros(0, np.int64)
    score = log_probs[0] + start
    back = np.zeros((n, log_probs.shape[1]), np.int64)
    for t in range(1, n):
        candidates = score[:, None] + step  # (previous, next)
        back[t] = candidates.argmax(0)
        score = candidates.max(0) + log_probs[t]
    path = np.zeros(n, np.int64)
    path[-1] = int(score.argmax())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path
