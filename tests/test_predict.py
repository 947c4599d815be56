"""`python -m finetune.predict`: a fine-tuned model's predictions for a new file.

On the test file a run was trained with, its predictions are the run's own
``predictions/<task>/`` files, for every kind and for a two-task model (headerless columns, an id
column, JSON lines zipped). With one chunk holding the whole file and the run's evaluation batch
size, the same batches run: the files are byte-equal. Read in small chunks, rows share batches
with other rows, so padded widths — and float rounding — differ: the submission is still the
same bytes, the probabilities equal within 1e-6 (one unit of the sixth decimal the file keeps).
Bad files get the errors fine-tuning gives, a chunk is written before the next is read, and
`make predict` works from a terminal.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from finetune.predict import PredictConfig, _task, input_sets, run
from finetune.train import run as finetune
from ptm.config import compose, to_dataclass
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError
from ptm.tasks import streaming
from ptm.tasks.loading import read_split
from ptm.tasks.tables import TextEncoder
from tests.conftest import ROOT, run_module
from tests.finetune_helpers import (
    classification_rows,
    finetune_config,
    task_overrides,
    tiny_model_dir,
    write_classification,
    write_multilabel,
    write_pairs,
    write_tags,
)

EVAL_BATCH = (
    32  # +experiment=finetune_tiny's train.eval_batch_size: the batches the run predicted in
)
STEPS = ("train.max_steps=6",)  # equality needs no learning: a few steps keep each run seconds long
KINDS = {  # kind -> (files, task overrides): each short enough that rows get truncated or windowed
    "classification": (write_classification, {"max_seq_len": 16, "truncation": "tail"}),
    "pair": (write_pairs, {"text_column": "text_a", "max_seq_len": 16}),
    "tokens": (lambda d: write_tags(d, long_every=5), {"label_column": "tags", "max_seq_len": 16}),
    "multi_label": (write_multilabel, {"max_seq_len": 16}),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("base"))


def fine_tune(tmp: Path, base: Path, *overrides: str) -> Path:
    run_dir = tmp / "run"
    finetune(finetune_config(tmp, base, run_dir, *overrides, *STEPS))
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, base: Path) -> dict[str, tuple[Path, dict]]:
    """kind -> (a tiny run of that kind, its files)."""
    out = {}
    for kind, (write, extra) in KINDS.items():
        tmp = tmp_path_factory.mktemp(kind)
        files = write(tmp / "data")
        out[kind] = fine_tune(tmp, base, *task_overrides("t", files, kind, **extra)), files
    return out


def predict(tmp: Path, *overrides: str) -> dict:
    """`python -m finetune.predict overrides` in this process, its log folder in ``tmp``."""
    data = compose("predict", ("runtime=cpu", "runtime.precision=fp32", *overrides))
    data["run_dir"] = str(tmp / "log")
    return run(to_dataclass(PredictConfig, data))


def same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a} differs from {b}"


def probabilities(path: Path) -> tuple[str, np.ndarray]:
    header, *rows = path.read_text().splitlines()
    return header, np.array([[float(x) for x in r.split("\t")] for r in rows])


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_copied_model_folder_predicts_the_runs_test_file_as_the_run_did(
    tmp_path: Path, runs: dict, kind: str
) -> None:
    run_dir, files = runs[kind]
    model = shutil.copytree(run_dir / "model", tmp_path / "copied" / "model")  # the folder alone
    theirs = run_dir / "predictions" / "t"
    names = ["probabilities.csv", "submission.csv"] if kind != "tokens" else ["submission.csv"]

    whole = tmp_path / "whole"
    args = (f"run={model}", f"inputs=[{files['test']}]", f"batch_size={EVAL_BATCH}")
    metrics = predict(tmp_path, *args, f"output={whole}")
    assert metrics["rows"] == len(files["test"].read_text().splitlines()) - 1
    assert sorted(p.name for p in (whole / "t").iterdir()) == names
    for name in names:  # the same batches as the run's: the same bytes
        same_bytes(whole / "t" / name, theirs / name)

    chunked = tmp_path / "chunked"
    predict(tmp_path, *args, "chunk_rows=7", f"output={chunked}")
    same_bytes(chunked / "t" / "submission.csv", theirs / "submission.csv")
    if kind != "tokens":
        header, ours = probabilities(chunked / "t" / "probabilities.csv")
        their_header, expected = probabilities(theirs / "probabilities.csv")
        assert header == their_header and len(np.unique(expected, axis=0)) > 1  # rows differ
        # Within 1e-6, plus the parse of two six-decimal strings one unit apart.
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6 + 1e-12)


def headerless_classification(folder: Path) -> dict[str, Path]:
    """``id\\ttext\\tlabel`` without a header (the Tianchi multi-task layout); test ids out of
    order, so a submission that sorts or renumbers shows."""
    folder.mkdir(parents=True)
    files = {}
    for name, n, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 30, 3)):
        rows = classification_rows(n, seed)
        ids = [f"{name}{(i * 7) % n}" for i in range(n)]
        files[name] = folder / f"{name}.csv"
        files[name].write_text(
            "".join(
                f"{i}\t{t}\n" if name == "test" else f"{i}\t{t}\t{lab}\n"
                for i, (lab, t) in zip(ids, rows, strict=True)
            )
        )
    return files


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory: pytest.TempPathFactory, base: Path) -> tuple[Path, dict, dict]:
    tmp = tmp_path_factory.mktemp("two")
    emo, ner = headerless_classification(tmp / "emo"), write_tags(tmp / "ner", long_every=5)
    run_dir = fine_tune(
        tmp,
        base,
        *task_overrides(
            "emo", emo, "classification", max_seq_len=16, columns="[id,text,label]",
            id_column="id", submission_format="jsonl", submission_name="emo_predict.json",
        ),
        *task_overrides("ner", ner, "tokens", label_column="tags", max_seq_len=16),
    )  # fmt: skip
    return run_dir, emo, ner


def test_a_two_task_model_predicts_each_task_and_zips_the_json_lines(
    tmp_path: Path, two_tasks: tuple[Path, dict, dict]
) -> None:
    run_dir, emo, ner = two_tasks
    theirs = run_dir / "predictions"
    expected = {
        "emo": ["submission.csv", "probabilities.csv", "emo_predict.json"],
        "ner": ["submission.csv"],
    }
    # By name, by finetune.json's order, and by default (the run's own test files).
    for how, inputs in (
        ("named", [f"inputs={{ner: {ner['test']}, emo: {emo['test']}}}"]),
        ("ordered", [f"inputs=[{emo['test']},{ner['test']}]"]),
        ("default", []),
    ):
        out = tmp_path / how
        predict(tmp_path, f"run={run_dir}", *inputs, f"output={out}", f"batch_size={EVAL_BATCH}")
        for task, names in expected.items():
            for name in names:
                same_bytes(out / task / name, theirs / task / name)
        with (
            zipfile.ZipFile(out / "submission.zip") as ours,
            zipfile.ZipFile(theirs / "submission.zip") as run_zip,
        ):
            assert ours.namelist() == run_zip.namelist() == ["emo_predict.json"]
            assert ours.read("emo_predict.json") == run_zip.read("emo_predict.json")
    first = json.loads((out / "emo" / "emo_predict.json").read_text().splitlines()[0])
    assert first["id"] == emo["test"].read_text().split("\t")[0]  # test order, ids as written

    # One task of the two, by name.
    out = tmp_path / "one"
    metrics = predict(tmp_path, f"run={run_dir}", f"inputs={{ner: {ner['test']}}}", f"output={out}")
    assert [f["task"] for f in metrics["files"]] == ["ner"] and not (out / "emo").exists()
    assert metrics["submission_zips"] == []


def test_inputs_map_to_tasks_by_name_or_order() -> None:
    one, two = ["cls"], ["a", "b"]
    assert input_sets(["x/t.csv", "y/u.csv"], one, {}) == [
        {"cls": Path("x/t.csv")},
        {"cls": Path("y/u.csv")},
    ]
    assert input_sets(["p.csv", "q.csv"], two, {}) == [{"a": Path("p.csv"), "b": Path("q.csv")}]
    assert input_sets({"b": "q.csv"}, two, {}) == [{"b": Path("q.csv")}]
    assert input_sets(None, two, {"a": {"test": "t.csv"}, "b": {"test": None}}) == [
        {"a": Path("t.csv")}
    ]
    with pytest.raises(InputError, match=r"1 input file\(s\) for a model of 2 tasks — give one"):
        input_sets(["p.csv"], two, {})
    with pytest.raises(InputError, match=r"inputs names task\(s\) \['c'\] the model does not"):
        input_sets({"c": "p.csv"}, two, {})
    with pytest.raises(InputError, match=r"repeat a file name"):
        input_sets(["x/t.csv", "y/t.csv"], one, {})
    with pytest.raises(InputError, match=r"inputs is not set and there is no run with test"):
        input_sets(None, one, {})


def test_several_files_for_one_task_each_get_a_folder(tmp_path: Path, runs: dict) -> None:
    run_dir, files = runs["classification"]
    other = tmp_path / "test_b.csv"
    other.write_text("text\n" + "".join(f"{t}\n" for _, t in classification_rows(9, 7)))
    out = tmp_path / "out"
    predict(tmp_path, f"run={run_dir}", f"inputs=[{files['test']},{other}]", f"output={out}")
    same_bytes(out / "test.csv" / "t" / "submission.csv", run_dir / "predictions/t/submission.csv")
    assert len((out / "test_b.csv" / "t" / "submission.csv").read_text().splitlines()) == 10


def test_a_chunk_is_written_before_the_next_is_read(
    tmp_path: Path, runs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays flat: no step holds more than ``chunk_rows`` rows, and each chunk is read,
    encoded, predicted and written before the next is read."""
    run_dir, _ = runs["classification"]
    events: list[tuple[str, int]] = []
    chunks, add = streaming.raw_chunks, streaming.AppendedFiles.add

    def spy_chunks(*args, **kwargs):
        for raw in chunks(*args, **kwargs):
            events.append(("read", len(raw.lines)))
            yield raw

    def spy_add(self, task, split, prediction, decision):
        events.append(("write", split.n_rows))
        return add(self, task, split, prediction, decision)

    monkeypatch.setattr(streaming, "raw_chunks", spy_chunks)
    monkeypatch.setattr(streaming.AppendedFiles, "add", spy_add)
    predict(tmp_path, f"run={run_dir}", "chunk_rows=8", f"output={tmp_path / 'out'}")
    assert events == [("read", 8), ("write", 8)] * 3 + [("read", 6), ("write", 6)]  # 30 rows


