"""The Tianchi Chinese multi-task competition end to end, on files in exactly its layout.

``tests/fixtures/tianchi_multitask/`` holds hand-written rows of real Chinese text — OCNLI
sentence pairs (30 train, 9 test), OCEMOTION posts (35 / 10, all 7 emotions) and TNEWS titles
(30 / 10, six of the 15 category codes) — tab-separated with no header, test files without the
label and with their ids out of order, so a submission that sorts or renumbers shows. The
encoder is a tiny random BERT with a WordPiece vocabulary of those characters, laid out like
chinese-bert-wwm-ext's (``[PAD]``, ``[unused*]``, then the specials, then one token per
character and ``##`` pieces): the raw-text route of `ptm.tasks.tables.TextEncoder`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertForMaskedLM

from finetune.config import build_config
from finetune.train import run
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError
from ptm.tasks.kinds import load_task
from tests.conftest import compose_config
from tests.finetune_helpers import finetune_overrides, tiny_config

DATA = Path(__file__).parent / "fixtures" / "tianchi_multitask"
FILES = {  # task -> (train, test), the competition's names with the 1128 / _a suffixes cut short
    "ocnli": ("OCNLI_train.csv", "OCNLI_a.csv"),
    "ocemotion": ("OCEMOTION_train.csv", "OCEMOTION_a.csv"),
    "tnews": ("TNEWS_train.csv", "TNEWS_a.csv"),
}
SUBMISSIONS = {
    "ocnli": "ocnli_predict.json",
    "ocemotion": "ocemotion_predict.json",
    "tnews": "tnews_predict.json",
}


def rows_of(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def wordpiece_model_dir(folder: Path, max_positions: int = 128) -> Path:
    """A random tiny BERT whose ``vocab.txt`` is a Chinese WordPiece vocabulary of every
    character the fixture files use (and ``##`` forms of a few), as the Chinese releases lay it
    out; no tokenizer.json, so ptm reads the vocab.txt itself as it does a converted release."""
    chars = sorted({c for p in DATA.glob("*.csv") for c in p.read_text("utf-8") if not c.isspace()})
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 4)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [*chars, *(f"##{c}" for c in chars[:20])]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    BertForMaskedLM(tiny_config(len(vocab), max_positions, pad_id=0)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wordpiece_model_dir(tmp_path_factory.mktemp("wwm") / "model")


def file_overrides(data: Path = DATA) -> list[str]:
    out = []
    for task, (train, test) in FILES.items():
        out += [f"tasks.{task}.train={data / train}", f"tasks.{task}.test={data / test}"]
    return out


def preset_config(tmp_path: Path, model_dir: Path, *extra: str):
    """`task=tianchi_multitask` on the fixture files, shrunk to a seconds-long CPU run."""
    overrides = [
        "task=tianchi_multitask" if o == "~task" else o
        for o in finetune_overrides(tmp_path, model_dir, *file_overrides(), *extra)
    ]
    data = OmegaConf.to_container(compose_config("finetune", overrides), resolve=True)
    data["run_dir"] = str(tmp_path / "run")
    return build_config(data)


def test_headerless_files_are_read_by_position_with_their_ids(
    tmp_path: Path, model_dir: Path
) -> None:
    cfg = preset_config(tmp_path, model_dir)
    tokenizer = load_tokenizer(model_dir)
    tasks = {t.name: load_task(t, tokenizer) for t in cfg.tasks}
    assert [t.kind for t in cfg.tasks] == ["pair", "classification", "classification"]
    assert tasks["ocnli"].labels == ["0", "1", "2"]
    assert tasks["ocemotion"].labels == sorted(
        ["sadness", "happiness", "disgust", "anger", "like", "surprise", "fear"]
    )
    assert tasks["tnews"].labels == ["102", "103", "104", "107", "108", "109"]
    for name, (train, test) in FILES.items():
        splits = tasks[name].splits
        assert splits["train"].n_rows + splits["dev"].n_rows == len(rows_of(DATA / train))
        test_rows = rows_of(DATA / test)
        assert splits["test"].ids.tolist() == [r[0] for r in test_rows]  # file order, as written
        assert splits["test"].lines.tolist() == list(range(1, len(test_rows) + 1))
        assert splits["test"].stats["unknown_tokens"] == 0
    # A pair is [CLS] sentence1 [SEP] sentence2 [SEP], one token per Chinese character.
    first = tokenizer.convert_ids_to_tokens(tasks["ocnli"].splits["test"].input_ids[0])
    _, s1, s2 = rows_of(DATA / "OCNLI_a.csv")[0]
    assert first == ["[CLS]", *s1, "[SEP]", *s2, "[SEP]"]
    assert tasks["ocnli"].splits["test"].segment_b[0] == len(s1) + 2
    # A smoke run's row limit spreads over a headerless file like any other, ids following.
    few = load_task(cfg.tasks[2], tokenizer, limit=4).splits["test"]
    assert few.lines.tolist() == [1, 4, 7, 10]
    assert few.ids.tolist() == [rows_of(DATA / "TNEWS_a.csv")[i - 1][0] for i in (1, 4, 7, 10)]


def test_the_competition_run_scores_each_task_and_zips_the_submission(
    tmp_path: Path, model_dir: Path
) -> None:
    metrics = run(preset_config(tmp_path, model_dir))
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "metrics.json").read_text())["mean"] == metrics["mean"]

    # Per-task macro-F1, their mean (what the competition ranks) and selection on that mean.
    f1 = {name: metrics["tasks"][name]["dev"]["macro_f1"] for name in FILES}
    assert all(metrics["tasks"][name]["metric"] == "macro_f1" for name in FILES)
    assert metrics["mean"]["of"] == dict.fromkeys(FILES, "macro_f1")
    assert metrics["mean"]["dev"] == pytest.approx(np.mean(list(f1.values())))
    assert metrics["best"]["dev_score"] == pytest.approx(metrics["mean"]["dev"])
    assert metrics["selected_on"].endswith("(mean)") and "test" not in metrics["mean"]

    # One JSON line per test row, in test order, with the test file's own ids; ptm's CSVs too.
    bundle = Path(metrics["submission_zip"])
    assert bundle == run_dir / "predictions" / "submission.zip"
    with zipfile.ZipFile(bundle) as z:
        assert sorted(z.namelist()) == sorted(SUBMISSIONS.values())
        zipped = {name: z.read(name).decode("utf-8") for name in z.namelist()}
    for name, (_, test) in FILES.items():
        path = run_dir / "predictions" / name / SUBMISSIONS[name]
        assert metrics["tasks"][name]["predictions"]["submission_jsonl"] == str(path)
        text = path.read_text(encoding="utf-8")
        assert zipped[SUBMISSIONS[name]] == text
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["id"] for line in lines] == [r[0] for r in rows_of(DATA / test)]
        assert all(list(line) == ["id", "label"] for line in lines)
        assert {line["label"] for line in lines} <= set(metrics["tasks"][name]["labels"])
        csv_rows = rows_of(run_dir / "predictions" / name / "submission.csv")
        assert csv_rows[0] == ["label"] and [r[0] for r in csv_rows[1:]] == [
            line["label"] for line in lines
        ]
    meta = json.loads((run_dir / "model" / "finetune.json").read_text())
    assert meta["tasks"]["ocnli"]["columns"] == ["id", "sentence1", "sentence2", "label"]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


EMOTION_TRAIN = (DATA / "OCEMOTION_train.csv").read_text(encoding="utf-8")


def emotion_task(tmp_path: Path, model_dir: Path, train: str, test: str | None = None, **files):
    """The preset's OCEMOTION task over the given file texts (``dev`` as a keyword)."""
    cfg = preset_config(tmp_path, model_dir)
    task = next(t for t in cfg.tasks if t.name == "ocemotion")
    paths = {"train": write(tmp_path / "d" / "train.csv", train)}
    if test is not None:
        paths["test"] = write(tmp_path / "d" / "test.csv", test)
    for key, text in files.items():
        paths[key] = write(tmp_path / "d" / f"{key}.csv", text)
    return dataclasses.replace(task, **{"test": None, **paths})


@pytest.mark.parametrize(
    ("split", "text", "message", "line"),
    [
        (  # a row whose text held a tab, or that lost its label
            "train",
            EMOTION_TRAIN + "35\t终于到家了\t真好\thappiness\n",
            r"train.csv:36: 4 tab-separated fields where the task's columns are id, text, label",
            36,
        ),
        (
            "train",
            "0\t外婆走了\n" + EMOTION_TRAIN,
            r"train.csv:1: the rows have no 'label' column: their fields are id, text",
            1,
        ),
        ("test", "0\t下雨了\n1\t天晴了\n0\t又下雨了\n", r"test.csv:3: id '0' repeats line 1", 3),
        ("test", "0\t下雨了\t\tsadness\n", r"test.csv:1: 4 tab-separated fields", 1),
        (
            "test",
            "0\t下雨了\tsadness\n",
            r"test.csv:1: the test file has a 'label' column",
            1,
        ),
        (
            "dev",
            "0\t外婆走了\tsadness\n1\t好开心\tjoy\n",
            r"dev.csv:2: label 'joy' does not occur in the training data",
            2,
        ),
    ],
)
def test_bad_competition_files_are_one_line_naming_file_line_and_fix(
    tmp_path: Path, model_dir: Path, split: str, text: str, message: str, line: int
) -> None:
    files = {"dev": text} if split == "dev" else {}
    train = text if split == "train" else EMOTION_TRAIN
    test = text if split == "test" else None
    cfg = emotion_task(tmp_path, model_dir, train, test, **files)
    with pytest.raises(InputError, match=message) as caught:
        load_task(cfg, load_tokenizer(model_dir))
    assert caught.value.line == line and " — " in str(caught.value)
    assert "\n" not in str(caught.value)


def test_gbk_bytes_name_their_line(tmp_path: Path, model_dir: Path) -> None:
    """The competition's files are UTF-8; a file re-saved as GBK is refused at its first
    Chinese byte, not decoded into other characters."""
    cfg = emotion_task(tmp_path, model_dir, EMOTION_TRAIN)
    write(cfg.train, "0\tok\tsadness\n1\t外婆走了\tsadness\n", encoding="gbk")
    with pytest.raises(InputError, match=r"train.csv:2: not UTF-8 text: byte 0x.. at column 3"):
        load_task(cfg, load_tokenizer(model_dir))


def test_empty_lines_are_skipped_counted_and_logged(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = EMOTION_TRAIN.splitlines(keepends=True)
    train = "\n" + "".join(lines[:10]) + "\n\n" + "".join(lines[10:]) + "\n"
    test = "3\t下雨了\n\n9\t天晴了\n"
    cfg = emotion_task(tmp_path, model_dir, train, test)
    with caplog.at_level(logging.WARNING, logger="ptm.tasks.loading"):
        task = load_task(cfg, load_tokenizer(model_dir))
    splits = task.splits
    assert splits["train"].n_rows + splits["dev"].n_rows == 35  # no row lost
    assert splits["test"].ids.tolist() == ["3", "9"] and splits["test"].lines.tolist() == [1, 3]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("skipped 4 empty line(s)" in w and "train.csv" in w for w in warnings)
    assert any("skipped 1 empty line(s)" in w and "test.csv" in w for w in warnings)


def test_a_one_column_test_file_keeps_refusing_an_empty_line(tmp_path: Path, model_dir: Path):
    """In a text-only table an empty line may be an empty document: dropping it would shift
    every later answer of the submission, so it stays an error (headed Tianchi news files)."""
    headed = "label\ttext\n" + "".join(
        f"{r[2]}\t{r[1]}\n" for r in rows_of(DATA / "OCEMOTION_train.csv")
    )
    cfg = dataclasses.replace(
        emotion_task(tmp_path, model_dir, headed, "text\n下雨了\n\n天晴了\n"),
        columns=None,
        id_column=None,
        submission_format="csv",
        submission_name=None,
    )
    with pytest.raises(InputError, match=r"test.csv:3: an empty row"):
        load_task(cfg, load_tokenizer(model_dir))


def test_the_config_refuses_an_unusable_submission_setup(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(InputError, match=r"several tasks write .*ocnli_predict.json"):
        preset_config(tmp_path, model_dir, "tasks.tnews.submission_name=ocnli_predict.json")
    with pytest.raises(InputError, match=r"submission_format=jsonl .* set the task's id_column"):
        preset_config(tmp_path, model_dir, "tasks.tnews.id_column=null")
    with pytest.raises(InputError, match=r"columns=\['id', 'text'\] lack \['label'\]"):
        preset_config(tmp_path, model_dir, "tasks.tnews.columns=[id,text]")
