"""MLM pretraining data: documents cut and packed into segments, stored as memory-mapped arrays.

Why this shape (and not `run_mlm.py`'s tokenize-then-``group_texts``):

* **Streaming, bounded memory.** Corpora are read in chunks (`ptm.data.idtext`); the vocabulary pass
  keeps only ID counts and the packing pass keeps a few dozen open segments, so a 10 GB corpus
  needs no more RAM than a 10 MB one.
* **Segments, not blind blocks.** A long document becomes consecutive segments of at most
  ``max_seq_len`` positions (``[CLS] ... [SEP]``); its tail is dropped when it fills no more than
  ``tail_drop_fraction`` of a segment (the usual Tianchi recipe). Short documents and kept tails
  are packed together, each followed by ``[SEP]``, by best fit over a window of open segments,
  so almost no position is padding.
* **Packed documents attend to each other.** transformers' BERT ignores per-document position
  ids, and a block-diagonal mask would forbid the fast attention kernels; like RoBERTa's
  FULL-SENTENCES inputs we keep one attention span per segment, with ``[SEP]`` between documents.
* **Masks are not stored.** Masking happens per batch (`ptm.data.masking`), so every epoch sees new
  masks (RoBERTa's dynamic masking); word-start marks are stored for whole-word masking.

Layout of the output folder: ``{train,eval}.tokens.bin`` (vocabulary indices, uint16 when they
fit), ``{split}.offsets.bin`` (int64, segment starts plus the end), ``{split}.word_start.bin``
(uint8, only when the corpus marks words), ``tokenizer/`` and ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from ptm.data.idtext import ParsedLines, SourceStats, iter_text_chunks, parse_id_lines
from ptm.data.rawtext import (
    RawTextEncoder,
    char_vocab_from_counts,
    count_codepoints,
    sniff_kind,
)
from ptm.data.segment_store import FORMAT_VERSION, SPLITS
from ptm.data.tokenizer import (
    CLS,
    SEP,
    IdMapper,
    build_tokenizer,
    build_wordpiece_tokenizer,
    is_id_vocabulary,
    load_tokenizer,
    save_tokenizer,
    vocab_from_counts,
    vocab_hash,
)
from ptm.errors import InputError
from ptm.files import written_aside
from ptm.progress import Progress, format_count

log = logging.getLogger(__name__)
DENSE_LIMIT = 1 << 24  # IDs below this are counted with one bincount per chunk
MAX_THREADS = 4  # past this, reading and hashing the file on one thread is the limit


@dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """Everything that changes the segments (and so the cache key)."""

    max_seq_len: int
    tail_drop_fraction: float
    pack: bool
    pack_window: int
    eval_fraction: float
    seed: int
    text_column: str
    vocab_min_count: int
    vocab_max_size: int | None

    def __post_init__(self) -> None:
        if self.max_seq_len < 8:
            raise InputError(None, f"max_seq_len={self.max_seq_len} is too short", "use 8 or more")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise InputError(None, f"eval_fraction={self.eval_fraction}", "use a value in [0, 1)")


_CHUNK_COUNTS = (
    "documents",
    "empty_lines",
    "ids",
    "unknown_ids",
    "dropped_tails",
    "dropped_tail_ids",
)


@dataclass
class _Counts:
    documents: int = 0
    empty_lines: int = 0
    ids: int = 0
    unknown_ids: int = 0
    dropped_tails: int = 0
    dropped_tail_ids: int = 0
    segments: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    positions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def add(self, chunk: _Counts) -> None:
        """Add one chunk's document and ID counts (segments are counted by the writers)."""
        for name in _CHUNK_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(chunk, name))


def _threads() -> int:
    return min(len(os.sched_getaffinity(0)), MAX_THREADS)


def _in_order(fn: Callable, items: Iterable[tuple]) -> Iterator[tuple[tuple, Any]]:
    """``(item, fn(*item))`` for every item, computed on a few threads (numpy releases the GIL
    in its loops) and yielded in order. Items are drawn lazily, at most two per thread ahead of
    the consumer, so memory stays bounded; an error surfaces at its item's turn."""
    workers = _threads()
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


def _source_chunks(
    sources: list[Path], stats: list[SourceStats], text_column: str
) -> Iterator[tuple[bytes, Path, int]]:
    """``(chunk, path, first line)`` of every source in order: the items `_in_order` parses."""
    for path, st in zip(sources, stats, strict=True):
        for first_line, chunk in iter_text_chunks(path, st, text_column):
            yield chunk, path, first_line


