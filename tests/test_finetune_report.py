"""The honest-evaluation report: every mode runs on the embedded tasks, and the verdict says
plainly when pretraining does not beat training from scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM

from finetune.report import ReportConfig, overrides_for, render, run
from ptm.config import PathsConfig, from_conf
from ptm.data.idtext import SourceStats, iter_text_chunks, parse_id_lines
from ptm.data.tokenizer import build_tokenizer, save_tokenizer, vocab_from_counts
from tests.conftest import compose_config


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


def test_report_runs_every_mode_and_writes_the_table(tmp_path: Path, embedded_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "embedded").symlink_to(embedded_dir, target_is_directory=True)
    cfg = ReportConfig(
        paths=from_conf(
            PathsConfig, "pretrain", "paths", data_dir=data, output_dir=tmp_path / "out"
        ),
        model_path=embedded_model(tmp_path / "model", embedded_dir),
        seeds=[1, 2],
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
    assert (tmp_path / "report" / "sentiment" / "scratch" / "seed-2" / "metrics.json").is_file()


def test_the_verdict_says_when_pretraining_does_not_help() -> None:
    cfg = ReportConfig(
        paths=from_conf(PathsConfig, "pretrain", "paths"), model_path=Path("m"), seeds=[1, 2, 3]
    )

    def rows(task, kind, pre, scratch):
        return [
            {"task": task, "kind": kind, "mode": mode, "seed": s, "dev": v, "test": v, "seconds": 1}
            for mode, values in (("pretrained", pre), ("scratch", scratch))
            for s, v in zip(cfg.seeds, values, strict=True)
        ]

    text = render(
        rows("sentiment", "classification", [0.90, 0.91, 0.92], [0.85, 0.86, 0.87])
        + rows("reviews", "classification", [0.90, 0.91, 0.92], [0.85, 0.86, 0.93])
        + rows("names", "tokens", [0.50, 0.52, 0.51], [0.60, 0.61, 0.62]),
        cfg,
    )
    assert "- sentiment: pretraining helps: test macro-F1 0.9100 against 0.8600" in text
    assert "ahead in 3 of 3 seeds), beyond the spread of the seeds" in text
    assert "- reviews: **pretraining does not clearly beat training from scratch**" in text
    assert "ahead in 2 of 3 seeds) — within the spread of the seeds" in text
    assert "- names: **pretraining does not beat training from scratch**" in text
    assert "| names | entity F1 | same model from scratch | 0.6100 | 0.6000–0.6200 |" in text


def test_task_specific_overrides_reach_only_their_task() -> None:
    overrides = ["train.lr=1e-4", "tasks.names.max_seq_len=64", "+tasks.sentiment.weight=2"]
    assert overrides_for("sentiment", overrides) == ["train.lr=1e-4", "+tasks.sentiment.weight=2"]
    assert overrides_for("names", overrides) == ["train.lr=1e-4", "tasks.names.max_seq_len=64"]
