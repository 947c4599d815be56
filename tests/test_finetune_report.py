"""The honest-evaluation report: every mode runs on the embedded tasks, and the verdict says
plainly when pretraining does not beat training from scratch."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM

from finetune import report
from finetune.report import ReportConfig, overrides_for, run
from ptm.config import from_conf
from ptm.data.idtext import SourceStats, iter_text_chunks, parse_id_lines
from ptm.data.tokenizer import build_tokenizer, save_tokenizer, vocab_from_counts
from ptm.errors import DivergenceError
from ptm.tasks.loading import label_budget
from tests.conftest import compose_config
from tests.finetune_helpers import tiny_model_dir, write_multilabel


def embedded_model(folder: Path, embedded: Path) -> Path:
    """A random tiny BERT whose vocabulary is the embedded reviews' and sentences' IDs."""
    ids = []
    for path in (embedded / "sentiment" / "train.csv", embedded / "names" / "train.csv"):
        for line, chunk in iter_text_chunks(path, SourceStats(path)):
            ids.append(parse_id_lines(chunk, path, line).ids)
    uniq, counts = np.unique(np.concatenate(ids), return_counts=True)
    tokenizer = build_tokenizer(vocab_from_counts(uniq, counts), 64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder


def report_config(tmp_path: Path | None = None, embedded_dir: Path | None = None, **values):
    """`make report`'s settings (conf/report.yaml), ``values`` changed; with ``tmp_path`` and
    ``embedded_dir``, outputs under ``tmp_path`` and the embedded corpus as its data."""
    overrides: tuple[str, ...] = ()
    if tmp_path is not None and embedded_dir is not None:
        data = tmp_path / "data"
        data.mkdir()
        (data / "embedded").symlink_to(embedded_dir, target_is_directory=True)
        overrides = (f"paths.data_dir={data}", f"paths.output_dir={tmp_path / 'out'}")
    return from_conf(ReportConfig, "report", overrides=overrides, **values)


def test_report_runs_every_mode_and_writes_the_table(tmp_path: Path, embedded_dir: Path) -> None:
    cfg = report_config(
        tmp_path,
        embedded_dir,
        model_path=embedded_model(tmp_path / "model", embedded_dir),
        seeds=[1, 2],
        budgets=[None],
        finetune_overrides=[
            "+experiment=finetune_tiny",
            "train.limit_examples=200",
            "tasks.sentiment.max_seq_len=64",
            "tasks.names.max_seq_len=64",
        ],
        run_dir=tmp_path / "report",
    )

    def compose(overrides: list[str]) -> dict:
        return OmegaConf.to_container(compose_config("finetune", overrides), resolve=True)

    out = run(cfg, compose)
    results = out["results"]
    assert len(results) == 2 * 3 * 2
    assert all(0.0 <= r["test"] <= 1.0 and 0.0 <= r["dev"] <= 1.0 for r in results)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| sentiment | macro-F1 | pretrained -> fine-tuned |" in text
    assert "| names | entity F1 | window features + logistic regression |" in text
    assert "| sentiment | macro-F1 | TF-IDF + logistic regression |" in text
    assert text.count("\n- sentiment: ") == 1 and text.count("\n- names: ") == 1
    tfidf = [r["test"] for r in results if r["mode"] == "tfidf" and r["task"] == "sentiment"]
    assert min(tfidf) > 0.6  # the classical baseline does learn reviews from 200 rows
    assert (
        tmp_path / "report" / "sentiment" / "all" / "scratch" / "seed-2" / "metrics.json"
    ).is_file()
    record = json.loads((tmp_path / "report" / "record.json").read_text())
    assert record["kind"] == "report" and record["per_seed"] == json.loads(json.dumps(results))
    assert record["metrics"]["tasks"]["names"]["metric_label"] == "entity F1"


def test_a_multi_label_report_runs_every_mode_and_names_the_kind_s_baseline(
    tmp_path: Path,
) -> None:
    """`python -m finetune.report tasks=[multilabel]`: both fine-tunings and the kind's own
    classical baseline (one-vs-rest, threshold chosen on dev), on every row and on a budget."""
    files = write_multilabel(tmp_path / "ml")
    cfg = report_config(
        model_path=tiny_model_dir(tmp_path / "model"),
        tasks=["multilabel"],
        seeds=[1],
        budgets=[40, None],
        budget_steps=4,
        budget_evals=1,
        finetune_overrides=[
            "+experiment=finetune_tiny",
            *(f"tasks.multilabel.{split}={path}" for split, path in files.items()),
            "tasks.multilabel.max_seq_len=64",
        ],
        paths={"root": ".", "data_dir": str(tmp_path), "output_dir": str(tmp_path / "out")},
        run_dir=tmp_path / "report",
    )

    def compose(overrides: list[str]) -> dict:
        return OmegaConf.to_container(compose_config("finetune", overrides), resolve=True)

    results = run(cfg, compose)["results"]
    assert [(r["mode"], r["budget"], r["status"]) for r in results] == [
        (mode, budget, "ok") for budget in (40, None) for mode in cfg.modes
    ]
    assert {r["rows"] for r in results} == {40, 96}  # finetune_tiny's limit_examples
    assert all(0.0 <= r[s] <= 1.0 for r in results for s in ("dev", "test"))
    baseline = next(r for r in results if r["mode"] == "tfidf" and r["budget"] is None)
    assert baseline["test"] > 0.5  # the marker IDs are words TF-IDF sees
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| multilabel | macro-F1 | TF-IDF + one-vs-rest logistic regression |" in text
    assert "| multilabel | macro-F1 | pretrained -> fine-tuned |" in text
    assert "The one-vs-rest TF-IDF model (lbfgs) is deterministic" in text
    assert text.count("\n- multilabel: ") == 1 and "## Label efficiency" in text


def test_task_specific_overrides_reach_only_their_task() -> None:
    overrides = ["train.lr=1e-4", "tasks.names.max_seq_len=64", "+tasks.sentiment.weight=2"]
    assert overrides_for("sentiment", overrides) == ["train.lr=1e-4", "+tasks.sentiment.weight=2"]
    assert overrides_for("names", overrides) == ["train.lr=1e-4", "tasks.names.max_seq_len=64"]


# ----------------------------------------------------------------------------- label budgets


def test_label_budgets_are_stratified_nested_and_fixed_by_the_seed() -> None:
    strata = np.array([0] * 900 + [1] * 90 + [2] * 10)
    small, large = label_budget(strata, 1000, 100, 7), label_budget(strata, 1000, 300, 7)
    assert len(small) == 100 and len(large) == 300 and len(set(large)) == 300
    assert set(small) <= set(large)  # nested: a seed's 100 rows are among its 300
    assert np.array_equal(small, label_budget(strata, 1000, 100, 7))
    assert not np.array_equal(small, label_budget(strata, 1000, 100, 8))
    assert np.bincount(strata[small]).tolist() == [90, 9, 1]  # each class its share
    assert np.bincount(strata[label_budget(strata, 1000, 3, 1)]).tolist() == [1, 1, 1]
    renamed = np.array([5, 3, 9])[strata]  # only the partition matters, not the numbering
    assert np.array_equal(small, label_budget(renamed, 1000, 100, 7))
    assert np.array_equal(label_budget(None, 50, 80, 1), np.arange(50))  # more than there are


# ----------------------------------------------------------------------------- failures, curves


def test_a_report_survives_a_failing_run_and_draws_the_curve(
    tmp_path: Path, embedded_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = report_config(
        tmp_path,
        embedded_dir,
        model_path=embedded_model(tmp_path / "model", embedded_dir),
        tasks=["sentiment"],
        seeds=[1, 2],
        finetune_overrides=[
            "+experiment=finetune_tiny",
            "train.limit_examples=120",
            "tasks.sentiment.max_seq_len=32",
        ],
        budgets=[40, None],
        budget_steps=6,
        budget_evals=2,
        run_dir=tmp_path / "report",
    )
    real = report.finetune

    def finetune_failing_once(ft):
        if ft.model.init == "scratch" and ft.train.seed == 2 and ft.tasks[0].train_rows is None:
            raise DivergenceError("step 3: every prediction was one class — lower train.lr")
        return real(ft)

    monkeypatch.setattr(report, "finetune", finetune_failing_once)

    def compose(overrides: list[str]) -> dict:
        return OmegaConf.to_container(compose_config("finetune", overrides), resolve=True)

    results = run(cfg, compose)["results"]
    assert len(results) == 2 * 3 * 2
    failed = [r for r in results if r["status"] == "failed"]
    assert [(r["mode"], r["seed"], r["budget"]) for r in failed] == [("scratch", 2, None)]
    assert failed[0]["error"] == "step 3: every prediction was one class — lower train.lr"
    assert {r["rows"] for r in results} == {40, 120}
    budget_run = tmp_path / "report" / "sentiment" / "rows-40" / "pretrained" / "seed-1"
    run_json = json.loads((budget_run / "run.json").read_text())
    assert run_json["config"]["tasks"][0]["train_rows"] == 40
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| 1 of 2 |" in text and "## Failed runs" in text and "## Label efficiency" in text
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == results
    png = tmp_path / "report" / "label_efficiency.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "(label_efficiency.png)" in text
    else:
        assert not png.exists() and "label_efficiency.png" not in text


def test_a_report_resumes_reusing_runs_whose_inputs_did_not_change(
    tmp_path: Path, embedded_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_model = embedded_model(tmp_path / "model-a", embedded_dir)
    other_model = tmp_path / "model-b"  # the same config and vocabulary, other weights
    shutil.copytree(first_model, other_model)
    weights = load_file(other_model / "model.safetensors")
    weights = {k: v + 0.01 for k, v in weights.items()}
    save_file(weights, other_model / "model.safetensors", metadata={"format": "pt"})
    trained: list[tuple[str, int]] = []
    real = report.finetune

    def counting_finetune(ft):
        trained.append((ft.model.init, ft.train.seed))
        return real(ft)

    monkeypatch.setattr(report, "finetune", counting_finetune)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "embedded").symlink_to(embedded_dir, target_is_directory=True)
    paths = {"root": ".", "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "out")}

    def compose(overrides: list[str]) -> dict:
        return OmegaConf.to_container(compose_config("finetune", overrides), resolve=True)

    def report_run(model: Path, modes: list[str]) -> list[dict]:
        cfg = report_config(
            model_path=model,
            tasks=["sentiment"],
            seeds=[1, 2],
            modes=modes,
            budgets=[None],
            finetune_overrides=[
                "+experiment=finetune_tiny",
                "train.limit_examples=60",
                "tasks.sentiment.max_seq_len=32",
            ],
            paths=paths,
            run_dir=tmp_path / "report",
        )
        return run(cfg, compose)["results"]

    early = report_run(first_model, ["scratch", "tfidf"])  # while the model pretrains
    assert trained == [("scratch", 1), ("scratch", 2)]
    trained.clear()
    full = report_run(other_model, ["pretrained", "scratch", "tfidf"])
    assert trained == [("pretrained", 1), ("pretrained", 2)]  # scratch and baseline reused
    assert [r for r in full if r["mode"] != "pretrained"] == early
    trained.clear()
    assert report_run(other_model, ["pretrained", "scratch", "tfidf"]) == full
    assert trained == []
    weights = {k: v + 0.01 for k, v in weights.items()}  # the pretrained model changed
    save_file(weights, other_model / "model.safetensors", metadata={"format": "pt"})
    report_run(other_model, ["pretrained", "scratch", "tfidf"])
    assert trained == [("pretrained", 1), ("pretrained", 2)]


def test_the_fingerprint_follows_the_data_and_model_files_not_the_output_folders(
    tmp_path: Path,
) -> None:
    from finetune.report import fingerprint

    model, train = tmp_path / "model", tmp_path / "train.csv"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    train.write_text("label\ttext\n1\t2 3\n")
    data = {"model": {"path": str(model)}, "tasks": [{"train": str(train)}], "run_dir": "a"}
    before = {mode: fingerprint(data, mode) for mode in ("pretrained", "scratch", "tfidf")}
    moved = {**data, "run_dir": "b", "paths": {"output_dir": "elsewhere"}}
    assert {mode: fingerprint(moved, mode) for mode in before} == before
    (model / "model.safetensors").write_bytes(b"other weights")
    assert fingerprint(data, "pretrained") != before["pretrained"]
    assert fingerprint(data, "scratch") == before["scratch"]  # random weights either way
    train.write_text("label\ttext\n0\t2 3\n")
    assert fingerprint(data, "tfidf") != before["tfidf"]
    assert fingerprint(data, "scratch") != before["scratch"]


def test_a_stopped_run_of_the_report_continues_only_with_the_same_inputs(tmp_path: Path) -> None:
    """A report run left with checkpoints (stopped) resumes when its folder's fingerprint is the
    run's; with other inputs the folder is an older run's, set aside before it starts over."""
    from finetune.report import FINGERPRINT, _continued

    folder = tmp_path / "seed-1"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "step-00000010.pt").write_bytes(b"x")
    (folder / FINGERPRINT).write_text("abc\n")

    @dataclasses.dataclass(frozen=True)
    class Run:  # the two fields of a fine-tuning config _continued reads and sets
        run_dir: Path
        resume: Path | None = None

    ft = Run(folder)
    assert _continued(ft, "abc").resume == folder
    assert _continued(ft, "other") is ft and not (folder / "checkpoints").exists()
    assert (folder / FINGERPRINT).read_text() == "other\n"
