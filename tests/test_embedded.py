"""The embedded corpus: clean splits, no leakage into pretraining, aligned tags, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

from ptm.embedded import EmbeddedConfig, bio_tags, build_embedded_corpus


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


def test_pretraining_corpus_holds_no_dev_or_test_text(embedded_dir: Path) -> None:
    pretrain = {
        line.replace("_", " ") for line in (embedded_dir / "pretrain.txt").read_text().splitlines()
    }
    held_out = [t for _, t in rows(embedded_dir / "sentiment" / "dev.csv")]
    held_out += [r[0] for r in rows(embedded_dir / "sentiment" / "test.csv")]
    assert not pretrain & set(held_out)
    names_test = {r[0] for r in rows(embedded_dir / "names" / "test.csv")}
    pretrain_text = "\n".join(pretrain)
    long_ones = [s for s in names_test if s.count(" ") > 30][:50]
    assert long_ones and not any(s in pretrain_text for s in long_ones)


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
    again = build_embedded_corpus(EmbeddedConfig(out_dir=tmp_path))
    first = json.loads((embedded_dir / "meta.json").read_text())
    assert again["files"] == first["files"]
    assert again["counts"]["reviews"]["both_labels_dropped"] == 47