def _stream(
    sources: list[Path],
    text_column: str,
    stats: list[SourceStats],
    parse: Callable[[bytes, Path, int], ParsedLines] = parse_id_lines,
    unit: str = "IDs",
):
    """Parsed chunks of every source, in order, with a progress line over the bytes read.

    This thread reads and hashes while others parse (`_in_order`): ``parse`` is
    `ptm.data.idtext.parse_id_lines` for ID corpora, `RawTextEncoder.encode_chunk` for raw text.
    """
    total = sum(p.stat().st_size if p.is_file() else 0 for p in sources)
    progress = Progress("reading corpus", total, log)
    done = ids = 0
    for (chunk, path, first_line), parsed in _in_order(
        parse, _source_chunks(sources, stats, text_column)
    ):
        ids += len(parsed.ids)
        done += len(chunk)
        elapsed = max(progress.last - progress.start, 1e-9)
        progress.update(min(done, total), f"{format_count(ids / elapsed)} {unit}/s")
        yield path, first_line, parsed


class _Spill:
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
    sources: list[Path], text_column: str, stats: list[SourceStats], spill: _Spill | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct raw IDs and how often each occurs, over all sources, in one streaming pass.

    With ``spill``, every parsed chunk is also kept there for the build.
    """
    dense = np.zeros(0, np.int64)  # counts of IDs below DENSE_LIMIT, indexed by ID
    rare_ids, rare_counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _, _, parsed in _stream(sources, text_column, stats):
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


def _is_eval(doc_index: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """A seeded hash of the document number decides its split: stable whatever the chunking."""
    x = doc_index.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):  # splitmix64 relies on wrap-around
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


class _SplitWriter:
    """Appends the segments of one split to its binary files.

    Segments are collected as pieces and written a few megabytes at a time: one concatenation and
    one write per flush instead of several per segment (a corpus has hundreds of thousands).
    """

    FLUSH_POSITIONS = 1 << 22

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, cls_id: int, sep_id: int):
        self.dtype = dtype
        self.cls, self.sep = np.array([cls_id], dtype), np.array([sep_id], dtype)
        self.mark = np.ones(1, bool)
        self.files = {
            n: (out_dir / f"{split}.{n}.bin").open("wb")
            for n in ("tokens", "word_start", "offsets")
        }
        self.files["offsets"].write(memoryview(np.zeros(1, np.int64)))
        self.end = 0  # positions written or pending
        self.tokens: list[np.ndarray] = []
        self.starts: list[np.ndarray] = []
        self.ends: list[np.ndarray] = []
        self.packed_ends: list[int] = []  # ends of packed segments not yet moved to ``ends``
        self.pending = 0
        self.segments = 0

    def add_packed(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """One segment: ``[CLS]`` then each piece followed by ``[SEP]``."""
        self.tokens.append(self.cls)
        self.starts.append(self.mark)
        size = 1
        for ids, starts in pieces:
            self.tokens += (ids, self.sep)
            self.starts += (starts, self.mark)
            size += len(ids) + 1
        self._grow(size)
        self.packed_ends.append(self.end)
        self.segments += 1

    def add_rows(self, tokens: np.ndarray, marks: np.ndarray) -> None:
        """Many segments of one length at once: the rows of `_frame_rows`' arrays."""
        n, width = tokens.shape
        self.tokens.append(tokens.ravel())
        self.starts.append(marks.ravel())
        self._move_packed_ends()
        self.ends.append(self.end + width * np.arange(1, n + 1, dtype=np.int64))
        self._grow(n * width)
        self.segments += n

    def _grow(self, size: int) -> None:
        self.end += size
        self.pending += size
        if self.pending >= self.FLUSH_POSITIONS:
            self.flush()

    def _move_packed_ends(self) -> None:
        if self.packed_ends:
            self.ends.append(np.array(self.packed_ends, np.int64))
            self.packed_ends = []

    def flush(self) -> None:
        self._move_packed_ends()
        if self.tokens:
            self.files["tokens"].write(memoryview(np.concatenate(self.tokens).astype(self.dtype)))
            self.files["word_start"].write(memoryview(np.concatenate(self.starts).view(np.uint8)))
            self.files["offsets"].write(memoryview(np.concatenate(self.ends)))
        self.tokens, self.starts, self.ends, self.pending = [], [], [], 0

    def close(self) -> None:
        self.flush()
        for f in self.files.values():
            f.close()


