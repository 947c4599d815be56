"""The ID tokenizer: whitespace split, one vocabulary entry per ID, BERT's special tokens.

It is a Hugging Face ``tokenizers`` word-level model wrapped as a transformers fast tokenizer, so
``AutoTokenizer.from_pretrained(dir)`` loads what we save with no code of ours. Four transformers
5.x behaviours are handled on purpose:

* ``save_pretrained`` writes no ``vocab.txt`` — we write it, because Google's BERT tools read it;
* ``model_max_length`` defaults to 1e30, so truncation would silently do nothing — we set it;
* ``token_type_ids`` are only returned when listed in ``model_input_names`` — we list them;
* a bare ``tokenizer.json`` loads without its mask/pad tokens — `load_tokenizer` restores them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    BertTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ptm.errors import InputError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
# Google's BERT vocabularies (the Chinese ones included) start like this, so [UNK] is 100 and
# [MASK] 103, and the unused entries leave room to add tokens without resizing the model.
GOOGLE_SPECIALS = (PAD, *(f"[unused{i}]" for i in range(1, 100)), UNK, CLS, SEP, MASK)
_UNUSED = re.compile(r"\[unused\d+\]")
MODEL_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
_SPECIAL_KWARGS = {
    "pad_token": PAD,
    "unk_token": UNK,
    "cls_token": CLS,
    "sep_token": SEP,
    "mask_token": MASK,
}


def vocab_from_counts(
    ids: np.ndarray, counts: np.ndarray, min_count: int = 1, max_size: int | None = None
) -> list[str]:
    """Special tokens first, then IDs by falling count (ties: smaller ID first), so it is stable.

    ``max_size`` counts the special tokens too, as BERT's ``vocab_size`` does.
    """
    keep = counts >= min_count
    ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))
    if max_size is not None:
        if max_size <= len(SPECIAL_TOKENS):
            raise InputError(None, f"vocab max_size={max_size} leaves no room for IDs", "raise it")
        order = order[: max_size - len(SPECIAL_TOKENS)]
    return [*SPECIAL_TOKENS, *(str(int(i)) for i in ids[order])]


def _index(vocab: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Token -> ID of a vocabulary that has BERT's special tokens and no repeated entry."""
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise InputError(None, f"the vocabulary lacks {missing}", "add BERT's special tokens")
    index = {token: i for i, token in enumerate(vocab)}
    if len(index) != len(vocab):
        raise InputError(None, "the vocabulary repeats an entry", "keep each token once")
    return index


def build_tokenizer(vocab: list[str], max_seq_len: int) -> PreTrainedTokenizerFast:
    """A fast tokenizer over ``vocab`` that adds ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]``."""
    index = _index(vocab)
    tok = Tokenizer(models.WordLevel(index, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, index[CLS]), (SEP, index[SEP])],
    )
    return _wrap(tok, max_seq_len)


def build_wordpiece_tokenizer(vocab: list[str] | tuple[str, ...], max_seq_len: int):
    """A Chinese BERT's tokenizer over ``vocab``: BERT's normalizer (lower-casing, accents
    stripped, CJK characters split apart), punctuation split off, WordPiece with ``##`` pieces;
    the same class and settings transformers gives a Google ``vocab.txt``."""
    index = _index(vocab)
    # transformers 5 ignores ``vocab_file=`` here and would keep only the special tokens.
    return BertTokenizer(vocab=index, model_max_length=max_seq_len)


