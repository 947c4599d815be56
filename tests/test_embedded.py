"""The embedded corpus: clean splits, no leakage into pretraining, aligned tags, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

from ptm.config import from_conf
from ptm.data.embedded import EmbeddedConfig, _write_files, bio_tags, build_embedded_corpus


def rows(path: Path) -> list[list[str]]:
    lines = path.read_text().rstrip("\n").split("\n")
    return [line.split("\t") for line in lines[1:]]


def test_sentiment_splits_are_disjoint_and_clean(embedded_dir: Path) -> None:
    train = rows(embedded_dir / "sentiment" / "train.csv")
    dev = rows(embedded_dir / "sentiment" / "dev.csv")
    test = [r[0] for r in rows(embedded_dir / "sentiment" / "test.csv")]
    answers = [r[0] for r in rows(embedded_dir / "sentiment" / "test_labels.csv")]
    train_texts, dev_texts = [t for _, t in train], [t for _, t in dev]
    assert len(set(train_texts)) == len(train_texts)  # duplicates removed
    assert not set(train_texts) & set(dev_texts)
    assert not set(train_texts) & set(test) and not set(dev_texts) & set(test)
    assert len(answers) == len(test) and set(answers) == {"0", "1"}
    # Stratified: both labels in roughly the same proportion in every split.
    share = [sum(lab == "1" for lab, _ in split) / len(split) for split in (train, dev)]
    assert abs(share[0] - share[1]) < 0.02


def occurrences(texts: list[list[int]], documents: list[list[int]]) -> list[int]:
    """Indexes of the texts found inside a document: a plain search, independent of
    `ptm.data.overlap`: every occurrence of the text's rarest ID is tried as an anchor."""
    flat: list[int] = []
    for doc in documents:
        flat += [*doc, -1]  # -1: no text crosses a document end
    where: dict[int, list[int]] = {}
    for pos, token in enumerate(flat):
        where.setdefault(token, []).append(pos)
    found = []
    for i, text in enumerate(texts):
        anchor = min(range(len(text)), key=lambda j: len(where.get(text[j], ())))
        for pos in where.get(text[anchor], ()):
            start = pos - anchor
            if start >= 0 and flat[start : start + len(text)] == text:
                found.append(i)
                break
    return found


def test_no_dev_or_test_text_inside_any_training_text(embedded_dir: Path) -> None:
    """Every dev/test row of both tasks (of 8 IDs or more), against the whole pretraining text
    and both training files: none is contained, verbatim, in any of them."""
    held_out = [t for _, t in rows(embedded_dir / "sentiment" / "dev.csv")]
    held_out += [r[0] for r in rows(embedded_dir / "sentiment" / "test.csv")]
    held_out += [
        r[0] for split in ("dev", "test") for r in rows(embedded_dir / "names" / f"{split}.csv")
    ]
    texts = [[int(x) for x in t.split()] for t in held_out]
    texts = [t for t in texts if len(t) >= 8]
    pretrain = (embedded_dir / "pretrain.txt").read_text().splitlines()
    training = [line.replace("_", " ") for line in pretrain]
    training += [t for _, t in rows(embedded_dir / "sentiment" / "train.csv")]
    training += [r[0] for r in rows(embedded_dir / "names" / "train.csv")]
    documents = [[int(x) for x in doc.split()] for doc in training]
    assert len(texts) > 11_000
    assert occurrences(texts, documents) == []
    # The search itself finds what is there: a held-out sentence planted inside a document.
    planted = [*documents[5][:3], *texts[7], *documents[5][3:]]
    assert occurrences(texts, [*documents, planted]) == [7]
    meta = json.loads((embedded_dir / "meta.json").read_text())
    assert meta["held_out_overlap_removed"]["held_out_texts_found"] > 0  # it was really there


def test_name_tags_align_and_are_bio(embedded_dir: Path) -> None:
    seen = set()
    for text, tags in rows(embedded_dir / "names" / "dev.csv"):
        ids, labels = text.split(), tags.split()
        assert len(ids) == len(labels)
        for prev, tag in zip(["O", *labels], labels, strict=False):
            seen.add(tag)
            if tag.startswith("I-"):
                assert prev[2:] == tag[2:] and prev != "O"
    assert {"B-PER", "I-PER", "B-LOC", "B-ORG"} <= seen


def test_person_name_runs_merge() -> None:
    words = [("江", "nr"), ("泽民", "nr"), ("在", "p"), ("北京", "ns"), ("上海", "ns")]
    assert bio_tags(words) == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-LOC", "I-LOC"]


def test_same_seed_same_bytes(embedded_dir: Path, tmp_path: Path) -> None:
    again = build_embedded_corpus(from_conf(EmbeddedConfig, "corpus", out_dir=tmp_path))
    first = json.loads((embedded_dir / "meta.json").read_text())
    assert again["files"] == first["files"]
    assert again["counts"]["reviews"]["both_labels_dropped"] == 47


def test_a_rebuild_replaces_only_changed_files_whole(tmp_path: Path) -> None:
    """Each file is renamed into place (a run reading it never sees half of it) and an unchanged
    file is left alone, keeping the modification time the segment cache is keyed on."""
    out = tmp_path / "embedded"
    first = {
        "pretrain.txt": b"1 2\n",
        "sentiment/train.csv": b"label\ttext\n",
        "meta.json": b"{}\n",
    }
    assert _write_files(out, first) == 3
    before = {rel: (out / rel).stat() for rel in first}
    assert _write_files(out, {**first, "sentiment/train.csv": b"label\ttext\n0\t1 2\n"}) == 1
    kept = (out / "pretrain.txt").stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (
        before["pretrain.txt"].st_ino,
        before["pretrain.txt"].st_mtime_ns,
    )
    assert (out / "sentiment/train.csv").read_bytes() == b"label\ttext\n0\t1 2\n"
    assert (out / "sentiment/train.csv").stat().st_ino != before["sentiment/train.csv"].st_ino
    assert [p.name for p in tmp_path.iterdir()] == ["embedded"]  # no lock or temporary left
    assert sorted(p.name for p in (out / "sentiment").iterdir()) == ["train.csv"]
