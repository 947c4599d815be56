"""The scale benchmark (`python -m bench.scale`): its corpus is shaped as Tianchi's and its labels
can be learnt, and the harness runs every stage in a process of its own and records each one's
time, peak memory and work (here at the tiny scale; 1x and 5x are `make scale` runs)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import bench.scale
from bench.scale import STAGES, CorpusShape, ScaleConfig, Size, harness, write_corpus
from docs.scale_table import scale_table
from ptm.config import from_conf
from ptm.records import read_record


def shape(**values) -> CorpusShape:
    return from_conf(CorpusShape, "scale", "corpus", **values)


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


def test_the_corpus_is_shaped_as_tianchi_s(tmp_path: Path) -> None:
    size = Size(name="t", train=3000, test=200, dev=300, pretrain_steps=1, finetune_steps=1)
    files = write_corpus(shape(), size, tmp_path)
    header, train = read(tmp_path / "train.csv")
    assert header == ["label", "text"] and len(train) == 3000
    header, test = read(tmp_path / "test.csv")
    assert header == ["text"] and len(test) == 200
    assert files["train"]["documents"] == 3000 and files["test"]["bytes"] > 0

    labels = np.array([int(r["label"]) for r in train])
    sizes = np.bincount(labels, minlength=14)
    assert len(sizes) == 14 and sizes.min() > 0  # every class present
    assert sizes[0] == sizes.max() and sizes[0] / sizes.min() > 10  # skewed, label 0 the largest
    assert sizes.tolist() == files["train"]["per_label"]

    docs = [np.array(r["text"].split(), dtype=np.int64) for r in train]
    lengths = np.array([len(d) for d in docs])
    assert 820 < lengths.mean() < 980 and np.median(lengths) < 0.85 * lengths.mean()
    assert lengths.max() > 4 * lengths.mean()  # a long tail, as the real corpus's
    assert lengths.sum() == files["train"]["ids"]
    ids = np.concatenate(docs)
    counts = np.bincount(ids)
    assert 6500 < np.count_nonzero(counts) <= 7000 and ids.max() < 7550
    assert 0.02 < counts.max() / len(ids) < 0.06  # the commonest ID, as Tianchi's 3750


def test_its_labels_can_be_learnt_from_the_ids(tmp_path: Path) -> None:
    """Naive Bayes on ID counts, fitted on train, well above the majority class on dev."""
    size = Size(name="t", train=2000, test=10, dev=300, pretrain_steps=1, finetune_steps=1)
    write_corpus(shape(), size, tmp_path)
    (_, train), (_, dev) = read(tmp_path / "train.csv"), read(tmp_path / "dev.csv")
    per_class = np.ones((14, 7550))
    for r in train:
        np.add.at(per_class[int(r["label"])], np.array(r["text"].split(), dtype=np.int64), 1)
    log_p = np.log(per_class / per_class.sum(axis=1, keepdims=True))
    prior = np.log(np.bincount([int(r["label"]) for r in train], minlength=14) + 1)
    guess = [np.argmax(prior + log_p[:, np.array(r["text"].split(), int)].sum(1)) for r in dev]
    truth = np.array([int(r["label"]) for r in dev])
    majority = np.bincount(truth).max() / len(truth)
    assert np.mean(np.array(guess) == truth) > max(0.8, majority + 0.5)


def test_the_same_seed_writes_the_same_corpus_whatever_the_folder(tmp_path: Path) -> None:
    size = Size(name="t", train=300, test=50, dev=20, pretrain_steps=1, finetune_steps=1)
    write_corpus(shape(chunk_docs=64), size, tmp_path / "a")
    write_corpus(shape(chunk_docs=64), size, tmp_path / "b")
    write_corpus(shape(chunk_docs=64, seed=1), size, tmp_path / "c")
    for name in ("train.csv", "dev.csv", "test.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.csv").read_bytes() != (
        tmp_path / "c" / "train.csv"
    ).read_bytes()


def test_the_harness_runs_and_records_every_stage(tmp_path: Path) -> None:
    work, record_path = tmp_path / "work", tmp_path / "scale-tiny.json"
    overrides = ["scale=tiny", f"work_dir={work}", f"record={record_path}", "report=null"]
    cfg = from_conf(ScaleConfig, "scale", overrides=tuple(overrides))
    record = harness(cfg, overrides)

    assert read_record(record_path) == record and record["kind"] == "scale"
    m = record["metrics"]
    assert m["documents"] == {"train": 2000, "dev": 100, "test": 300}
    assert [s["stage"] for s in m["stages"]] == [name for name, _, _ in STAGES]
    for stage in m["stages"]:
        assert stage["seconds"] > 0 and stage["peak_rss_mb"] > 20, stage
        assert stage["amount"] > 0 and stage["rate"] > 0 and stage["unit"], stage
        assert 0 < stage["work_seconds"] <= stage["seconds"], stage
        assert stage["command"].startswith("python -m "), stage
    by = {s["stage"]: s for s in m["stages"]}
    assert by["corpus"]["amount"] == sum(m["ids"].values())
    assert by["pretrain"]["detail"]["steps"] == 5
    assert by["load"]["detail"]["rows"] == {"train": 1799, "dev": 201, "test": 300}
    assert by["finetune"]["detail"]["steps"] == 2
    assert by["predict"]["amount"] == 300
    submission = work / "predict" / "out" / "tianchi" / "submission.csv"
    assert len(submission.read_text().splitlines()) == 301  # header + a label per test document
    assert m["disk_mb"]["corpus"] > 0 and m["disk_mb"]["segments"] > 0
    assert record["extra"]["corpus_command"] == (
        f"python -m bench.scale scale=tiny work_dir={work} stage=corpus"
    )
    assert record["machine"]["label"] and record["wall_seconds"] > 0

    table = scale_table([("results/scale-tiny.json", record), ("results/scale-5x.json", None)])
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [r.split(":")[0] for r in rows] == [f"| {name}" for name, _, _ in STAGES]
    assert "- **results/scale-5x.json** — not measured yet." in table


def test_a_stage_that_fails_is_recorded_with_its_peak_and_stops_the_run(
    tmp_path: Path, monkeypatch
) -> None:
    """A stage the kernel kills (out of memory, at 5x) keeps the time and peak it reached, the
    stages before it stay in the record, and the run exits naming its log."""
    real = bench.scale.stage_commands

    def killed_at_segments(*args):
        commands = real(*args)
        commands["segments"] = ["python", "-c", "import os; os.kill(os.getpid(), 9)"]
        return commands

    monkeypatch.setattr(bench.scale, "stage_commands", killed_at_segments)
    work, record_path = tmp_path / "work", tmp_path / "scale-tiny.json"
    overrides = ["scale=tiny", "sizes.tiny.train=200", f"work_dir={work}", f"record={record_path}"]
    overrides.append("report=null")
    cfg = from_conf(ScaleConfig, "scale", overrides=tuple(overrides))
    with pytest.raises(SystemExit, match=r"stage segments failed \(killed by signal 9 \(out of"):
        harness(cfg, overrides)
    corpus, segments = read_record(record_path)["metrics"]["stages"]
    assert corpus["stage"] == "corpus" and corpus["detail"]["per_label"][0] > 0
    assert corpus["amount"] == sum(read_record(record_path)["metrics"]["ids"].values())
    assert segments["error"] == "killed by signal 9 (out of memory?)"
    assert segments["peak_rss_mb"] > 0 and segments["log"] == str(work / "logs" / "segments.log")
