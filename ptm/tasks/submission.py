"""Submission files, written the same way for every kind of task from one answer per test row.

Always ``submission.csv``: the answers in one tab-separated column headed by the task's label
column, test order (the Tianchi news competition's format). A task with ``submission_format:
jsonl`` also writes the JSON lines the Tianchi multi-task competition takes — ``{"id": "0",
"label": "sadness"}`` per test row, in test order, ids as the test file wrote them — under its
``submission_name``; after the last task the run zips every such file into one
``submission.zip`` (`zip_submissions`), the archive the competition uploads.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np

from ptm.errors import InputError
from ptm.tasks.splits import TaskData

ZIP_NAME = "submission.zip"


def write_table(path: Path, header: list[str], rows) -> str:
    """A tab-separated table like the inputs, header first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def write_probabilities(path: Path, labels: list[str], lines, probs) -> str:
    """Class probabilities of a split's rows, each with its line in the file it was read from
    (``line``, then a column per class, tab-separated): what folds and ensembles average."""
    rows = (
        [str(int(line)), *(f"{p:.6f}" for p in row)] for line, row in zip(lines, probs, strict=True)
    )
    return write_table(path, ["line", *labels], rows)


def read_probabilities(path: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(lines, probabilities)`` of a file `write_probabilities` wrote, checked against the
    ``labels`` the reader expects (another label set or order would average wrong columns)."""
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header != ["line", *labels]:
            raise InputError(
                path,
                f"columns {header} are not line + the labels {labels}",
                "combine runs of the same task and labels",
                1,
            )
        rows = list(reader)
    for i, row in enumerate(rows):
        if len(row) != len(labels) + 1:
            raise InputError(
                path, f"{len(row)} fields where the header has {len(labels) + 1}",
                "write the file again (run the member again)", i + 2,
            )  # fmt: skip
    try:
        table = np.array(rows, dtype=np.float64).reshape(len(rows), len(labels) + 1)
    except ValueError as e:
        raise InputError(path, f"not numbers ({e})", "write the file again") from e
    return table[:, 0].astype(np.int64), table[:, 1:]


def write_jsonl(path: Path, ids, answers: list[str]) -> str:
    """One ``{"id": ..., "label": ...}`` line per row, in order; text kept readable (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row_id, answer in zip(ids, answers, strict=True):
            f.write(json.dumps({"id": str(row_id), "label": answer}, ensure_ascii=False) + "\n")
    return str(path)


def write_answers(folder: Path, task: TaskData, answers: list[str]) -> dict[str, str]:
    """The task's submission files for ``answers`` (one per test row, test order)."""
    cfg = task.cfg
    rows = [[a] for a in answers]
    out = {"submission": write_table(folder / "submission.csv", [cfg.label_column], rows)}
    if cfg.submission_format == "jsonl":
        ids = task.splits["test"].ids
        out["submission_jsonl"] = write_jsonl(folder / cfg.submission_name, ids, answers)
    return out


def zip_submissions(path: Path, files: list[str]) -> str | None:
    """Every task's JSON-lines submission at the root of one zip (None when there is none); the
    config refuses two tasks naming the same file (`finetune.config.build_config`)."""
    if not files:
        return None
    names = [Path(f).name for f in files]
    assert len(set(names)) == len(names), f"two tasks write the same submission file: {names}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, arcname=Path(f).name)
    return str(path)
