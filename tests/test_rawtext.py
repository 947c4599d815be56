"""Raw text for pretraining: tokenization exactly as the tokenizer's, the character vocabulary,
jieba whole-word marks, segments, and one-line errors for what does not fit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptm.data import idtext
from ptm.data.rawtext import RawTextEncoder, char_vocab_from_counts, codepoints
from ptm.data.segment_builder import build_segments, cache_key
from ptm.data.segment_store import SegmentData
from ptm.data.tokenizer import (
    GOOGLE_SPECIALS,
    build_wordpiece_tokenizer,
    is_id_vocabulary,
    load_tokenizer,
)
from ptm.errors import InputError
from tests.conftest import segment_config

# A Google-style Chinese vocabulary in miniature: characters, whole words and ## pieces.
WORDS = ["hello", "world", "19", "##98", "##llo", "he", "iphone", "##ing", "[", "]"]
CHARS = list("诸葛涛亮是三国时期蜀汉丞相的一位将军，。！？、「」《》%.:;'\"-_()$#@") + list(
    "abcdefghijklmnopqrstuvwxyz0123456789"
)
GOOGLE_LIKE = [
    *GOOGLE_SPECIALS,
    *CHARS,
    *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
    *WORDS,
    "豈",  # U+8C48: what the compatibility ideograph U+F900 becomes under NFD
]
# Pieces of text that exercise every branch of the per-character classification: CJK (with
# compatibility and extension-B ideographs), punctuation, Latin words and digits, accents as
# precomposed and combining characters, case mappings that grow (İ) or depend on context (Σ),
# full-width forms, control and zero-width characters, odd spaces, emoji, special-token text.
FRAGMENTS = [
    *"诸葛涛亮是三国的，。！？「」《》…—",
    "\uf900",
    "\U0002f800",
    "\U00020000",
    "hello",
    "Hello",
    "HELLO",
    "iPhone",
    "1998",
    "3.5%",
    "café",
    "cafe\u0301",
    "\u0301",
    "\u0300\u0316",
    "İ",
    "ΑΣ",
    "Σ",
    "ς",
    "ǅ",
    "ＡＢＣ",
    "１２３",
    " ",
    "\t",
    "\u3000",
    "\u00a0",
    "\x00",
    "\x01",
    "\u200b",
    "\ufeff",
    "\ufffd",
    "😀",
    "[MASK]",
    "[CLS]",
    "[unused1]",
    "a" * 120,
    "'",
    "_",
    "¿",
]


def google_like(lowercase: bool = True):
    tok = build_wordpiece_tokenizer(GOOGLE_LIKE, 64)
    if not lowercase:
        from transformers import BertTokenizer

        index = {t: i for i, t in enumerate(GOOGLE_LIKE)}
        tok = BertTokenizer(vocab=index, do_lower_case=False, model_max_length=64)
    return tok


TOKENIZERS = {"lower": google_like(), "cased": google_like(lowercase=False)}
ENCODERS = {name: RawTextEncoder(tok) for name, tok in TOKENIZERS.items()}


def reference(tokenizer, lines: list[str]) -> list[list[int]]:
    """What the tokenizer itself gives each line (no special tokens)."""
    return [tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines]


def encoded_lines(encoder: RawTextEncoder, lines: list[str]) -> list[list[int]]:
    parsed = encoder.encode_chunk(("\n".join(lines) + "\n").encode(), Path("t.txt"), 1)
    cuts = np.cumsum(parsed.line_lengths)[:-1]
    return [part.tolist() for part in np.split(parsed.ids, cuts)]


lines_strategy = st.lists(
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join), min_size=1, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(lines=lines_strategy, name=st.sampled_from(sorted(TOKENIZERS)))
def test_tokens_are_the_tokenizers_own(lines: list[str], name: str) -> None:
    assert encoded_lines(ENCODERS[name], lines) == reference(TOKENIZERS[name], lines)


def test_tokens_match_on_real_chinese_text_with_a_tokenizer_that_has_added_tokens(
    embedded_dir: Path,
) -> None:
    lines = (embedded_dir / "raw" / "heldout.txt").read_text().splitlines()[:400]
    lines += ["诸葛涛是三国人", "他说：诸葛涛！", "zhugetao ZHUGETAO ZhuGeTao"]
    tok = google_like()
    fast = RawTextEncoder(tok)
    assert fast.per_character
    assert encoded_lines(fast, lines) == reference(tok, lines)
    # Tokens a user adds are matched after normalizing (any case): every line goes whole.
    tok.add_tokens(["诸葛涛", "ZhuGeTao"])
    whole = RawTextEncoder(tok)
    assert not whole.per_character
    assert encoded_lines(whole, lines) == reference(tok, lines)


def test_without_a_segmenter_words_are_wordpiece_words() -> None:
    enc = ENCODERS["lower"]
    parsed = enc.encode_chunk("hellos 诸葛 1998\n".encode(), Path("t.txt"), 1)
    tokens = TOKENIZERS["lower"].convert_ids_to_tokens(parsed.ids.tolist())
    assert tokens == ["hello", "##s", "诸", "葛", "19", "##98"]
    assert parsed.word_start.tolist() == [True, False, True, True, True, False]


def test_jieba_marks_the_first_token_of_every_word() -> None:
    tok = TOKENIZERS["lower"]
    enc = RawTextEncoder(tok, "jieba")
    parsed = enc.encode_chunk(
        "诸葛亮是三国时期蜀汉丞相，iPhone很好 3.5%。\n".encode(), Path("t"), 1
    )
    tokens = tok.convert_ids_to_tokens(parsed.ids.tolist())
    # jieba: 诸葛亮 / 是 / 三国 / 时期 / 蜀汉 / 丞相 / ， / iPhone / 很 / 好 / 3.5% / 。
    # (很, 好 are not in the small vocabulary: [UNK], one word each)
    marked = [t for t, start in zip(tokens, parsed.word_start, strict=True) if start]
    assert tokens[:13] == list("诸葛亮是三国时期蜀汉丞相，")
    assert marked == [
        "诸",
        "是",
        "三",
        "时",
        "蜀",
        "丞",
        "，",
        "iphone",
        "[UNK]",
        "[UNK]",
        "3",
        "。",
    ]


def test_rjieba_cuts_as_jieba_does(embedded_dir: Path) -> None:
    """The segmenter is called jieba because it is jieba's segmentation: rjieba ports its
    dictionary and HMM, and gives the same words on real text."""
    import jieba

    from ptm.data.wordseg import word_starts as segment_words

    jieba.setLogLevel(logging.WARNING)
    lines = (embedded_dir / "raw" / "heldout.txt").read_text().splitlines()[:300]
    for line in lines:
        lengths = [len(w) for w in jieba.lcut(line)]
        expected = np.zeros(len(line), bool)
        expected[np.cumsum(lengths) - lengths] = True
        assert segment_words(line).tolist() == expected.tolist(), line


def test_worker_processes_cut_what_the_calling_thread_cuts(embedded_dir: Path) -> None:
    from ptm.data.wordseg import WordSegmenter, word_starts

    text = (embedded_dir / "raw" / "heldout.txt").read_bytes()[: 1 << 18]
    chunks = [text[: text.rindex(b"\n", 0, len(text) // 2) + 1], "诸葛涛\n\n🙂 x\n".encode()]
    workers = WordSegmenter(2)
    try:
        assert workers._pool is not None  # Linux: forked processes do the cutting
        marks = [workers.submit(chunk) for chunk in chunks]  # both in flight at once
        for chunk, result in zip(chunks, marks, strict=True):
            assert result().tolist() == word_starts(chunk.decode()).tolist()
    finally:
        workers.close()
    alone = WordSegmenter(1)  # one core: the calling thread cuts
    assert alone._pool is None
    assert alone.submit(chunks[1])().tolist() == word_starts(chunks[1].decode()).tolist()


def test_character_vocabulary_is_laid_out_like_a_chinese_berts() -> None:
    text = "Hello 世界，hello！café 1998 世\n"
    counts = np.bincount(codepoints(text))
    vocab = char_vocab_from_counts(counts)
    assert vocab[:104] == list(GOOGLE_SPECIALS)
    assert vocab.index("[UNK]") == 100 and vocab.index("[MASK]") == 103
    body = vocab[104:]
    assert {"世", "界", "，", "！", "h", "##h", "e", "##e", "1", "##9"} <= set(body)
    assert "H" not in body and "é" not in body and " " not in body  # lower-cased, accents off
    assert body[0] in ("l", "##l")  # the most frequent character comes first
    tok = build_wordpiece_tokenizer(vocab, 64)
    assert tok.unk_token_id not in tok(text)["input_ids"]
    assert len(char_vocab_from_counts(counts, max_size=110)) == 110
    assert "界" not in char_vocab_from_counts(counts, min_count=2)
    with pytest.raises(InputError, match="max_size=100 leaves no room"):
        char_vocab_from_counts(counts, max_size=100)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_raw_text_segments_from_scratch(tmp_path: Path, embedded_dir: Path) -> None:
    docs = (embedded_dir / "raw" / "pretrain.txt").read_text().splitlines()[:1500]
    corpus = write(tmp_path / "c.txt", "\n".join(docs) + "\n")
    cfg = segment_config(max_seq_len=64, eval_fraction=0.05, tail_drop_fraction=0.0)
    meta = build_segments([corpus], tmp_path / "seg", cfg, word_segmenter="jieba")
    assert meta["text"]["vocabulary"] == "built from the corpus" and meta["word_boundaries"]
    assert meta["counts"]["unknown_ids"] == 0 and meta["packing_efficiency"]["train"] > 0.95
    tok = load_tokenizer(tmp_path / "seg" / "tokenizer")
    assert not is_id_vocabulary(tok) and tok.convert_ids_to_tokens(100) == "[UNK]"
    batch = SegmentData(tmp_path / "seg", "train").batch(np.arange(4), tok.pad_token_id)
    assert (batch["input_ids"][:, 0] == tok.cls_token_id).all() and "word_start" in batch
    # Nothing lost, nothing invented: the segments hold every token the tokenizer gives.
    expected = np.concatenate([tok(d, add_special_tokens=False)["input_ids"] for d in docs])
    stored = np.concatenate([SegmentData(tmp_path / "seg", s).tokens for s in ("train", "eval")])
    stored = stored[~np.isin(stored, tok.all_special_ids)]
    assert meta["counts"]["ids"] == len(expected)
    assert np.array_equal(np.sort(stored), np.sort(expected))


def test_streaming_in_small_chunks_gives_the_same_raw_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded_dir: Path
) -> None:
    lines = (embedded_dir / "raw" / "heldout.txt").read_text().splitlines()[:600]
    corpus = write(tmp_path / "c.txt", "\n".join(lines) + "\n")
    cfg = segment_config(max_seq_len=64, eval_fraction=0.1)
    build_segments([corpus], tmp_path / "a", cfg, word_segmenter="jieba")
    monkeypatch.setattr(idtext, "CHUNK_BYTES", 997)
    build_segments([corpus], tmp_path / "b", cfg, word_segmenter="jieba")
    for name in ("train.tokens.bin", "train.word_start.bin", "eval.offsets.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_text_column_of_a_table(tmp_path: Path) -> None:
    table = write(tmp_path / "t.csv", "label\ttext\n1\t诸葛亮是三国人。\n0\thello world\n")
    tok = google_like()
    build_segments([table], tmp_path / "s", segment_config(max_seq_len=32, eval_fraction=0), tok)
    data = SegmentData(tmp_path / "s", "train")
    tokens = tok.convert_ids_to_tokens(data.tokens[data.offsets[0] : data.offsets[1]].tolist())
    assert tokens[:4] == ["[CLS]", "诸", "葛", "亮"] and "hello" in tokens and "1" not in tokens


def test_agrees_with_fine_tuning_on_tokens_special_tokens_and_truncation(tmp_path: Path) -> None:
    """Pretraining on raw text and fine-tuning on it (`ptm.tasks.tables.TextEncoder`) see the
    same tokens, the same [CLS]/[SEP], and a long document's first segment is what the
    tokenizer gives when it truncates to the same length."""
    from ptm.tasks.tables import TextEncoder

    tok = google_like()
    lines = ["诸葛亮是三国时期蜀汉丞相。", "Hello world 1998!", "café İΣ 😀 ＡＢＣ"]
    ids = TextEncoder(tok).texts(lines, tmp_path / "t.csv", np.arange(2, 5))
    assert [x.tolist() for x in ids] == encoded_lines(RawTextEncoder(tok), lines)
    long_doc = "诸葛亮是三国时期蜀汉丞相，" * 10
    corpus = write(tmp_path / "long.txt", long_doc + "\n")
    build_segments([corpus], tmp_path / "s", segment_config(max_seq_len=32, eval_fraction=0), tok)
    data = SegmentData(tmp_path / "s", "train")
    first = data.tokens[data.offsets[0] : data.offsets[1]].tolist()
    assert first == tok(long_doc, truncation=True, max_length=32)["input_ids"]


def test_unknown_heavy_text_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = write(tmp_path / "c.txt", "诸葛亮很好很好很好。\n今天天气不错。\n")
    with caplog.at_level(logging.WARNING):
        build_segments([corpus], tmp_path / "s", segment_config(max_seq_len=32), google_like())
    assert any("are [UNK]" in r.getMessage() and "%" in r.getMessage() for r in caplog.records)


def test_empty_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", "诸葛亮\n\n \u3000\t\n三国\n\x00\n")
    meta = build_segments(
        [corpus], tmp_path / "s", segment_config(max_seq_len=32, eval_fraction=0), google_like()
    )
    assert meta["counts"]["empty_lines"] == 3 and meta["counts"]["documents"] == 2


def test_cache_key_changes_with_the_segmenter_only_for_raw_text(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", "诸葛亮\n")
    cfg = segment_config()
    assert cache_key([corpus], cfg, None) == cache_key([corpus], cfg, None, "none")
    assert cache_key([corpus], cfg, None) != cache_key([corpus], cfg, None, "jieba")


def test_other_bad_raw_input(tmp_path: Path) -> None:
    raw = write(tmp_path / "raw.txt", "诸葛亮\n")
    with pytest.raises(InputError, match=r"data.word_segmenter='ltp' is not known"):
        build_segments([raw], tmp_path / "s", segment_config(), word_segmenter="ltp")
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("好的\n".encode() + "诸葛亮\n".encode("gbk"))
    with pytest.raises(InputError, match=r"gbk\.txt:2: not UTF-8 text: byte 0xd6 .* as UTF-8"):
        build_segments([gbk], tmp_path / "s", segment_config())
    no_specials = write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n诸\n葛\n")
    with pytest.raises(InputError, match=r"vocab\.txt: the vocabulary lacks the special tokens"):
        load_tokenizer(no_specials)


def test_a_character_vocab_txt_is_a_wordpiece_vocabulary(tmp_path: Path) -> None:
    """A vocab.txt of characters with no ## piece is still a Chinese BERT's, not IDs."""
    vocab = write(tmp_path / "vocab.txt", "\n".join([*GOOGLE_SPECIALS, *"诸葛亮"]) + "\n")
    tok = load_tokenizer(vocab)
    assert not is_id_vocabulary(tok)
    assert tok.convert_ids_to_tokens(tok("诸葛亮")["input_ids"]) == [
        "[CLS]",
        *"诸葛亮",
        "[SEP]",
    ]


def test_meta_records_the_text_settings(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", "诸葛亮是三国人。\n")
    build_segments([corpus], tmp_path / "s", segment_config(eval_fraction=0), google_like())
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["text"] == {
        "kind": "raw text",
        "word_segmenter": "none",
        "vocabulary": "given",
        "per_character": True,
    }
