"""MLM pretraining data: documents cut and packed into segments, stored as memory-mapped arrays.

Why this shape (and not `run_mlm.py`'s tokenize-then-``group_texts``):

* **Streaming, bounded memory.** Corpora are read in chunks (`ptm.idtext`); the vocabulary pass
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
* **Masks are not stored.** Masking happens per batch (`ptm.masking`), so every epoch sees new
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ptm.errors import InputError
from ptm.idtext import ParsedLines, SourceStats, iter_text_chunks, parse_id_lines
from ptm.progress import Progress, format_count
from ptm.tokenizer import (
    CLS,
    SEP,
    IdMapper,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
    vocab_from_counts,
    vocab_hash,
)

log = logging.getLogger(__name__)
SPLITS = ("train", "eval")
DENSE_LIMIT = 1 << 24  # IDs below this are counted with one bincount per chunk
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SegmentConfig:
    """Everything that changes the segments (and so the cache key)."""

    max_seq_len: int = 256
    tail_drop_fraction: float = 0.5
    pack: bool = True
    pack_window: int = 64
    eval_fraction: float = 0.01
    seed: int = 0
    text_column: str = "text"
    vocab_min_count: int = 1
    vocab_max_size: int | None = None

    def __post_init__(self) -> None:
        if self.max_seq_len < 8:
            raise InputError(None, f"max_seq_len={self.max_seq_len} is too short", "use 8 or more")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise InputError(None, f"eval_fraction={self.eval_fraction}", "use a value in [0, 1)")


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


def _stream(sources: list[Path], text_column: str, stats: list[SourceStats]):
    """Parsed chunks of every source, with a progress line over the bytes read."""
    total = sum(p.stat().st_size if p.is_file() else 0 for p in sources)
    progress = Progress("reading corpus", total, log)
    done = ids = 0
    for path, st in zip(sources, stats, strict=True):
        for first_line, chunk in iter_text_chunks(path, st, text_column):
            parsed = parse_id_lines(chunk, path, first_line)
            ids += len(parsed.ids)
            done += len(chunk)
            elapsed = max(progress.last - progress.start, 1e-9)
            progress.update(min(done, total), f"{format_count(ids / elapsed)} IDs/s")
            yield path, first_line, parsed


def _spill(folder: Path, k: int, parsed: ParsedLines) -> None:
    """Keep a parsed chunk for the second pass: reading it back beats parsing the text again."""
    narrow = len(parsed.ids) == 0 or parsed.ids.max() < 1 << 32
    np.savez(
        folder / f"{k:06d}.npz",
        ids=parsed.ids.astype(np.uint32) if narrow else parsed.ids,
        word_start=parsed.word_start,
        line_lengths=parsed.line_lengths,
        has_word_joins=np.array(parsed.has_word_joins),
    )


def _replay(folder: Path, total_ids: int):
    """The chunks `_spill` kept, in order, with the same progress line as `_stream`."""
    progress = Progress("segmenting", total_ids, log)
    done = 0
    for path in sorted(folder.glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            parsed = ParsedLines(
                z["ids"].astype(np.int64),
                z["word_start"],
                z["line_lengths"],
                bool(z["has_word_joins"]),
            )
        path.unlink()
        done += len(parsed.ids)
        progress.update(done)
        yield parsed


def count_ids(
    sources: list[Path], text_column: str, stats: list[SourceStats], spill: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct raw IDs and how often each occurs, over all sources, in one streaming pass.

    With ``spill``, every parsed chunk is also kept there for `_replay`.
    """
    dense = np.zeros(0, np.int64)  # counts of IDs below DENSE_LIMIT, indexed by ID
    rare_ids, rare_counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for k, (_, _, parsed) in enumerate(_stream(sources, text_column, stats)):
        if spill is not None:
            _spill(spill, k, parsed)
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
    """Appends segments of one split to its binary files."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.tokens = (out_dir / f"{split}.tokens.bin").open("wb")
        self.word_start = (out_dir / f"{split}.word_start.bin").open("wb")
        self.offsets = (out_dir / f"{split}.offsets.bin").open("wb")
        self.end = 0
        self.offsets.write(np.zeros(1, np.int64).tobytes())

    def write(self, tokens: np.ndarray, word_start: np.ndarray) -> None:
        self.tokens.write(tokens.astype(self.dtype).tobytes())
        self.word_start.write(word_start.astype(np.uint8).tobytes())
        self.end += len(tokens)
        self.offsets.write(np.array([self.end], np.int64).tobytes())

    def write_rows(self, tokens: np.ndarray, word_start: np.ndarray) -> None:
        """Many segments of one length at once: rows of a (segments, length) array."""
        n, width = tokens.shape
        self.tokens.write(tokens.astype(self.dtype).tobytes())
        self.word_start.write(word_start.astype(np.uint8).tobytes())
        self.offsets.write((self.end + width * np.arange(1, n + 1, dtype=np.int64)).tobytes())
        self.end += n * width

    def close(self) -> None:
        for f in (self.tokens, self.word_start, self.offsets):
            f.close()


class _Packer:
    """Best-fit packing of short pieces into segments, over a bounded window of open segments."""

    def __init__(self, capacity: int, window: int, emit) -> None:
        self.capacity, self.window, self.emit = capacity, window, emit
        self.remaining: list[int] = []
        self.pieces: list[list[tuple[np.ndarray, np.ndarray]]] = []

    def add(self, ids: np.ndarray, starts: np.ndarray) -> None:
        size = len(ids) + 1  # the piece and its [SEP]
        fits = [i for i, r in enumerate(self.remaining) if r >= size]
        if fits:
            best = min(fits, key=self.remaining.__getitem__)
        else:
            if len(self.remaining) >= self.window:
                self._close(min(range(len(self.remaining)), key=self.remaining.__getitem__))
            self.remaining.append(self.capacity)
            self.pieces.append([])
            best = len(self.remaining) - 1
        self.remaining[best] -= size
        self.pieces[best].append((ids, starts))

    def _close(self, i: int) -> None:
        self.remaining.pop(i)
        self.emit(self.pieces.pop(i))

    def flush(self) -> None:
        while self.remaining:
            self._close(0)


def build_segments(
    sources: list[Path],
    out_dir: Path,
    cfg: SegmentConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> dict:
    """Build the segment folder ``out_dir`` from ``sources``; returns its ``meta.json`` content.

    Without a ``tokenizer`` the vocabulary is built from the sources first (one extra streaming
    pass). The folder is written under a temporary name and renamed at the end, so an
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
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = _fill(tmp, sources, cfg, tokenizer)
    except BaseException:  # cleanup only: the error goes on to the caller
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
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


