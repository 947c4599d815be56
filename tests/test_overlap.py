"""Held-out text inside a pretraining corpus: the search (`ptm.data.overlap`) and the report command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import run_module

from ptm.data.overlap import HeldOutIndex
from ptm.tasks.overlap import text_tokens


def test_finds_texts_inside_documents_and_nothing_else() -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50, n) for n in (40, 3, 60, 25)]
    inside = docs[2][10:30]  # inside document 2
    across = np.concatenate([docs[0][-5:], docs[1], docs[2][:5]])  # spans three documents
    near_miss = inside.copy()
    near_miss[-1] += 100  # same start, different end: a hash candidate, not a match
    short = docs[3][:4]  # shorter than min_len: not checked
    whole = docs[3]  # a whole document is contained in itself
    index = HeldOutIndex([inside, across, near_miss, short, whole], min_len=8)
    assert index.checked.tolist() == [True, True, True, False, True]
    assert index.scan_documents(docs) == [(2, 0), (3, 4)]


def test_text_tokens_reads_ids_and_raw_text_alike() -> None:
    assert text_tokens("12 7_300\t5\n").tolist() == [12, 7, 300, 5]
    assert text_tokens(" 诸葛 涛\n").tolist() == [ord("诸"), ord("葛"), ord("涛")]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_report_counts_test_text_a_tianchi_corpus_contains(tmp_path: Path) -> None:
    """The Tianchi habit: pretraining on train_set.csv and test_a.csv. The report says that all
    of the test text is inside, and none of a dev file that is not."""
    rng = np.random.default_rng(1)
    docs = [" ".join(map(str, rng.integers(100, 900, 30))) for _ in range(12)]
    train = write(
        tmp_path / "train_set.csv",
        ["label\ttext"] + [f"{i % 2}\t{d}" for i, d in enumerate(docs[:6])],
    )
    test = write(tmp_path / "test_a.csv", ["text", *docs[6:9]])
    dev = write(
        tmp_path / "dev.csv", ["label\ttext"] + [f"{i % 2}\t{d}" for i, d in enumerate(docs[9:])]
    )
    result = run_module(
        "pretrain.overlap", f"paths.output_dir={tmp_path}", "data=tianchi",
        f"data.corpus=[{train},{test}]", "task=tianchi", f"tasks.tianchi.train={train}",
        f"tasks.tianchi.dev={dev}", f"tasks.tianchi.test={test}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (report_file,) = tmp_path.glob("logs/overlap/*/overlap.json")
    report = json.loads(report_file.read_text())
    assert report["tianchi/test"] == {"rows": 3, "checked": 3, "contained": 3, "share": 1.0}
    assert report["tianchi/dev"]["contained"] == 0
    assert report["tianchi/train"]["share"] == 1.0
    assert "tianchi/test" in result.stdout and "(100.0%)" in result.stdout


def test_report_on_raw_chinese_text(tmp_path: Path) -> None:
    corpus = write(tmp_path / "news.txt", ["今天诸葛涛在成都发表了演讲，听众很多。", "天气晴朗。"])
    dev = write(
        tmp_path / "dev.csv",
        ["label\ttext", "1\t诸葛涛在成都发表了演讲", "0\t完全没有出现过的句子啊"],
    )
    train = write(
        tmp_path / "train.csv", ["label\ttext", "1\t好的好的好的好的", "0\t坏的坏的坏的坏的"]
    )
    result = run_module(
        "pretrain.overlap", f"paths.output_dir={tmp_path}", f"data.corpus=[{corpus}]",
        "task=tianchi", f"tasks.tianchi.train={train}", f"tasks.tianchi.dev={dev}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (report_file,) = tmp_path.glob("logs/overlap/*/overlap.json")
    assert json.loads(report_file.read_text())["tianchi/dev"]["contained"] == 1


def test_report_names_a_corpus_line_that_is_not_utf8(tmp_path: Path) -> None:
    corpus = tmp_path / "news.txt"
    corpus.write_bytes("第一行文字。\n".encode() + b"\xff\xfe bad\n")
    train = write(
        tmp_path / "train.csv", ["label\ttext", "1\t好的好的好的好的", "0\t坏的坏的坏的坏的"]
    )
    result = run_module(
        "pretrain.overlap", f"paths.output_dir={tmp_path}", f"data.corpus=[{corpus}]",
        "task=tianchi", f"tasks.tianchi.train={train}",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {corpus}:2: not UTF-8 text (invalid start byte) — save it as UTF-8"
    ]


def test_each_text_column_of_the_task_s_kind_is_searched_and_a_kind_is_required(
    tmp_path: Path,
) -> None:
    """A pair task's second text is held-out text too (its kind names both columns); a task
    file without ``kind:`` is refused rather than read as classification."""
    corpus = write(tmp_path / "news.txt", ["今天诸葛涛在成都发表了演讲，听众很多。"])
    rows = ["text_a\ttext_b\tlabel", "完全没有出现过的句子\t诸葛涛在成都发表了演讲\t0"]
    train = write(tmp_path / "train.csv", rows)
    task = ["task=pair", f"tasks.pair.train={train}", f"tasks.pair.dev={train}"]
    args = ("pretrain.overlap", f"paths.output_dir={tmp_path}", f"data.corpus=[{corpus}]", *task)
    result = run_module(*args)
    assert result.returncode == 0, result.stderr
    (report_file,) = tmp_path.glob("logs/overlap/*/overlap.json")
    assert json.loads(report_file.read_text())["pair/dev"] == {
        "rows": 2, "checked": 2, "contained": 1, "share": 0.5,
    }  # fmt: skip
    result = run_module(*args, "~tasks.pair.kind")
    assert result.returncode == 2
    assert "error: tasks.pair names no kind — add kind:" in result.stderr
