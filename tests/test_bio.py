"""BIO-valid decoding (ptm.tasks.bio): the best valid sequence, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np

from ptm.tasks.bio import bio_decode, bio_transitions

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def valid(path: list[int]) -> bool:
    tags = [LABELS[i] for i in path]
    return all(
        not tag.startswith("I-") or (prev in (f"B-{tag[2:]}", tag))
        for prev, tag in zip(["O", *tags], tags, strict=False)
    )


def test_the_decoder_finds_the_best_valid_sequence() -> None:
    start, step = bio_transitions(LABELS)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4):
        for _ in range(25):
            log_probs = np.log(rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=n))
            best = max(
                (p for p in itertools.product(range(len(LABELS)), repeat=n) if valid(list(p))),
                key=lambda p: sum(log_probs[t, k] for t, k in enumerate(p)),
            )
            assert bio_decode(log_probs, start, step).tolist() == list(best)


def test_a_valid_argmax_is_kept_and_a_fragment_is_repaired() -> None:
    start, step = bio_transitions(LABELS)
    probs = np.array(
        [
            [0.1, 0.8, 0.05, 0.03, 0.02],  # B-LOC
            [0.1, 0.1, 0.7, 0.05, 0.05],  # I-LOC
            [0.9, 0.02, 0.02, 0.03, 0.03],  # O
        ]
    )
    assert bio_decode(np.log(probs), start, step).tolist() == [1, 2, 0]
    probs[0] = [0.4, 0.1, 0.45, 0.04, 0.01]  # argmax I-LOC first: not a valid start
    assert np.log(probs).argmax(1).tolist() == [2, 2, 0]
    assert bio_decode(np.log(probs), start, step).tolist() == [1, 2, 0]  # B-LOC I-LOC O
    assert bio_decode(np.zeros((0, 5)), start, step).tolist() == []


def test_transitions_follow_the_bio_scheme() -> None:
    start, step = bio_transitions(LABELS)
    assert np.isneginf(start).tolist() == [False, False, True, False, True]
    allowed = {(LABELS[i], LABELS[j]) for i, j in zip(*np.nonzero(np.isfinite(step)), strict=True)}
    assert ("B-LOC", "I-LOC") in allowed and ("I-LOC", "I-LOC") in allowed
    assert ("O", "I-LOC") not in allowed and ("B-PER", "I-LOC") not in allowed
    assert ("I-PER", "B-LOC") in allowed and ("B-LOC", "O") in allowed