class _Packer:
    """Best-fit packing of short pieces into segments, over a bounded window of open segments.

    Open segments are kept sorted by room left (ties by age), so the best fit is one bisection
    instead of a scan of the window per piece.
    """

    def __init__(self, capacity: int, window: int, emit) -> None:
        self.capacity, self.window, self.emit = capacity, window, emit
        self.by_room: list[tuple[int, int]] = []  # (room left, serial number), sorted
        self.pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.serial = 0

    def add(self, ids: np.ndarray, starts: np.ndarray) -> None:
        size = len(ids) + 1  # the piece and its [SEP]
        at = bisect_left(self.by_room, (size, -1))
        if at < len(self.by_room):
            room, key = self.by_room.pop(at)
        else:
            if len(self.by_room) >= self.window:  # close the fullest to make room
                self.emit(self.pieces.pop(self.by_room.pop(0)[1]))
            room, key = self.capacity, self.serial
            self.pieces[key] = []
            self.serial += 1
        insort(self.by_room, (room - size, key))
        self.pieces[key].append((ids, starts))

    def flush(self) -> None:
        for key in sorted(self.pieces):  # oldest first
            self.emit(self.pieces.pop(key))
        self.by_room = []


def build_segments(
    sources: list[Path],
    out_dir: Path,
    cfg: SegmentConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    word_segmenter: str = "none",
    tokenizer_source: str | None = None,
) -> dict:
    """Build the segment folder ``out_dir`` from ``sources``; returns its ``meta.json`` content.

    The sources hold anonymized IDs or raw text, told apart by their first lines; a
    ``tokenizer`` (loaded from ``tokenizer_source``, named in errors) must suit them: an ID
    vocabulary for IDs, a WordPiece one for raw text. Without one the vocabulary is built from
    the sources first (one extra streaming pass): IDs by frequency, or a Chinese BERT's
    character vocabulary (`ptm.data.rawtext.char_vocab_from_counts`). ``word_segmenter`` marks
    whole words in raw text (`ptm.data.rawtext`). The folder is written under a temporary name and renamed at the end, so an
    interrupted build never leaves a folder that looks complete.
    """
    sources = [Path(s) for s in sources]
    if not sources:
        raise InputError(None, "no corpus files given", "set data.corpus to one or more files")
    for path in sources:
        if not path.is_file():
            raise InputError(
                path, "no such corpus file", "check data.corpus (run `make data` for the default)"
            )
    with written_aside(out_dir) as tmp:
        kind = corpus_kind(sources, cfg.text_column, tokenizer, tokenizer_source, word_segmenter)
        if kind == "text":
            tokenizer, encoder, text = _text_parser(sources, cfg, tokenizer, word_segmenter)
            try:
                meta = _fill(tmp, sources, cfg, tokenizer, encoder, text)
            finally:
                encoder.close()
        else:
            meta = _fill(tmp, sources, cfg, tokenizer)
    log.info(
        "segments: %d train / %d eval, packing efficiency %s, %d tails dropped (%d IDs) -> %s",
        meta["counts"]["segments"]["train"],
        meta["counts"]["segments"]["eval"],
        meta["packing_efficiency"]["train"],
        meta["counts"]["dropped_tails"],
        meta["counts"]["dropped_tail_ids"],
        out_dir,
    )
    return meta


_FIX_ID_TOKENIZER = (
    "raw text needs a WordPiece vocabulary: set model.init_from (or data.tokenizer) to a Chinese "
    "BERT folder or its vocab.txt, or leave both unset to build a character vocabulary from the "
    "corpus"
)
_FIX_TEXT_TOKENIZER = (
    "anonymized IDs need an ID vocabulary: leave data.tokenizer and model.init_from unset to "
    "build one from the corpus, or point them to a model pretrained by ptm on IDs"
)


