"""Streaming a corpus in order on a few threads: parsed chunks with a progress line, the
ID-counting pass that builds a vocabulary, and the spill that keeps parsed chunks between the two
passes of a build (`ptm.data.segment_builder`).

Files are read in chunks (`ptm.data.idtext`), so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ptm.data.idtext import ParsedLines, SourceStats, iter_text_chunks, parse_id_lines
from ptm.progress import Progress, format_count

log = logging.getLogger(__name__)
DENSE_LIMIT = 1 << 24  # IDs below this are counted with one bincount per chunk
MAX_THREADS = 4  # past this, reading and hashing the file on one thread is the limit


def threads() -> int:
    return min(len(os.sched_getaffinity(0)), MAX_THREADS)


def in_order(fn: Callable, items: Iterable[tuple]) -> Iterator[tuple[tuple, Any]]:
    """``(item, fn(*item))`` for every item, computed on a few threads (numpy releases the GIL
    in its loops) and yielded in order. Items are drawn lazily, at most two per thread ahead of
    the consumer, so memory stays bounded; an error surfaces at its item's turn."""
    workers = threads()
    with ThreadPoolExecutor(workers, thread_name_prefix="segments") as pool:
        in_flight: deque[tuple[tuple, Future]] = deque()
        for item in items:
            in_flight.append((item, pool.submit(fn, *item)))
            if len(in_flight) > 2 * workers:
                item, job = in_flight.popleft()
                yield item, job.result()
        while in_flight:
            item, job = in_flight.popleft()
            yield item, job.result()


def source_chunks(
    sources: list[Path], stats: list[SourceStats], text_column: str
) -> Iterator[tuple[bytes, Path, int]]:
    """``(chunk, path, first line)`` of every source in order: the items `in_order` parses."""
    for path, st in zip(sources, stats, strict=True):
        for first_line, chunk in iter_text_chunks(path, st, text_column):
            yield chunk, path, first_line


def stream(
    sources: list[Path],
    text_column: str,
    stats: list[SourceStats],
    parse: Callable[[bytes, Path, int], ParsedLines] = parse_id_lines,
    unit: str = "IDs",
):
    """Parsed chunks of every source, in order, with a progress line over the bytes read.

    This thread reads and hashes while others parse (`in_order`): ``parse`` is
    `ptm.data.idtext.parse_id_lines` for ID corpora, `RawTextEncoder.encode_chunk` for raw text.
    """
    total = sum(p.stat().st_size if p.is_file() else 0 for p in sources)
    progress = Progress("reading corpus", total, log)
    done = ids = 0
    for (chunk, path, first_line), parsed in in_order(
        parse, source_chunks(sources, stats, text_column)
    ):
        ids += len(parsed.ids)
        done += len(chunk)
        elapsed = max(progress.last - progress.start, 1e-9)
        progress.update(min(done, total), f"{format_count(ids / elapsed)} {unit}/s")
        yield path, first_line, parsed


class Spill:
    """Parsed chunks kept on disk between the vocabulary pass and the build (reading them back
    beats parsing the text again): three flat files appended in order, IDs in the narrowest
    type that holds them, word-start marks only for chunks that have word joins."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = {n: (folder / f"{n}.bin").open("wb") for n in ("ids", "word_start", "lines")}
        self.chunks: list[tuple[int, int, np.dtype, bool]] = []  # IDs, lines, ID type, joins

    def add(self, parsed: ParsedLines) -> None:
        top = int(parsed.ids.max()) if len(parsed.ids) else 0
        dtype = np.dtype(np.uint16 if top < 1 << 16 else np.uint32 if top < 1 << 32 else np.int64)
        self.files["ids"].write(memoryview(parsed.ids.astype(dtype)))
        if parsed.has_word_joins:
            self.files["word_start"].write(memoryview(parsed.word_start.view(np.uint8)))
        self.files["lines"].write(memoryview(parsed.line_lengths))
        self.chunks.append(
            (len(parsed.ids), len(parsed.line_lengths), dtype, parsed.has_word_joins)
        )

    def abandon(self) -> None:
        """Close the files after an error (see `ptm.data.segment_writer.SplitWriter.abandon`)."""
        for f in self.files.values():
            with contextlib.suppress(OSError):
                f.close()

    def replay(self, total_ids: int) -> Iterator[ParsedLines]:
        """The chunks, in order, with a progress line like the reading pass's; then deleted."""
        for f in self.files.values():
            f.close()
        progress = Progress("segmenting", total_ids, log)
        readers = {n: (self.folder / f"{n}.bin").open("rb") for n in self.files}
        done = 0
        try:
            for n_ids, n_lines, dtype, joins in self.chunks:
                ids = np.fromfile(readers["ids"], dtype=dtype, count=n_ids)
                if joins:
                    starts = np.fromfile(readers["word_start"], dtype=bool, count=n_ids)
                else:
                    starts = np.ones(n_ids, dtype=bool)
                lines = np.fromfile(readers["lines"], dtype=np.int64, count=n_lines)
                done += n_ids
                progress.update(done)
                yield ParsedLines(ids, starts, lines, joins)  # IDs stay narrow: only indexed
        finally:
            for f in readers.values():
                f.close()
            shutil.rmtree(self.folder, ignore_errors=True)


def count_ids(
    sources: list[Path], text_column: str, stats: list[SourceStats], spill: Spill | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct raw IDs and how often each occurs, over all sources, in one streaming pass.

    With ``spill``, every parsed chunk is also kept there for the build.
    """
    dense = np.zeros(0, np.int64)  # counts of IDs below DENSE_LIMIT, indexed by ID
    rare_ids, rare_counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _, _, parsed in stream(sources, text_column, stats):
        if spill is not None:
            spill.add(parsed)
        small = parsed.ids < DENSE_LIMIT
        ids = parsed.ids if small.all() else parsed.ids[small]
        chunk = np.bincount(ids, minlength=len(dense))
        chunk[: len(dense)] += dense
        dense = chunk
        if not small.all():  # huge IDs: sort-based counting, only for those
            u, c = np.unique(np.concatenate([rare_ids, parsed.ids[~small]]), return_counts=True)
            weights = np.concatenate([rare_counts, np.ones(int((~small).sum()), np.int64)])
            order = np.searchsorted(u, np.concatenate([rare_ids, parsed.ids[~small]]))
            rare_ids, rare_counts = (
                u,
                np.bincount(order, weights=weights, minlength=len(u)).astype(np.int64),
            )
            del c
    present = np.flatnonzero(dense)
    return np.concatenate([present, rare_ids]), np.concatenate([dense[present], rare_counts])