def test_rows_are_rechunked_to_the_chunk_size() -> None:
    batches = [
        (np.arange(n) + 10 * i, [[str(x)] for x in range(n)]) for i, n in enumerate([5, 3, 10])
    ]
    out = list(streaming._rechunk(iter(batches), 4))
    assert [len(rows) for _, rows in out] == [4, 4, 4, 4, 2]
    assert np.concatenate([lines for lines, _ in out]).tolist() == (
        [*range(5), *range(10, 13), *range(20, 30)]
    )


@pytest.fixture(scope="module")
def tasks(base: Path) -> dict:
    """A classification task and a headerless one with ids, as finetune.json describes them."""
    entry = {"kind": "classification", "labels": ["neg", "pos"], "max_seq_len": 16}
    with_ids = {**entry, "columns": ["id", "text", "label"], "id_column": "id"}
    return {"plain": _task("t", entry, {}), "ids": _task("t", with_ids, {})}


BAD = {  # name -> (task, file bytes)
    "missing column": ("plain", b"txt\n100 101\n"),
    "a label column": ("plain", b"label\ttext\npos\t100 101\n"),
    "not UTF-8": ("plain", b"text\n100 101\n100 \xff101\n"),
    "an empty row": ("plain", b"text\n100\n\n101\n"),
    "empty text": ("ids", b"a\t100\nb\t \n"),
    "no rows": ("plain", b"text\n"),
    "too many fields": ("plain", b"text\n100\t101\n"),
    "an id twice in a chunk": ("ids", b"a\t100\nb\t101\na\t102\n"),
    "an id twice across chunks": ("ids", b"a\t100\nb\t101\nc\t103\nd\t104\nb\t102\n"),
    "an empty id": ("ids", b"a\t100\n \t101\n"),
    "a row without its id": ("ids", b"100\n"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_file_gets_the_error_fine_tuning_gives_it(
    tmp_path: Path, base: Path, tasks: dict, name: str
) -> None:
    which, content = BAD[name]
    task = tasks[which]
    path = tmp_path / "test.csv"
    path.write_bytes(content)
    encoder = TextEncoder(load_tokenizer(base))
    with pytest.raises(InputError) as fine_tuning:
        read_split(task.cfg, task.kind, path, encoder, "none", None)
    with pytest.raises(InputError) as predicting:
        list(streaming.raw_chunks(task, path, encoder, chunk_rows=2))
    assert str(predicting.value) == str(fine_tuning.value)


def test_an_output_folder_is_replaced_only_when_it_holds_predictions(
    tmp_path: Path, runs: dict
) -> None:
    run_dir, _ = runs["classification"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"mine: exists and is not a folder of predictions"):
        predict(tmp_path, f"run={run_dir}", f"output={mine}")
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces the first's predictions
        predict(tmp_path, f"run={run_dir}", f"output={out}")
    assert sorted(p.name for p in out.iterdir()) == ["predict.json", "t"]


def test_make_predict_and_the_command_line(tmp_path: Path, runs: dict) -> None:
    """`make predict ARGS=...` with its defaults (the latest run, its test file), and
    `python -m finetune.predict` as the README shows it, in subprocesses; a bad file is one
    line."""
    run_dir, _ = runs["classification"]
    outputs = tmp_path / "outputs"
    (outputs / "finetune").mkdir(parents=True)
    (outputs / "finetune" / "latest").symlink_to(run_dir, target_is_directory=True)
    venv = Path(sys.prefix)
    made = subprocess.run(
        ["make", "-s", "-o", f"{venv}/.installed", f"VENV={venv}", "predict",
         f"ARGS=paths.output_dir={outputs} runtime=cpu runtime.precision=fp32"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (out,) = run_dir.glob("predict-*")
    same_bytes(out / "t" / "submission.csv", run_dir / "predictions" / "t" / "submission.csv")
    record = json.loads(next((outputs / "predict").glob("*/record.json")).read_text())
    assert record["kind"] == "predict" and record["metrics"]["rows"] == 30
    assert record["metrics"]["rows_per_s"] > 0

    test_b = tmp_path / "test_b.csv"
    test_b.write_text("text\n" + "".join(f"{t}\n" for _, t in classification_rows(12, 9)))
    done = run_module(
        "finetune.predict", f"run={run_dir}", f"inputs=[{test_b}]", f"output={tmp_path / 'b'}",
        f"paths.output_dir={outputs}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "b" / "t" / "submission.csv").read_text().splitlines()) == 13

    bad = tmp_path / "labelled.csv"
    bad.write_text("label\ttext\npos\t100 101\n")
    failed = run_module(
        "finetune.predict", f"run={run_dir}", f"inputs=[{bad}]", f"paths.output_dir={outputs}"
    )
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {bad}:1: the test file has a 'label' column")
    )


def test_the_log_names_every_output(tmp_path: Path, runs: dict, caplog) -> None:
    run_dir, _ = runs["multi_label"]
    caplog.set_level(logging.INFO, logger="finetune.predict")
    predict(tmp_path, f"run={run_dir}", f"output={tmp_path / 'out'}")
    assert f"probabilities: {tmp_path / 'out' / 't' / 'probabilities.csv'}" in caplog.text
