"""The ID tokenizer loads through transformers unchanged and handles the 5.x pitfalls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from ptm.data.tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
    vocab_from_counts,
)
from ptm.errors import InputError


def make(max_len: int = 8):
    vocab = vocab_from_counts(np.array([7, 12, 99, 5]), np.array([3, 9, 9, 1]), min_count=2)
    return build_tokenizer(vocab, max_len)


def test_vocab_order_and_limits() -> None:
    ids, counts = np.array([7, 12, 99, 5]), np.array([3, 9, 9, 1])
    assert vocab_from_counts(ids, counts) == [*SPECIAL_TOKENS, "12", "99", "7", "5"]
    assert vocab_from_counts(ids, counts, min_count=2) == [*SPECIAL_TOKENS, "12", "99", "7"]
    assert vocab_from_counts(ids, counts, max_size=7) == [*SPECIAL_TOKENS, "12", "99"]


def test_encodes_pairs_with_token_types_and_unknowns() -> None:
    tok = make()
    enc = tok("12 7 5", "99")
    assert enc["input_ids"] == [2, 5, 7, 1, 3, 6, 3]  # [CLS] 12 7 [UNK] [SEP] 99 [SEP]
    assert enc["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1]


def test_truncation_uses_max_seq_len() -> None:
    tok = make(max_len=6)
    assert len(tok(" ".join(["12"] * 50), truncation=True)["input_ids"]) == 6


def test_saved_folder_loads_with_auto_tokenizer(tmp_path: Path) -> None:
    tok = make()
    save_tokenizer(tok, tmp_path)
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:6] == [*SPECIAL_TOKENS, "12"]
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.mask_token == "[MASK]" and loaded.pad_token_id == 0
    assert loaded.model_max_length == 8
    assert loaded("12 [MASK]")["input_ids"] == [2, 5, 4, 3]
    assert "token_type_ids" in loaded("12")


def test_bare_tokenizer_json_and_vocab_txt_keep_special_tokens(tmp_path: Path) -> None:
    tok = make()
    save_tokenizer(tok, tmp_path / "saved")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes((tmp_path / "saved" / "tokenizer.json").read_bytes())
    assert Tokenizer.from_file(str(bare / "tokenizer.json")).token_to_id("[MASK]") == 4
    for source in (bare, bare / "tokenizer.json", tmp_path / "saved" / "vocab.txt"):
        loaded = load_tokenizer(source, max_seq_len=8)
        assert (loaded.mask_token_id, loaded.pad_token_id, loaded.cls_token_id) == (4, 0, 2)
        assert loaded("12 99")["input_ids"] == [2, 5, 6, 3]


def test_wordpiece_vocab_txt_becomes_bert_tokenizer(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, "中", "国", "##国"]) + "\n")
    tok = load_tokenizer(vocab)
    assert type(tok).__name__ == "BertTokenizer"
    assert tok.convert_ids_to_tokens(tok("中国")["input_ids"]) == ["[CLS]", "中", "国", "[SEP]"]


def test_bad_tokenizer_sources(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
    plain = tmp_path / "vocab.txt"
    plain.write_text("1\n2\n3\n")
    with pytest.raises(InputError, match="lacks"):
        load_tokenizer(plain)


def test_unused_placeholders_keep_a_vocab_txt_of_ids_an_id_vocabulary(tmp_path) -> None:
    from ptm.data.tokenizer import GOOGLE_SPECIALS, is_id_vocabulary, load_tokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*GOOGLE_SPECIALS, "17", "4021", "9"]) + "\n")
    tokenizer = load_tokenizer(str(vocab), 64)
    assert is_id_vocabulary(tokenizer)  # the reader and the corpus check agree
    assert tokenizer.convert_tokens_to_ids(["4021"]) == [len(GOOGLE_SPECIALS) + 1]