def _fill(
    tmp: Path, sources: list[Path], cfg: SegmentConfig, tokenizer: PreTrainedTokenizerBase | None
) -> dict:
    """Everything `build_segments` writes, into the temporary folder ``tmp``."""
    stats = [SourceStats(p) for p in sources]
    spill = None
    if tokenizer is None:
        spill = tmp / "spill"
        spill.mkdir()
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
    writers = {s: _SplitWriter(tmp, s, dtype) for s in SPLITS}
    counts = _Counts()
    cls_id, sep_id = tokenizer.convert_tokens_to_ids([CLS, SEP])
    cls, sep, mark = np.array([cls_id]), np.array([sep_id]), np.ones(1, bool)

    def emit_to(split: str):
        def emit(pieces: list[tuple[np.ndarray, np.ndarray]]) -> None:
            tokens = [cls]
            starts = [mark]
            for ids, st in pieces:
                tokens += [ids, sep]
                starts += [st, mark]
            writers[split].write(np.concatenate(tokens), np.concatenate(starts))
            counts.segments[split] += 1
            counts.positions[split] += sum(len(t) for t in tokens)

        return emit

    emitters = {s: emit_to(s) for s in SPLITS}

    def emit_rows(split: str, ids: np.ndarray, starts: np.ndarray) -> None:
        n = len(ids)
        tokens = np.concatenate([np.full((n, 1), cls_id), ids, np.full((n, 1), sep_id)], axis=1)
        marks = np.concatenate([np.ones((n, 1), bool), starts, np.ones((n, 1), bool)], axis=1)
        writers[split].write_rows(tokens, marks)
        counts.segments[split] += n
        counts.positions[split] += tokens.size

    capacity = cfg.max_seq_len - 1  # [CLS] opens every segment
    packers = {s: _Packer(capacity, cfg.pack_window, emitters[s]) for s in SPLITS}
    to_index = IdMapper(tokenizer)
    has_words = False

    def place(split: str, ids: np.ndarray, starts: np.ndarray) -> None:
        if cfg.pack:
            packers[split].add(ids, starts)
        else:
            emitters[split]([(ids, starts)])

    if spill is not None:
        chunks = _replay(spill, total_ids)
    else:
        chunks = (parsed for _, _, parsed in _stream(sources, cfg.text_column, stats))
    for parsed in chunks:
        has_words |= parsed.has_word_joins
        index = to_index(parsed.ids)
        counts.unknown_ids += int((index == tokenizer.unk_token_id).sum())
        counts.ids += len(index)
        _segment_chunk(parsed, index, counts, cfg, place, emit_rows)
    for packer in packers.values():
        packer.flush()
    if spill is not None:
        spill.rmdir()
    for w in writers.values():
        w.close()
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
        log.warning("skipped %d empty lines (no IDs) in the corpus", counts.empty_lines)
    if counts.unknown_ids:
        log.warning("%d IDs are not in the vocabulary and became [UNK]", counts.unknown_ids)
    return meta


