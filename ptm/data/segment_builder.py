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

The pieces live in modules of their own: the settings (`ptm.data.segment_config`, importable
from here too), what a corpus holds (`ptm.data.corpus_kind`), reading it on a few threads
(`ptm.data.corpus_stream`), cutting documents (`ptm.data.segment_cutting`) and packing and
writing segments (`ptm.data.segment_writer`). This module puts them together and keeps the cache:
a folder named after what it was built from (`cache_key`), built once even when several runs ask
for it at the same moment (`prepare_segments`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Generator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from ptm.data.corpus_kind import corpus_kind
from ptm.data.corpus_stream import Spill, count_ids, in_order, source_chunks, stream, threads
from ptm.data.idtext import ParsedLines, SourceStats
from ptm.data.rawtext import RawTextEncoder, char_vocab_from_counts, count_codepoints
from ptm.data.segment_config import SegmentConfig
from ptm.data.segment_cutting import Cast, Counts, cut_chunk
from ptm.data.segment_store import FORMAT_VERSION, SPLITS
from ptm.data.segment_writer import Packer, SplitWriter
from ptm.data.tokenizer import (
    CLS,
    SEP,
    IdMapper,
    build_tokenizer,
    build_wordpiece_tokenizer,
    load_tokenizer,
    save_tokenizer,
    vocab_from_counts,
    vocab_hash,
)
from ptm.errors import InputError
from ptm.files import exclusive, written_aside

log = logging.getLogger(__name__)


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
    whole words in raw text (`ptm.data.rawtext`). The folder is written under a temporary name
    and renamed at the end, so an interrupted build never leaves a folder that looks complete,
    and a full disk stops it with one line (`ptm.files.written_aside`).
    """
    sources = [Path(s) for s in sources]
    if not sources:
        raise InputError(None, "no corpus files given", "set data.corpus to one or more files")
    for path in sources:
        if not path.is_file():
            raise InputError(
                path, "no such corpus file", "check data.corpus (run `make data` for the default)"
            )
    with written_aside(out_dir, expected_bytes=_expected_bytes(sources)) as tmp:
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


def _expected_bytes(sources: list[Path]) -> int:
    """What a build may hold on disk at its peak, for the message of a full disk: 1.5 times the
    corpus. An ID is 2 bytes of token and 1 of word mark in the segments and as much again in
    the spill until the end (measured: 55.7 MB at the peak, 28.2 MB left, for 36.4 MB of
    3-digit IDs); raw text has no spill and needs about its own size."""
    return sum(p.stat().st_size for p in sources) * 3 // 2


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
        chunks = source_chunks(sources, stats, cfg.text_column)
        for _, found in in_order(count_codepoints, chunks):
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
    encoder = RawTextEncoder(tokenizer, word_segmenter, threads())
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
    chunks, tokenizer = _parsed_chunks(tmp, sources, cfg, stats, tokenizer, encoder)
    tokenizer.model_max_length = cfg.max_seq_len
    vocab_size = len(tokenizer.get_vocab())
    dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.int32)
    to_index = IdMapper(tokenizer, dtype) if encoder is None else Cast(dtype)
    try:
        counts, has_words = _write_splits(tmp, chunks, cfg, tokenizer, dtype, to_index)
    finally:
        chunks.close()  # now, not when the error is dropped: it holds the spill's files open
    if not has_words:
        for s in SPLITS:
            (tmp / f"{s}.word_start.bin").unlink()
    if counts.segments["train"] == 0:
        raise InputError(
            sources[0], "no training segment could be built", "add documents to the corpus"
        )
    save_tokenizer(tokenizer, tmp / "tokenizer")
    meta = _meta(cfg, stats, tokenizer, dtype, has_words, text, counts)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    _warn_about(stats, counts, raw_text=encoder is not None)
    return meta


def _parsed_chunks(
    tmp: Path,
    sources: list[Path],
    cfg: SegmentConfig,
    stats: list[SourceStats],
    tokenizer: PreTrainedTokenizerBase | None,
    encoder: RawTextEncoder | None,
) -> tuple[Generator[ParsedLines, None, None], PreTrainedTokenizerBase]:
    """The parsed chunks of the corpus, in order, and the tokenizer. Without a tokenizer (an ID
    corpus) the vocabulary is counted first, with every chunk kept in a spill under ``tmp`` to
    be read back instead of parsed again."""
    if tokenizer is None:
        (tmp / "spill").mkdir()
        spill = Spill(tmp / "spill")
        try:
            ids, counts = count_ids(sources, cfg.text_column, stats, spill)
        except BaseException:
            spill.abandon()
            raise
        if len(ids) == 0:
            raise InputError(
                sources[0], "the corpus holds no IDs", "check the files and text column"
            )
        vocab = vocab_from_counts(ids, counts, cfg.vocab_min_count, cfg.vocab_max_size)
        tokenizer = build_tokenizer(vocab, cfg.max_seq_len)
        log.info("vocabulary: %d entries from %d distinct IDs", len(vocab), len(ids))
        return spill.replay(int(counts.sum())), tokenizer
    if encoder is not None:
        parsed = stream(sources, cfg.text_column, stats, encoder.encode_chunk, "tokens")
    else:
        parsed = stream(sources, cfg.text_column, stats)
    return (chunk for _, _, chunk in parsed), tokenizer


def _numbered(chunks: Iterator[ParsedLines]) -> Iterator[tuple[ParsedLines, int]]:
    """Each chunk with the number of its first document (its split depends on it)."""
    first_doc = 0
    for parsed in chunks:
        yield parsed, first_doc
        first_doc += int(np.count_nonzero(parsed.line_lengths))


def _write_splits(
    tmp: Path,
    chunks: Iterator[ParsedLines],
    cfg: SegmentConfig,
    tokenizer: PreTrainedTokenizerBase,
    dtype: np.dtype,
    to_index: IdMapper | Cast,
) -> tuple[Counts, bool]:
    """Cut every chunk (on a few threads), pack the pieces and write both splits' files into
    ``tmp``; the counts, and whether any chunk marked words."""
    counts = Counts()
    cls_id, sep_id = tokenizer.convert_tokens_to_ids([CLS, SEP])
    writers = {s: SplitWriter(tmp, s, dtype, cls_id, sep_id) for s in SPLITS}
    capacity = cfg.max_seq_len - 1  # [CLS] opens every segment
    packers = {s: Packer(capacity, cfg.pack_window, writers[s].add_packed) for s in SPLITS}
    has_words = False
    special = (cls_id, sep_id, tokenizer.unk_token_id)
    try:
        for (parsed, _), cut in in_order(
            lambda parsed, first: cut_chunk(parsed, first, to_index, cfg, special),
            _numbered(chunks),
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
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abandon()
        raise
    for split, w in writers.items():
        counts.segments[split] = w.segments
        counts.positions[split] = w.end
    return counts, has_words


def _meta(
    cfg: SegmentConfig,
    stats: list[SourceStats],
    tokenizer: PreTrainedTokenizerBase,
    dtype: np.dtype,
    has_words: bool,
    text: dict | None,
    counts: Counts,
) -> dict:
    """What ``meta.json`` records: the settings, the sources as read, the vocabulary, counts."""
    padded = {s: counts.segments[s] * cfg.max_seq_len for s in SPLITS}
    return {
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
        "vocab_size": len(tokenizer.get_vocab()),
        "vocab_hash": vocab_hash(tokenizer),
        "dtype": dtype.name,
        "word_boundaries": has_words,
        **({"text": text} if text is not None else {}),
        "counts": asdict(counts),
        "packing_efficiency": {
            s: round(counts.positions[s] / padded[s], 4) if padded[s] else None for s in SPLITS
        },
    }


def _warn_about(stats: list[SourceStats], counts: Counts, raw_text: bool) -> None:
    """Warnings about what the build had to repair or could not spell."""
    for st in stats:
        if st.crlf or st.bom:
            log.warning("%s: CRLF line ends / byte-order mark found and handled", st.path)
    if counts.empty_lines:
        log.warning("skipped %d empty lines (no IDs or tokens) in the corpus", counts.empty_lines)
    if counts.unknown_ids and not raw_text:
        log.warning("%d IDs are not in the vocabulary and became [UNK]", counts.unknown_ids)
    elif counts.unknown_ids:
        log.warning(
            "%d of %d tokens (%.2f%%) are [UNK]: characters or words the vocabulary cannot spell"
            " (is this the model's own tokenizer?)",
            counts.unknown_ids,
            counts.ids,
            100 * counts.unknown_ids / max(counts.ids, 1),
        )


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
    """The segment folder for this corpus and these settings, built on first use.

    Runs that start together on a new corpus (a sweep's jobs, several users of one file
    system) build it once: the first takes the folder's lock (`ptm.files.exclusive`), the others
    wait for it with a log line and then reuse its folder.
    """
    for path in corpus:
        if not Path(path).is_file():
            hint = "run `make data` first" if "embedded" in str(path) else "check data.corpus"
            raise InputError(path, "no such corpus file", hint)
    folder = Path(cache_dir) / cache_key(corpus, cfg, tokenizer_source, word_segmenter)
    if not (folder / "meta.json").is_file():
        with exclusive(folder):
            if not (folder / "meta.json").is_file():  # or another process built it meanwhile
                tokenizer = (
                    load_tokenizer(tokenizer_source, cfg.max_seq_len) if tokenizer_source else None
                )
                build_segments(corpus, folder, cfg, tokenizer, word_segmenter, tokenizer_source)
                return folder
    log.info("segments: reusing %s", folder)
    return folder
