"""Raw (not anonymized) text for pretraining: tokenized exactly as the model's own tokenizer does,
at numpy speed, with whole-word marks from a Chinese word segmenter.

**Why not call the tokenizer on every line.** The Rust tokenizer of a Chinese BERT
(``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece``) tokenizes Chinese text at about
0.2-0.3 M characters/s per core here (its normalizer keeps an alignment per character), which is
the whole cost of transformers' ``run_mlm.py`` recipe. That pipeline is local, though: a CJK
character is padded with spaces by the normalizer, a punctuation character is split off on its
own, whitespace separates, so each of them is tokenized the same in any context. Here every
distinct character is *classified once* by running the tokenizer's own normalizer and
pre-tokenizer on it, alone and between two letters:

* ``SPACE`` — it separates its neighbours and gives no token (whitespace);
* ``SINGLE`` — it separates its neighbours and gives exactly one token, whatever surrounds it
  (CJK characters, punctuation); its token is looked up in a table;
* ``RUN`` — anything else (letters, digits, accents, control characters). A maximal run of these
  is tokenized by the Rust tokenizer itself, once per distinct run string (cached): numbers and
  Latin words repeat.

A line's tokens are then the concatenation of its units' tokens: run boundaries are true
pre-token boundaries, and the normalizer works character by character (its lower-casing maps each
character alone; its canonical reordering moves only combining marks, which are always inside a
run). Lines holding an added token's text (``[MASK]`` …) are tokenized whole, since the
tokenizer matches those before normalizing; so is every line when the pipeline is not BERT's.
`tests/test_rawtext.py` checks the result against the tokenizer on random text built from the
awkward cases (compatibility ideographs, combining marks, control characters, Σ/İ, full-width
letters, emoji).

**Whole-word marks.** With ``word_segmenter="jieba"`` each chunk is cut into words by jieba's
dictionary and HMM (`ptm.data.wordseg`, through ``rjieba``, its Rust port: the same words, 15x
faster here — see BENCHMARKS.md) and the token holding a word's first character is marked as a word start,
exactly as ``_``-joined IDs are marked, so the masker masks whole words (Cui et al., 2019,
BERT-wwm) with no reference file. Without a segmenter the marks are WordPiece's own: a ``##``
piece continues the word before it.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from ptm.data.idtext import ParsedLines
from ptm.data.tokenizer import GOOGLE_SPECIALS, build_wordpiece_tokenizer
from ptm.data.wordseg import WordSegmenter
from ptm.errors import InputError

WORD_SEGMENTERS = ("none", "jieba")
UNSEEN, SPACE, SINGLE, RUN = 0, 1, 2, 3
_N_CODEPOINTS = 0x110000
_PROBE = "a"
_RUN_CACHE_ENTRIES = 1 << 18  # distinct runs kept; cleared past this, so memory stays bounded
_FIX_UTF8 = "save the file as UTF-8 (e.g. `iconv -f GB18030 -t UTF-8 in.txt > out.txt`)"


def decode_utf8(buf: bytes, path: Path, first_line: int) -> str:
    """The chunk as text, or a one-line error naming the line and column of the bad byte."""
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + buf.count(b"\n", 0, e.start)
        column = e.start - (buf.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(
            path,
            f"not UTF-8 text: byte 0x{buf[e.start]:02x} at byte {column} of the line",
            _FIX_UTF8,
            line=line,
        ) from e


def codepoints(text: str) -> np.ndarray:
    """(n_chars,) uint32: the text's code points, one per Python character."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class RawTextEncoder:
    """Chunks of raw text (one document per line) -> `ParsedLines` of vocabulary indices.

    Thread-safe: the per-character tables grow under a lock, the run cache is a plain dict
    (single operations on it are atomic), and the Rust tokenizer releases the GIL. Words are cut
    by ``workers`` processes (`ptm.data.wordseg.WordSegmenter`) while the calling thread
    tokenizes; `close` ends them.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, word_segmenter: str = "none", workers: int = 1
    ) -> None:
        if word_segmenter not in WORD_SEGMENTERS:
            raise InputError(
                None,
                f"data.word_segmenter={word_segmenter!r} is not known",
                f"use one of {list(WORD_SEGMENTERS)}",
            )
        self.word_segmenter = word_segmenter
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise InputError(
                None,
                f"the tokenizer {type(tokenizer).__name__} has no Rust (fast) tokenizer",
                "use a model folder with tokenizer.json, or a vocab.txt",
            )
        # A private copy: truncation or padding set on the model's tokenizer must not cut runs.
        self.backend = Tokenizer.from_str(backend.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        spec = json.loads(self.backend.to_str())
        kinds = tuple(
            (spec.get(part) or {}).get("type") for part in ("normalizer", "pre_tokenizer", "model")
        )
        added_tokens = list(self.backend.get_added_tokens_decoder().values())
        # Only BERT's pipeline is known to be local enough for per-character classification;
        # any other is exact too, one whole line at a time (slower). So are added tokens matched
        # after normalizing (tokens added by a user; BERT's special tokens match the raw text).
        self.per_character = kinds == (
            "BertNormalizer",
            "BertPreTokenizer",
            "WordPiece",
        ) and not any(t.normalized for t in added_tokens)
        added = sorted((t.content for t in added_tokens if t.content), key=len, reverse=True)
        self.added = re.compile("|".join(map(re.escape, added))) if added else None
        self.unk_id = tokenizer.unk_token_id
        self.classes = np.full(_N_CODEPOINTS, UNSEEN, dtype=np.uint8)
        self.single = np.zeros(_N_CODEPOINTS, dtype=np.int32)
        self.classes[10] = SPACE  # the newline ends a document
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._probe_pieces = self._pieces(_PROBE)
        self.segmenter = WordSegmenter(workers) if word_segmenter == "jieba" else None

    def close(self) -> None:
        """End the word segmenter's worker processes."""
        if self.segmenter is not None:
            self.segmenter.close()

    # -- classification of characters ---------------------------------------------------------

    def _pieces(self, text: str) -> list[str]:
        normalized = self.backend.normalizer.normalize_str(text)
        return [p for p, _ in self.backend.pre_tokenizer.pre_tokenize_str(normalized)]

    def _classify(self, char: str) -> tuple[int, int]:
        """The class of one character and, for ``SINGLE``, its token."""
        if not self.per_character or unicodedata.combining(char):
            return RUN, 0
        nfd = unicodedata.normalize("NFD", char)
        if unicodedata.combining(nfd[0]):
            return RUN, 0
        alone = self._pieces(char)
        probe = self._probe_pieces
        if self._pieces(_PROBE + char + _PROBE) != [*probe, *alone, *probe]:
            return RUN, 0  # it joins its neighbours (or is removed between them)
        if not alone:
            return SPACE, 0
        ids = self.backend.encode(char, add_special_tokens=False).ids
        return (SINGLE, ids[0]) if len(ids) == 1 else (RUN, 0)

    def _learn(self, cps: np.ndarray) -> None:
        new = np.unique(cps[self.classes[cps] == UNSEEN])
        if not len(new):
            return
        with self._lock:
            for cp in new.tolist():
                if self.classes[cp] == UNSEEN:
                    cls, token = self._classify(chr(cp))
                    self.single[cp] = token
                    self.classes[cp] = cls

    # -- runs ------------------------------------------------------------------------------------

    def _encode_runs(
        self, runs: list[str]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per run: token ids, character start and end of each token, and pre-token starts."""
        cache = self._runs
        missing = list({r for r in runs if r not in cache})
        if missing:
            if len(cache) + len(missing) > _RUN_CACHE_ENTRIES:
                cache.clear()
            for run, enc in zip(
                missing, self.backend.encode_batch(missing, add_special_tokens=False), strict=True
            ):
                offsets = np.array(enc.offsets, dtype=np.int64).reshape(-1, 2)
                words = np.array([-1 if w is None else w for w in enc.word_ids], np.int64)
                first = np.ones(len(words), dtype=bool)
                first[1:] = words[1:] != words[:-1]
                cache[run] = (np.array(enc.ids, np.int32), offsets[:, 0], offsets[:, 1], first)
        return [cache[r] if r in cache else self._encode_runs([r])[0] for r in runs]

    # -- chunks ----------------------------------------------------------------------------------

    def encode_chunk(self, buf: bytes, path: Path, first_line: int) -> ParsedLines:
        """Tokens of newline-separated documents (a chunk of `ptm.data.idtext.iter_text_chunks`).

        Lines that give no token (empty, whitespace only) have length 0, as empty lines of an
        ID corpus do, so the builder skips and counts them.
        """
        text = decode_utf8(buf, path, first_line)
        words = self.segmenter.submit(buf) if self.segmenter is not None else None
        cps = codepoints(text)
        self._learn(cps)
        cls = self.classes[cps]
        if self.added is not None or not self.per_character:
            cls = self._whole_lines(text, cps, cls)
        n = len(cps)
        count = (cls == SINGLE).astype(np.int64)  # tokens each character starts

        is_run = np.zeros(n + 2, dtype=bool)
        is_run[1:-1] = cls == RUN
        edges = np.flatnonzero(is_run[1:] != is_run[:-1])
        run_lo, run_hi = edges[0::2], edges[1::2]
        encoded = self._encode_runs(
            [text[a:b] for a, b in zip(run_lo.tolist(), run_hi.tolist(), strict=True)]
        )
        run_len = np.fromiter((len(e[0]) for e in encoded), np.int64, count=len(encoded))
        count[run_lo] = run_len

        out_at = np.cumsum(count) - count  # where each character's tokens go
        total = int(out_at[-1] + count[-1]) if n else 0
        ids = np.empty(total, dtype=np.int32)
        singles = np.flatnonzero(cls == SINGLE)
        ids[out_at[singles]] = self.single[cps[singles]]
        # Character each token comes from (run tokens: the first character they cover).
        token_char = np.empty(total, dtype=np.int64)
        token_char[out_at[singles]] = singles
        token_end = token_char + 1
        pretoken_start = np.ones(total, dtype=bool)
        if len(encoded):
            run_pos = np.repeat(out_at[run_lo], run_len) + _ranks(run_len)
            ids[run_pos] = np.concatenate([e[0] for e in encoded])
            base = np.repeat(run_lo, run_len)
            token_char[run_pos] = base + np.concatenate([e[1] for e in encoded])
            token_end[run_pos] = base + np.concatenate([e[2] for e in encoded])
            pretoken_start[run_pos] = np.concatenate([e[3] for e in encoded])

        if words is not None:
            # A token begins a word when a word's first character lies inside it.
            starts = np.concatenate([[0], np.cumsum(words())])
            word_start = starts[np.maximum(token_end, token_char + 1)] > starts[token_char]
        else:
            word_start = pretoken_start

        newlines = np.flatnonzero(cps == 10)
        n_lines = len(newlines) + (0 if not text or text.endswith("\n") else 1)
        ends_at = out_at[newlines] if len(newlines) else np.zeros(0, np.int64)
        if n_lines > len(newlines):
            ends_at = np.append(ends_at, total)
        line_lengths = np.diff(ends_at, prepend=0).astype(np.int64)
        return ParsedLines(ids, word_start, line_lengths, not bool(word_start.all()))

    def _whole_lines(self, text: str, cps: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Classes with every character of the lines that must be tokenized whole set to RUN."""
        if not self.per_character:
            return np.where(cps == 10, SPACE, RUN).astype(np.uint8)
        hits = [m.start() for m in self.added.finditer(text)]
        if not hits:
            return cls
        cls = cls.copy()
        newlines = np.flatnonzero(cps == 10)
        bounds = np.concatenate([[-1], newlines, [len(cps)]])
        for line in np.unique(np.searchsorted(newlines, hits)).tolist():
            cls[bounds[line] + 1 : bounds[line + 1]] = RUN
        return cls


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """``[0..l0), [0..l1), ...`` concatenated."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


# -- corpus kind ---------------------------------------------------------------------------------

_ID_BYTES = frozenset(b"0123456789 \t_")
_SNIFF_LINES = 64


def sniff_kind(chunk: bytes) -> tuple[str, int, bytes] | None:
    """``("ids" | "text", line offset, line)`` by a vote of the chunk's first non-empty lines: a
    line of IDs holds only digits, spaces, tabs and ``_``. A tie goes to IDs, so an ID corpus
    with a bad line meets the ID parser's error for that line. The line returned is the first of
    the winning kind; None when the chunk has no non-empty line."""
    first: dict[str, tuple[int, bytes]] = {}
    votes = {"ids": 0, "text": 0}
    for i, line in enumerate(chunk.split(b"\n", 4 * _SNIFF_LINES)[: 4 * _SNIFF_LINES]):
        if not line.strip():
            continue
        kind = "ids" if set(line) <= _ID_BYTES else "text"
        first.setdefault(kind, (i, line))
        votes[kind] += 1
        if sum(votes.values()) == _SNIFF_LINES:
            break
    if not first:
        return None
    kind = "text" if votes["text"] > votes["ids"] else "ids"
    return kind, *first[kind]


def count_codepoints(buf: bytes, path: Path, first_line: int) -> np.ndarray:
    """Occurrences of each code point in a chunk, indexed by code point (up to the largest)."""
    return np.bincount(codepoints(decode_utf8(buf, path, first_line)))


def char_vocab_from_counts(
    counts: np.ndarray, min_count: int = 1, max_size: int | None = None
) -> list[str]:
    """A Chinese-BERT vocabulary for a corpus whose code points occur ``counts`` times.

    Google's layout (``[PAD]``, ``[unused1]`` … ``[unused99]``, ``[UNK]`` = 100, ``[CLS]``,
    ``[SEP]``, ``[MASK]``), then one entry per character as BERT's own normalizer leaves it
    (lower-cased, accents stripped): a CJK character or punctuation mark is a token of its own;
    a character that joins others into words (letters, digits) comes as itself and as a ``##``
    piece, so every word of the corpus is spelled without ``[UNK]``. Entries by falling count
    (ties: in code point order), so the vocabulary is stable; ``max_size`` counts every entry.
    """
    reference = RawTextEncoder(build_wordpiece_tokenizer(GOOGLE_SPECIALS, 512))
    totals: dict[str, int] = {}
    for cp in np.flatnonzero(counts >= 1).tolist():
        if cp == 10:
            continue
        char = chr(cp)
        alone = reference._pieces(char)
        probe = reference._probe_pieces
        isolated = reference._pieces(_PROBE + char + _PROBE) == [*probe, *alone, *probe]
        entries = alone if isolated else [x for c in "".join(alone) for x in (c, "##" + c)]
        for entry in entries:
            totals[entry] = totals.get(entry, 0) + int(counts[cp])
    ranked = sorted(
        (t for t, c in totals.items() if c >= min_count and t not in GOOGLE_SPECIALS),
        key=lambda t: (-totals[t], t),
    )
    if max_size is not None:
        if max_size <= len(GOOGLE_SPECIALS):
            raise InputError(
                None,
                f"vocab max_size={max_size} leaves no room for characters "
                f"({len(GOOGLE_SPECIALS)} special and unused entries come first)",
                "raise data.segments.vocab_max_size",
            )
        ranked = ranked[: max_size - len(GOOGLE_SPECIALS)]
    return [*GOOGLE_SPECIALS, *ranked]
