"""Reading and encoding task files (`ptm.tasks.loading`): truncation, pairs, tag windows, held-out
dev, label budgets, bad input, and memory that holds what trains rather than what files hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ptm.data.tokenizer import SPECIAL_TOKENS, build_tokenizer
from ptm.errors import InputError
from ptm.tasks.batching import batch_order, collate
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import load_task
from ptm.tasks.loading import natural_order, pair_budget, read_split, truncate, windows
from ptm.tasks.splits import IGNORE
from ptm.tasks.tables import TextEncoder
from tests.conftest import task_config

CLS, SEP = 2, 3  # positions of [CLS] and [SEP] in SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tokenizer():
    vocab = [*SPECIAL_TOKENS, *(str(i) for i in range(100, 400))]
    return build_tokenizer(vocab, 64)


def index_of(raw_id: int) -> int:
    return raw_id - 100 + len(SPECIAL_TOKENS)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sized_task(**kw) -> TaskConfig:
    """A task of conf/task/_base.yaml's settings at 256 positions (the length a run gives a task
    of ``max_seq_len: null`` on a model of 256), ``kw`` changed."""
    return task_config(**{"max_seq_len": 256, **kw})


def cls_task(tmp_path: Path, train: str, dev: str | None = None, **kw) -> TaskConfig:
    dev_path = write(tmp_path / "dev.csv", dev) if dev is not None else None
    kw = {"kind": "classification", **kw}
    return sized_task(train=write(tmp_path / "train.csv", train), dev=dev_path, **kw)


TRAIN = "label\ttext\n2\t100 101\n10\t102 103 104\n2\t105\n10\t106\n"


def test_labels_keep_their_spelling_in_natural_order(tmp_path: Path, tokenizer) -> None:
    task = load_task(cls_task(tmp_path, TRAIN, dev=TRAIN), tokenizer)
    assert task.labels == ["2", "10"]  # numeric order, not "10" < "2"
    train = task.splits["train"]
    assert train.labels.tolist() == [0, 1, 0, 1]
    assert train.input_ids[1].tolist() == [CLS, index_of(102), index_of(103), index_of(104), SEP]
    assert natural_order({"b", "a", "C"}) == ["C", "a", "b"]
    assert task.chance_loss == pytest.approx(np.log(2))


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("head", list(range(100, 106))),
        ("tail", list(range(114, 120))),
        (
            "head_tail",
            [100, 101, 116, 117, 118, 119],
        ),  # 6 x 0.25 -> 2 from the head, 4 from the tail
    ],
)
def test_long_documents_are_truncated_at_head_tail_or_both(
    tmp_path: Path, tokenizer, how: str, expected: list[int]
) -> None:
    long = " ".join(str(i) for i in range(100, 120))
    train = f"label\ttext\n0\t{long}\n1\t100\n"
    cfg = cls_task(tmp_path, train, dev=train, max_seq_len=8, truncation=how, head_fraction=0.25)
    split = load_task(cfg, tokenizer).splits["train"]
    assert split.input_ids[0].tolist() == [CLS, *map(index_of, expected), SEP]
    assert split.stats["truncated"] == 1
    assert truncate(np.arange(10), 4, "head_tail", 0.5).tolist() == [0, 1, 8, 9]
    assert truncate(np.arange(3), 4, "tail", 0.5).tolist() == [0, 1, 2]


def test_pairs_get_token_types_and_longest_first_trimming(tmp_path: Path, tokenizer) -> None:
    long_b = " ".join(str(i) for i in range(200, 230))
    train = f"text_a\ttext_b\tlabel\n100 101\t102 103 104\ty\n100\t{long_b}\tn\n"
    cfg = sized_task(
        name="p",
        kind="pair",
        train=write(tmp_path / "p.csv", train),
        dev=tmp_path / "p.csv",
        text_column="text_a",
        max_seq_len=12,
    )
    split = load_task(cfg, tokenizer).splits["train"]
    first = split.input_ids[0].tolist()
    assert first == [CLS, index_of(100), index_of(101), SEP, *map(index_of, [102, 103, 104]), SEP]
    assert len(split.input_ids[1]) == 12  # a keeps its 1 ID, b is trimmed to 8
    batch = collate(split, np.array([0, 1]), pad_id=0)
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, *[1] * 9]
    assert batch["attention_mask"][0].sum() == 8
    assert pair_budget(30, 100, 50) == (25, 25)
    assert pair_budget(10, 100, 50) == (10, 40)
    assert pair_budget(100, 10, 50) == (40, 10)


def test_long_tagged_rows_become_windows_that_stitch_back(tmp_path: Path, tokenizer) -> None:
    ids = list(range(100, 125))
    tags = ["O"] * 25
    tags[7:9] = ["B-PER", "I-PER"]
    train = f"text\ttags\n{' '.join(map(str, ids))}\t{' '.join(tags)}\n100 101\tB-LOC O\n"
    cfg = sized_task(
        name="n",
        kind="tokens",
        train=write(tmp_path / "n.csv", train),
        dev=tmp_path / "n.csv",
        label_column="tags",
        max_seq_len=10,
    )
    task = load_task(cfg, tokenizer)
    assert task.labels == ["O", "B-LOC", "B-PER", "I-PER"]
    split = task.splits["train"]
    assert split.row.tolist() == [0, 0, 0, 0, 1]  # 25 IDs in windows of 8
    assert [len(x) for x in split.input_ids] == [10, 10, 10, 3, 4]
    first_window_tags = split.tags[0]
    assert first_window_tags[0] == IGNORE and first_window_tags[-1] == IGNORE
    assert [task.labels[i] for i in split.row_tags()[0]] == tags
    assert windows(np.array([0, 2, 3, 6]), 8, 4) == [(0, 3), (3, 6), (6, 8)]


def test_no_dev_file_holds_out_a_fixed_stratified_split(tmp_path: Path, tokenizer) -> None:
    rows = "".join(f"{i % 2}\t{100 + i}\n" for i in range(200))
    cfg = cls_task(tmp_path, "label\ttext\n" + rows, dev_fraction=0.1)
    a, b = load_task(cfg, tokenizer), load_task(cfg, tokenizer)
    dev, train = a.splits["dev"], a.splits["train"]
    assert len(dev) + len(train) == 200 and 16 <= len(dev) <= 24
    assert abs(int(dev.labels.sum()) - len(dev) / 2) <= 2  # both classes, about half each
    dev_ids = {int(x[1]) for x in dev.input_ids}
    assert dev_ids.isdisjoint(int(x[1]) for x in train.input_ids)
    assert dev_ids == {int(x[1]) for x in b.splits["dev"].input_ids}


def test_limit_spreads_over_a_file_sorted_by_label(tmp_path: Path, tokenizer) -> None:
    rows = "".join(f"{0 if i < 50 else 1}\t{100 + i}\n" for i in range(100))
    cfg = cls_task(tmp_path, "label\ttext\n" + rows, dev="label\ttext\n0\t100\n1\t101\n")
    task = load_task(cfg, tokenizer, limit=10)
    assert len(task.splits["train"]) == 10
    assert sorted(set(task.splits["train"].labels.tolist())) == [0, 1]


def test_length_grouped_batches_cover_the_data_and_group_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, 1000)
    batches = batch_order(lengths, 32, np.random.default_rng(1), group=10)
    seen = np.concatenate(batches)
    assert len(batches) == 31 and len(set(seen.tolist())) == len(seen) == 992
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    plain = batch_order(lengths, 32, np.random.default_rng(1), group=None)
    assert spread < 0.25 * np.mean([lengths[b].max() - lengths[b].min() for b in plain])


@pytest.mark.parametrize(
    ("train", "dev", "message", "line"),
    [
        (TRAIN, "label\ttext\n2\t100\n7\t101\n", r"label '7' does not occur in the training", 3),
        (TRAIN, "label\ttext\n2\t100\n10\t   \n", r"empty text .* drop the row", 3),
        (TRAIN, "label\ttext\n2\t100 abc\n", r"a character that is not an ID: 'abc'", 2),
        (TRAIN, "label\ttext\n2\t100\t5\n", r"3 tab-separated fields where the header has 2", 2),
        (TRAIN, "lab\ttext\n2\t100\n", r"no 'label' column in the header", 1),
        ("label\ttext\n1\t100\n1\t101\n", None, r"only the label\(s\) \['1'\]", None),
    ],
)
def test_bad_input_names_file_line_and_fix(
    tmp_path: Path, tokenizer, train: str, dev: str | None, message: str, line: int | None
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        load_task(cls_task(tmp_path, train, dev=dev), tokenizer)
    if line is not None:
        assert caught.value.line == line
        assert str(caught.value).startswith(f"{caught.value.path}:{line}: ")
    assert " — " in str(caught.value)  # a fix follows


def test_a_test_file_with_a_label_column_is_refused(tmp_path: Path, tokenizer) -> None:
    test = write(tmp_path / "test.csv", "label\ttext\n2\t100\n")
    cfg = cls_task(tmp_path, TRAIN, dev=TRAIN, test=test)
    with pytest.raises(InputError, match=r"test.csv:1: the test file has a 'label' column .*"):
        load_task(cfg, tokenizer)


def test_test_labels_must_match_the_test_rows_and_the_classes(tmp_path: Path, tokenizer) -> None:
    test = write(tmp_path / "test.csv", "text\n100\n101\n")
    answers = write(tmp_path / "answers.csv", "label\n2\n")
    cfg = cls_task(tmp_path, TRAIN, dev=TRAIN, test=test, test_labels=answers)
    with pytest.raises(InputError, match=r"1 labels for 2 rows"):
        load_task(cfg, tokenizer)
    write(answers, "label\n2\nnine\n")
    with pytest.raises(InputError, match=r"answers.csv:3: label 'nine' does not occur"):
        load_task(cfg, tokenizer)
    write(answers, "label\n2\n10\n")
    assert load_task(cfg, tokenizer).splits["test"].labels.tolist() == [0, 1]


def test_bad_tags_are_refused(tmp_path: Path, tokenizer) -> None:
    def tags_task(train: str, dev: str) -> TaskConfig:
        return sized_task(
            name="n",
            kind="tokens",
            train=write(tmp_path / "n.csv", train),
            dev=write(tmp_path / "d.csv", dev),
            label_column="tags",
        )

    good = "text\ttags\n100 101\tB-PER I-PER\n"
    with pytest.raises(InputError, match=r"n.csv:2: 1 tags for 2 IDs"):
        load_task(tags_task("text\ttags\n100 101\tO\n", good), tokenizer)
    with pytest.raises(InputError, match=r"n.csv:2: tag 'PER' is not BIO"):
        load_task(tags_task("text\ttags\n100\tPER\n", good), tokenizer)
    with pytest.raises(InputError, match=r"d.csv:2: tag 'B-LOC' does not occur"):
        load_task(tags_task(good, "text\ttags\n100\tB-LOC\n"), tokenizer)


def test_multi_label_rows_become_label_sets(tmp_path: Path, tokenizer) -> None:
    train = "label\ttext\nb;a\t100 101\nc\t102\na; a\t103\nb\t104\n"
    cfg = sized_task(
        name="m",
        kind="multi_label",
        train=write(tmp_path / "train.csv", train),
        dev=tmp_path / "train.csv",
        label_separator=";",
    )
    task = load_task(cfg, tokenizer)
    assert task.labels == ["a", "b", "c"]
    assert task.splits["train"].labels.tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]
    p = np.array([0.5, 0.5, 0.25])  # each label's share of the rows
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert task.chance_loss == pytest.approx(entropy.mean())
    batch = collate(task.splits["train"], np.array([0, 2]), pad_id=0)
    assert batch["labels"].tolist() == [[1, 1, 0], [1, 0, 0]]

    for bad, line, what in (("a;;b", 2, "an empty label in 'a;;b'"), ("", 2, "an empty label")):
        rows = train.replace("b;a", bad)
        with pytest.raises(InputError, match=what) as caught:
            load_task(
                dataclasses.replace(cfg, train=write(tmp_path / "bad.csv", rows)),
                tokenizer,
            )
        assert caught.value.line == line
    dev = write(tmp_path / "dev.csv", "label\ttext\na;d\t100\n")
    with pytest.raises(InputError, match="label 'd' does not occur in the training data") as caught:
        load_task(dataclasses.replace(cfg, dev=dev), tokenizer)
    assert (caught.value.path, caught.value.line) == (dev, 2)


def test_reading_keeps_only_the_tokens_a_kind_can_use(tmp_path: Path, tokenizer) -> None:
    """A 300-ID document read for 16 positions holds the 14 IDs truncation keeps, on memory of
    its own (a view would keep the whole batch's token array alive); the log's counts and the
    truncated share still count what the file held."""
    long = " ".join(str(100 + i % 60) for i in range(300))
    path = write(tmp_path / "t.csv", f"label\ttext\na\t{long}\nb\t100 101\n")
    cfg = cls_task(tmp_path, "label\ttext\na\t100\nb\t101\n", dev="label\ttext\na\t100\n")
    cfg = dataclasses.replace(cfg, max_seq_len=16)
    kind = load_task(cfg, tokenizer).kind
    raw = read_split(cfg, kind, path, TextEncoder(tokenizer), "required", None)
    (first, _), (second, _) = raw.text_a
    assert len(first) == 14 and first.base is None and len(second) == 2
    assert raw.lengths.tolist() == [300, 2] and raw.counts["tokens"] == 302
    split = kind.encode(cfg, "dev", raw, [0, 1], tokenizer)
    ids = list(map(int, first))
    expected = truncate(np.arange(300), 14, cfg.truncation, cfg.head_fraction)
    assert ids == [index_of(100 + i % 60) for i in expected]
    assert split.stats["truncated"] == 1 and split.stats["tokens"] == 302