def corpus_kind(
    sources: list[Path],
    text_column: str,
    tokenizer: PreTrainedTokenizerBase | None,
    tokenizer_source: str | None = None,
    word_segmenter: str = "none",
) -> str:
    """``"ids"`` or ``"text"``: what the sources hold (from their first lines), checked against
    the tokenizer, so a raw-text corpus never meets an ID vocabulary (or the reverse) unnoticed.
    """
    expected = None if tokenizer is None else "ids" if is_id_vocabulary(tokenizer) else "text"
    named = f"the tokenizer ({tokenizer_source or 'given'})"
    found: tuple[str, Path] | None = None
    for path in sources:
        sniffed = _sniff_file(path, text_column)
        if sniffed is None:
            continue  # no text at all: the build says so
        kind, at, line = sniffed
        sample = line[:40].decode("utf-8", errors="replace")
        if expected == "ids" and kind == "text":
            raise InputError(
                path,
                f"raw text ({sample!r}) but {named} is an ID vocabulary",
                _FIX_ID_TOKENIZER,
                at,
            )
        if expected == "text" and kind == "ids":
            raise InputError(
                path,
                f"anonymized IDs ({sample!r}) but {named} is a WordPiece vocabulary",
                _FIX_TEXT_TOKENIZER,
                at,
            )
        if found is not None and found[0] != kind:
            raise InputError(
                path,
                f"{'raw text' if kind == 'text' else 'anonymized IDs'} ({sample!r}), but "
                f"{found[1]} holds {'raw text' if found[0] == 'text' else 'IDs'}",
                "pretrain on one kind of corpus at a time",
                at,
            )
        found = (kind, path)
    kind = expected or (found[0] if found else "ids")
    if kind == "ids" and word_segmenter != "none":
        raise InputError(
            sources[0],
            f"data.word_segmenter={word_segmenter} segments raw text, but this corpus holds IDs",
            "ID corpora mark words by joining IDs with '_'; set data.word_segmenter=none",
        )
    return kind


def _sniff_file(path: Path, text_column: str) -> tuple[str, int, bytes] | None:
    """`ptm.data.rawtext.sniff_kind` on the file's first chunk that has a non-empty line, with
    the file line number of the line that decided it."""
    chunks = iter_text_chunks(path, SourceStats(path), text_column)
    try:
        for first_line, chunk in chunks:
            sniffed = sniff_kind(chunk)
            if sniffed is not None:
                return sniffed[0], first_line + sniffed[1], sniffed[2]
        return None
    finally:
        chunks.close()


def _text_parser(
    sources: list[Path],
    cfg: SegmentConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    word_segmenter: str,
) -> tuple[PreTrainedTokenizerBase, RawTextEncoder, dict]:
    """The tokenizer (built from the corpus' characters when none is given) and the encoder of
    a raw-text corpus, with what `_fill` records about it."""
    built = tokenizer is None
    if built:
        counts = np.zeros(0, np.int64)
        stats = [SourceStats(p) for p in sources]
        chunks = _source_chunks(sources, stats, cfg.text_column)
        for _, found in _in_order(count_codepoints, chunks):
            if len(found) > len(counts):
                found[: len(counts)] += counts
                counts = found
            else:
                counts[: len(found)] += found
        vocab = char_vocab_from_counts(counts, cfg.vocab_min_count, cfg.vocab_max_size)
        tokenizer = build_wordpiece_tokenizer(vocab, cfg.max_seq_len)
        log.info(
            "vocabulary: %d entries from %d distinct characters",
            len(vocab),
            int(np.count_nonzero(counts)),
        )
    encoder = RawTextEncoder(tokenizer, word_segmenter, _threads())
    text = {
        "kind": "raw text",
        "word_segmenter": word_segmenter,
        "vocabulary": "built from the corpus" if built else "given",
        "per_character": encoder.per_character,
    }
    return tokenizer, encoder, text