def _segment_chunk(
    parsed: ParsedLines, index: np.ndarray, counts: _Counts, cfg: SegmentConfig, place, emit_rows
) -> None:
    """Cut the documents of one parsed chunk: every full-length piece of a long document becomes
    a segment (cut for the whole chunk at once, as one 2-D gather); short documents and the
    tails worth keeping go to ``place`` one by one, to be packed."""
    body = cfg.max_seq_len - 2
    lengths = parsed.line_lengths
    nonempty = lengths > 0
    counts.empty_lines += int((~nonempty).sum())
    doc_numbers = counts.documents + np.cumsum(nonempty) - 1
    counts.documents += int(nonempty.sum())
    eval_doc = _is_eval(doc_numbers, cfg.seed, cfg.eval_fraction)
    doc_start = np.cumsum(lengths) - lengths

    long_doc = lengths > body
    n_full = np.where(long_doc, lengths // body, 0)
    if n_full.any():
        seg_doc = np.repeat(np.arange(len(lengths)), n_full)
        k = np.arange(len(seg_doc)) - np.repeat(np.cumsum(n_full) - n_full, n_full)
        cols = (doc_start[seg_doc] + k * body)[:, None] + np.arange(body)  # (segments, body)
        ids, starts, in_eval = index[cols], parsed.word_start[cols], eval_doc[seg_doc]
        for split, rows in (("train", ~in_eval), ("eval", in_eval)):
            if rows.any():
                emit_rows(split, ids[rows], starts[rows])

    rest = np.where(long_doc, lengths % body, lengths)
    drop = long_doc & (rest > 0) & (rest + 2 <= cfg.tail_drop_fraction * cfg.max_seq_len)
    counts.dropped_tails += int(drop.sum())
    counts.dropped_tail_ids += int(rest[drop].sum())
    piece_start = doc_start + lengths - rest
    for line in np.flatnonzero((rest > 0) & ~drop).tolist():
        lo = int(piece_start[line])
        hi = lo + int(rest[line])
        place("eval" if eval_doc[line] else "train", index[lo:hi], parsed.word_start[lo:hi])


def cache_key(sources: list[Path], cfg: SegmentConfig, tokenizer_source: str | None) -> str:
    """Names the segment folder after what it was built from, so a change rebuilds it."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(str(FORMAT_VERSION).encode())
    for p in sources:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    if tokenizer_source:
        h.update(str(Path(tokenizer_source).resolve()).encode())
    return h.hexdigest()[:12]


class SegmentData:
    """Read-only view of one split of a segment folder, backed by memory maps."""

    def __init__(self, folder: Path, split: str) -> None:
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise InputError(
                folder,
                "not a segment folder (no meta.json)",
                "build it with `python -m pretrain.segments`",
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                folder, "built by another ptm version", "delete the folder to rebuild it"
            )
        self.max_seq_len = int(self.meta["config"]["max_seq_len"])
        dtype = np.dtype(self.meta["dtype"])
        self.offsets = np.fromfile(folder / f"{split}.offsets.bin", dtype=np.int64)
        self.tokens = np.memmap(folder / f"{split}.tokens.bin", dtype=dtype, mode="r")
        ws = folder / f"{split}.word_start.bin"
        self.word_start = np.memmap(ws, dtype=np.uint8, mode="r") if ws.is_file() else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(
        self, indices: np.ndarray, pad_id: int, multiple_of: int = 8
    ) -> dict[str, torch.Tensor]:
        """Pad the chosen segments to the longest one (rounded up to ``multiple_of``)."""
        lo, hi = self.offsets[indices], self.offsets[indices + 1]
        longest = int((hi - lo).max())
        width = min(-(-longest // multiple_of) * multiple_of, max(self.max_seq_len, longest))
        ids = np.full((len(indices), width), pad_id, dtype=np.int64)
        starts = np.ones((len(indices), width), dtype=bool)
        for row, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            ids[row, : b - a] = self.tokens[a:b]
            if self.word_start is not None:
                starts[row, : b - a] = self.word_start[a:b]
        out = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(ids != pad_id).long(),
        }
        if self.word_start is not None:
            out["word_start"] = torch.from_numpy(starts)
        return out


def load_segment_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(folder / "tokenizer")


def prepare_segments(
    corpus: list[Path], tokenizer_source: str | None, cache_dir: Path, cfg: SegmentConfig
) -> Path:
    """The segment folder for this corpus and these settings, built on first use."""
    for path in corpus:
        if not Path(path).is_file():
            hint = "run `make data` first" if "embedded" in str(path) else "check data.corpus"
            raise InputError(path, "no such corpus file", hint)
    folder = Path(cache_dir) / cache_key(corpus, cfg, tokenizer_source)
    if (folder / "meta.json").is_file():
        log.info("segments: reusing %s", folder)
        return folder
    tokenizer = load_tokenizer(tokenizer_source, cfg.max_seq_len) if tokenizer_source else None
    build_segments(corpus, folder, cfg, tokenizer)
    return folder


def unigram_entropy(data: SegmentData, special_ids: list[int], vocab_size: int) -> float:
    """Entropy (nats) of the ordinary-token unigram distribution: the loss of a model that
    ignores context. An MLM whose held-out loss is not clearly below it has learned nothing."""
    counts = np.zeros(vocab_size, np.int64)
    step = 1 << 24
    for lo in range(0, len(data.tokens), step):
        counts += np.bincount(np.asarray(data.tokens[lo : lo + step]), minlength=vocab_size)
    counts[special_ids] = 0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
