"""Which held-out texts (dev/test rows) occur inside a pretraining corpus, verbatim.

A model pretrained on text that later shows up in dev or test has seen the evaluation: its score
measures memory as much as skill. Newspaper corpora repeat sentences across paragraphs, and
Tianchi users often pretrain on the competition's test text on purpose, so the check serves two
purposes: the embedded corpus removes what it finds (`ptm.data.embedded`), and ``python -m
pretrain.overlap`` reports the amount for a user's own corpus and tasks (`ptm.tasks.overlap`).

A held-out text counts as contained when its whole token sequence occurs inside one corpus
document. Texts shorter than ``min_len`` tokens are not checked: below about eight characters the
repeats are formulas ("（完）", datelines, photo credits), not copies of the evaluation.

The search hashes every window of ``min_len`` tokens of the corpus (a polynomial hash, wrapping in
uint64, computed with numpy over whole chunks) and looks the hashes up among the first windows of
the held-out texts; only those candidates are compared in full. One pass, memory bounded by the
chunk and the held-out set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

MIN_LEN = 8
_BASE = np.uint64(0x100000001B3)  # an odd multiplier: FNV-1's 64-bit prime


def window_hashes(ids: np.ndarray, width: int) -> np.ndarray:
    """The hash of every ``width``-token window of ``ids``: ``(len(ids) - width + 1,)`` uint64."""
    n = len(ids) - width + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    values = ids.astype(np.uint64) + np.uint64(1)  # 0 must still move the hash
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the point
        for j in range(width):
            h *= _BASE
            h += values[j : j + n]
    return h


class HeldOutIndex:
    """The held-out texts of at least ``min_len`` tokens, indexed by the hash of their start."""

    def __init__(self, texts: Sequence[np.ndarray], min_len: int = MIN_LEN) -> None:
        if min_len < 1:
            raise ValueError(f"min_len={min_len}; use 1 or more")
        self.min_len = min_len
        self.texts = [np.asarray(t, np.int64) for t in texts]
        self.checked = np.array([len(t) >= min_len for t in self.texts], bool)
        self.by_start: dict[int, list[int]] = defaultdict(list)
        for i in np.flatnonzero(self.checked).tolist():
            key = int(window_hashes(self.texts[i][:min_len], min_len)[0])
            self.by_start[key].append(i)
        self.keys = np.array(sorted(self.by_start), np.uint64)

    def scan(self, ids: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int]]:
        """``(document, text)`` for every held-out text found in a run of documents.

        ``ids`` holds the documents back to back, ``lengths`` their sizes; a text must lie
        inside one document (windows that cross into the next are discarded).
        """
        ids = np.asarray(ids, np.int64)
        hashes = window_hashes(ids, self.min_len)
        if not len(hashes) or not len(self.keys):
            return []
        hits = np.flatnonzero(np.isin(hashes, self.keys))
        if not len(hits):
            return []
        ends = np.cumsum(lengths)
        doc_of = np.searchsorted(ends, hits, side="right")
        found = set()
        for pos, doc in zip(hits.tolist(), doc_of.tolist(), strict=True):
            end = int(ends[doc])
            for t in self.by_start[int(hashes[pos])]:
                text = self.texts[t]
                if pos + len(text) <= end and np.array_equal(ids[pos : pos + len(text)], text):
                    found.add((doc, t))
        return sorted(found)

    def scan_documents(self, documents: Iterable[np.ndarray]) -> list[tuple[int, int]]:
        """`scan` over a list of documents, numbered from 0 in order."""
        docs = [np.asarray(d, np.int64) for d in documents]
        if not docs:
            return []
        lengths = np.array([len(d) for d in docs], np.int64)
        return self.scan(np.concatenate(docs), lengths)