def is_id_vocabulary(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True for ptm's ID tokenizers: every entry but the special tokens is an integer."""
    return _holds_ids_only(tokenizer.get_vocab())


def _holds_ids_only(vocab) -> bool:
    """Only integers besides the special tokens (and Google's ``[unusedN]`` placeholders): an ID
    vocabulary. Anything else — characters, words, ``##`` pieces — makes a WordPiece one."""
    return all(t.isdigit() or t in SPECIAL_TOKENS or _UNUSED.fullmatch(t) for t in vocab)


def _wrap(tok: Tokenizer, max_seq_len: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=max_seq_len,
        model_input_names=MODEL_INPUT_NAMES,
        **_SPECIAL_KWARGS,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save in the Hugging Face layout plus a ``vocab.txt`` (one token per line, in ID order)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "vocab.txt").write_text("\n".join(vocab_list(tokenizer)) + "\n", encoding="utf-8")


def vocab_list(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise InputError(None, "the tokenizer's IDs are not 0..N-1", "rebuild the vocabulary")
    return tokens


def vocab_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short fingerprint of the vocabulary, to catch a model paired with the wrong data."""
    return hashlib.sha256("\n".join(vocab_list(tokenizer)).encode()).hexdigest()[:16]


def load_tokenizer(path: str | Path, max_seq_len: int | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a model directory, a bare ``tokenizer.json`` or a ``vocab.txt``.

    A ``vocab.txt`` whose entries include ``##`` pieces is a WordPiece vocabulary (Google's and
    the Chinese BERT releases): it becomes transformers' ``BertTokenizer``; an ID vocabulary
    becomes our word-level tokenizer.
    """
    path = Path(path)
    for name in ("tokenizer_config.json", "tokenizer.json"):
        if path.is_dir() and (path / name).is_file():
            _check_json(path / name)
    if path.is_dir():
        if (path / "tokenizer_config.json").is_file():
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        elif (path / "tokenizer.json").is_file():
            tok = _wrap(Tokenizer.from_file(str(path / "tokenizer.json")), max_seq_len or 512)
        elif (path / "vocab.txt").is_file():
            tok = _from_vocab_txt(path / "vocab.txt", max_seq_len)
        else:
            raise InputError(
                path,
                "no tokenizer.json, tokenizer_config.json or vocab.txt in this folder",
                "point to a model folder written by ptm or transformers, or to a vocab.txt",
            )
    elif path.name.endswith(".json") and path.is_file():
        _check_json(path)
        tok = _wrap(Tokenizer.from_file(str(path)), max_seq_len or 512)
    elif path.is_file():
        tok = _from_vocab_txt(path, max_seq_len)
    else:
        raise InputError(path, "no such tokenizer file or folder", "check the path")
    missing = [t for t in SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        raise InputError(path, f"the tokenizer lacks {missing}", "use a BERT vocabulary")
    if max_seq_len is not None:
        tok.model_max_length = max_seq_len
    return tok


def _check_json(path: Path) -> None:
    """A truncated or corrupt tokenizer file is one line naming it: the tokenizers library
    answers it with a bare ``Exception`` (or transformers with a JSON traceback)."""
    data = path.read_bytes()
    try:
        json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            path,
            f"not a readable JSON file ({e})",
            "copy the tokenizer (or the model folder) again: it may have been cut short",
        ) from e


def _from_vocab_txt(path: Path, max_seq_len: int | None) -> PreTrainedTokenizerBase:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(path, f"not UTF-8 text ({e.reason})", "save it as UTF-8", line) from e
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InputError(path, "a NUL byte: not a vocabulary", "one token per line, UTF-8", line)
    vocab = text.splitlines()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise InputError(
            path,
            f"the vocabulary lacks the special tokens {missing}",
            "a BERT vocab.txt lists [PAD] [UNK] [CLS] [SEP] [MASK] among its entries "
            "(Google's put [PAD] first and [UNK] [CLS] [SEP] [MASK] at 100-103)",
        )
    if not _holds_ids_only(vocab):  # Google's and the Chinese BERT releases
        return build_wordpiece_tokenizer(vocab, max_seq_len or 512)
    return build_tokenizer(vocab, max_seq_len or 512)


def id_lookup(tokenizer: PreTrainedTokenizerBase) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus IDs known to the vocabulary (sorted) and their vocabulary indices."""
    pairs = sorted((int(t), i) for t, i in tokenizer.get_vocab().items() if t.isdigit())
    raw = np.array([p[0] for p in pairs], dtype=np.int64)
    index = np.array([p[1] for p in pairs], dtype=np.int64)
    return raw, index


class IdMapper:
    """Raw corpus ID -> vocabulary index (``[UNK]`` when absent), through a dense table when
    the IDs are small enough (a gather instead of a binary search per ID)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, dtype: np.dtype = np.int64) -> None:
        self.raw, self.index = id_lookup(tokenizer)
        self.unk = tokenizer.unk_token_id
        self.dtype = np.dtype(dtype)
        top = int(self.raw[-1]) + 1 if len(self.raw) else 0
        self.table = None
        if top <= 1 << 24:
            self.table = np.full(top, self.unk, dtype=self.dtype)
            self.table[self.raw] = self.index

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if self.table is not None:
            if len(ids) == 0 or int(ids.max()) < len(self.table):
                return self.table[ids]  # the usual case: one gather
            inside = ids < len(self.table)
            out = np.full(len(ids), self.unk, dtype=self.dtype)
            out[inside] = self.table[ids[inside]]
            return out
        pos = np.clip(np.searchsorted(self.raw, ids), 0, max(len(self.raw) - 1, 0))
        found = self.raw[pos] == ids if len(self.raw) else np.zeros(len(ids), bool)
        return np.where(found, self.index[pos], self.unk).astype(self.dtype)