def _fill(
    tmp: Path,
    sources: list[Path],
    cfg: SegmentConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    encoder: RawTextEncoder | None = None,
    text: dict | None = None,
) -> dict:
    """Everything `build_segments` writes, into the temporary folder ``tmp``; ``encoder``
    tokenizes raw text (its ``text`` description goes into ``meta.json``)."""
    stats = [SourceStats(p) for p in sources]
    spill = None
    if tokenizer is None:
        (tmp / "spill").mkdir()
        spill = _Spill(tmp / "spill")
        ids, counts = count_ids(sources, cfg.text_column, stats, spill)
        if len(ids) == 0:
            raise InputError(
                sources[0], "the corpus holds no IDs", "check the files and text column"
            )
        vocab = vocab_from_counts(ids, counts, cfg.vocab_min_count, cfg.vocab_max_size)
        tokenizer = build_tokenizer(vocab, cfg.max_seq_len)
        log.info("vocabulary: %d entries from %d distinct IDs", len(vocab), len(ids))
        total_ids = int(counts.sum())
    tokenizer.model_max_length = cfg.max_seq_len

    vocab_size = len(tokenizer.get_vocab())
    dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.int32)
    counts = _Counts()
    cls_id, sep_id = tokenizer.convert_tokens_to_ids([CLS, SEP])
    writers = {s: _SplitWriter(tmp, s, dtype, cls_id, sep_id) for s in SPLITS}
    capacity = cfg.max_seq_len - 1  # [CLS] opens every segment
    packers = {s: _Packer(capacity, cfg.pack_window, writers[s].add_packed) for s in SPLITS}
    to_index = IdMapper(tokenizer, dtype) if encoder is None else _Cast(dtype)
    has_words = False

    if spill is not None:
        chunks = spill.replay(total_ids)
    elif encoder is not None:
        chunks = (
            parsed
            for _, _, parsed in _stream(
                sources, cfg.text_column, stats, encoder.encode_chunk, "tokens"
            )
        )
    else:
        chunks = (parsed for _, _, parsed in _stream(sources, cfg.text_column, stats))

    def numbered():  # each chunk with the number of its first document
        first_doc = 0
        for parsed in chunks:
            yield parsed, first_doc
            first_doc += int(np.count_nonzero(parsed.line_lengths))

    special = (cls_id, sep_id, tokenizer.unk_token_id)
    for (parsed, _), cut in _in_order(
        lambda parsed, first: _cut_chunk(parsed, first, to_index, cfg, special), numbered()
    ):
        has_words |= parsed.has_word_joins
        counts.add(cut.counts)
        for split, (tokens, marks) in cut.rows.items():
            writers[split].add_rows(tokens, marks)
        for split, ids, starts in cut.pieces:
            if cfg.pack:
                packers[split].add(ids, starts)
            else:
                writers[split].add_packed([(ids, starts)])
    for packer in packers.values():
        packer.flush()
    for split, w in writers.items():
        w.close()
        counts.segments[split] = w.segments
        counts.positions[split] = w.end
    if not has_words:
        for s in SPLITS:
            (tmp / f"{s}.word_start.bin").unlink()
    if counts.segments["train"] == 0:
        raise InputError(
            sources[0], "no training segment could be built", "add documents to the corpus"
        )

    save_tokenizer(tokenizer, tmp / "tokenizer")
    padded = {s: counts.segments[s] * cfg.max_seq_len for s in SPLITS}
    meta = {
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "sources": [
            {
                "path": str(st.path),
                "sha256": st.sha256,
                "lines": st.lines,
                "crlf": st.crlf,
                "bom": st.bom,
            }
            for st in stats
        ],
        "vocab_size": vocab_size,
        "vocab_hash": vocab_hash(tokenizer),
        "dtype": dtype.name,
        "word_boundaries": has_words,
        **({"text": text} if text is not None else {}),
        "counts": asdict(counts),
        "packing_efficiency": {
            s: round(counts.positions[s] / padded[s], 4) if padded[s] else None for s in SPLITS
        },
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for st in stats:
        if st.crlf or st.bom:
            log.warning("%s: CRLF line ends / byte-order mark found and handled", st.path)
    if counts.empty_lines:
        log.warning("skipped %d empty lines (no IDs or tokens) in the corpus", counts.empty_lines)
    if counts.unknown_ids and encoder is None:
        log.warning("%d IDs are not in the vocabulary and became [UNK]", counts.unknown_ids)
    elif counts.unknown_ids:
        log.warning(
            "%d of %d tokens (%.2f%%) are [UNK]: characters or words the vocabulary cannot spell"
            " (is this the model's own tokenizer?)",
            counts.unknown_ids,
            counts.ids,
            100 * counts.unknown_ids / max(counts.ids, 1),
        )
    return meta


class _Cast:
    """Raw text arrives as vocabulary indices already: only the storage type changes."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return ids.astype(self.dtype)


@dataclass
class _Cut:
    """What one chunk of documents becomes: whole segments of each split, framed and ready to
    write, and the pieces (short documents, kept tails) still to be packed, in document order."""

    rows: dict[str, tuple[np.ndarray, np.ndarray]]
    pieces: list[tuple[str, np.ndarray, np.ndarray]]
    counts: _Counts


def _frame_rows(ids: np.ndarray, starts: np.ndarray, cls_id: int, sep_id: int):
    """``[CLS] row [SEP]`` for every row, with word-start marks to match."""
    n = len(ids)
    tokens = np.empty((n, ids.shape[1] + 2), ids.dtype)
    tokens[:, 0], tokens[:, -1], tokens[:, 1:-1] = cls_id, sep_id, ids
    marks = np.ones(tokens.shape, bool)
    marks[:, 1:-1] = starts
    return tokens, marks


def _cut_chunk(
    parsed: ParsedLines,
    first_doc: int,
    to_index: IdMapper,
    cfg: SegmentConfig,
    special: tuple[int, int, int],
) -> _Cut:
    """Cut the documents of one parsed chunk: every full-length piece of a long document becomes
    a segment (cut for the whole chunk at once, as one 2-D gather); short documents and the
    tails worth keeping become pieces to pack. ``first_doc`` numbers the chunk's first document
    (its split depends on it); ``special`` is the ``[CLS]``, ``[SEP]`` and ``[UNK]`` index.
    Pure, so chunks are cut on several threads."""
    cls_id, sep_id, unk_id = special
    index = to_index(parsed.ids)
    counts = _Counts(ids=len(index), unknown_ids=int((index == unk_id).sum()))
    body = cfg.max_seq_len - 2
    lengths = parsed.line_lengths
    nonempty = lengths > 0
    counts.empty_lines = int((~nonempty).sum())
    counts.documents = int(nonempty.sum())
    eval_doc = _is_eval(first_doc + np.cumsum(nonempty) - 1, cfg.seed, cfg.eval_fraction)
    doc_start = np.cumsum(lengths) - lengths

    rows = {}
    long_doc = lengths > body
    n_full = np.where(long_doc, lengths // body, 0)
    if n_full.any():
        seg_doc = np.repeat(np.arange(len(lengths)), n_full)
        k = np.arange(len(seg_doc)) - np.repeat(np.cumsum(n_full) - n_full, n_full)
        cols = (doc_start[seg_doc] + k * body)[:, None] + np.arange(body)  # (segments, body)
        ids, starts, in_eval = index[cols], parsed.word_start[cols], eval_doc[seg_doc]
        for split, chosen in (("train", ~in_eval), ("eval", in_eval)):
            if chosen.any():
                rows[split] = _frame_rows(ids[chosen], starts[chosen], cls_id, sep_id)

    rest = np.where(long_doc, lengths % body, lengths)
    drop = long_doc & (rest > 0) & (rest + 2 <= cfg.tail_drop_fraction * cfg.max_seq_len)
    counts.dropped_tails = int(drop.sum())
    counts.dropped_tail_ids = int(rest[drop].sum())
    piece_start = doc_start + lengths - rest
    pieces = []
    for line in np.flatnonzero((rest > 0) & ~drop).tolist():
        lo = int(piece_start[line])
        hi = lo + int(rest[line])
        split = "eval" if eval_doc[line] else "train"
        pieces.append((split, index[lo:hi], parsed.word_start[lo:hi]))
    return _Cut(rows, pieces, counts)


def cache_key(
    sources: list[Path],
    cfg: SegmentConfig,
    tokenizer_source: str | None,
    word_segmenter: str = "none",
) -> str:
    """Names the segment folder after what it was built from, so a change rebuilds it."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(str(FORMAT_VERSION).encode())
    if word_segmenter != "none":  # (absent otherwise, so ID corpora keep their keys)
        h.update(f"word_segmenter={word_segmenter}".encode())
    hash_file_versions(h, sources)
    if tokenizer_source:
        h.update(str(Path(tokenizer_source).resolve()).encode())
    return h.hexdigest()[:12]


def hash_file_versions(h: Any, paths: list[Path]) -> None:
    """Feed each file's path, size and modification time to the hash ``h``: a cache named
    after it is rebuilt when a file changes, without reading the files."""
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())


def prepare_segments(
    corpus: list[Path],
    tokenizer_source: str | None,
    cache_dir: Path,
    cfg: SegmentConfig,
    word_segmenter: str = "none",
) -> Path:
    """The segment folder for this corpus and these settings, built on first use."""
    for path in corpus:
        if not Path(path).is_file():
            hint = "run `make data` first" if "embedded" in str(path) else "check data.corpus"
            raise InputError(path, "no such corpus file", hint)
    folder = Path(cache_dir) / cache_key(corpus, cfg, tokenizer_source, word_segmenter)
    if (folder / "meta.json").is_file():
        log.info("segments: reusing %s", folder)
        return folder
    tokenizer = load_tokenizer(tokenizer_source, cfg.max_seq_len) if tokenizer_source else None
    build_segments(corpus, folder, cfg, tokenizer, word_segmenter, tokenizer_source)
    return folder
