"""The report's text and plot (`finetune.report_render`), from the rows of its runs: the table,
the verdict that says plainly when pretraining does not beat training from scratch, failed runs,
the label-efficiency curve, and the names each kind gives its metric and baseline."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml

from finetune.report import ReportConfig
from finetune.report_render import plot_curves, render, task_defaults
from ptm.config import CONF_DIR, from_conf


def report_config(**values) -> ReportConfig:
    """`make report`'s settings (conf/report.yaml), ``values`` changed."""
    return from_conf(ReportConfig, "report", **values)


def test_the_verdict_says_when_pretraining_does_not_help() -> None:
    cfg = report_config(model_path=Path("m"), seeds=[1, 2, 3], budgets=[None])

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
    # What fine-tuning ran, beyond the overrides: each task's own defaults (none for "reviews").
    names_lr = yaml.safe_load((CONF_DIR / "task_defaults" / "names.yaml").read_text())["train"]
    assert f"; names `train.lr={names_lr['lr']}`." in text
    assert "the tasks' own defaults: sentiment `model.dropout=" in text and "reviews `" not in text
    # A default the overrides replace is not listed as one; the baselines fine-tune nothing.
    assert task_defaults(["sentiment", "names"], ["model.dropout=null"]) == (
        f"names `train.lr={names_lr['lr']}`"
    )
    tfidf_only = [
        {"task": "sentiment", "kind": "classification", "mode": "tfidf", "seed": s, "dev": 0.8,
         "test": 0.8, "seconds": 1}
        for s in cfg.seeds
    ]  # fmt: skip
    assert "own defaults" not in render(tfidf_only, cfg)


def _row(task, kind, mode, seed, value, budget=None, rows=1000, status="ok"):
    out = {"task": task, "kind": kind, "mode": mode, "seed": seed, "budget": budget, "rows": rows}
    if status != "ok":
        return {**out, "status": "failed", "error": f"step 100: collapsed (seed {seed})"}
    return {**out, "status": "ok", "dev": value, "test": value, "seconds": 2}


def test_failed_runs_are_counted_in_their_cell_and_listed() -> None:
    cfg = report_config(
        model_path=Path("m"),
        seeds=[1, 2, 3],
        budgets=[100, None],
    )
    results = [
        _row("sentiment", "classification", mode, seed, base + 0.01 * seed, budget, rows)
        for budget, rows in ((100, 100), (None, 13875))
        for mode, base in (("pretrained", 0.80), ("scratch", 0.70), ("tfidf", 0.75))
        for seed in cfg.seeds
    ]
    results[13] = _row("sentiment", "classification", "scratch", 2, 0, None, 13875, "failed")
    for i in (3, 4, 5):  # every from-scratch run of the 100-row budget
        results[i] = _row("sentiment", "classification", "scratch", i - 2, 0, 100, 100, "failed")
    text = render(results, cfg, Path("out") / "label_efficiency.png")
    assert "| sentiment | macro-F1 | same model from scratch | 0.7200 | 0.7100–0.7300 |" in text
    assert "| 0.7100, 0.7300 | 2 | 1 of 3 |" in text  # per-seed values of the runs that finished
    assert "| sentiment | macro-F1 | pretrained -> fine-tuned | 0.8200 |" in text
    assert "ahead in 2 of 2 seeds), beyond the spread of the seeds" in text  # seed 2 left out
    assert "## Label efficiency" in text
    assert (
        "| sentiment | 100 | 0.8200 (0.8100–0.8300) | —, 3 of 3 failed | 0.7700 (0.7600–0.7800) "
        "| — |" in text
    )
    assert (
        "| sentiment | all (13,875) | 0.8200 (0.8100–0.8300) | 0.7200 (0.7100–0.7300), 1 of 3 "
        "failed | 0.7700 (0.7600–0.7800) | +0.1000 |" in text
    )
    assert "![test score by labelled training rows](label_efficiency.png)" in text
    assert text.count("- sentiment, ") == 4 and "seed 2: step 100: collapsed (seed 2)" in text


def test_without_matplotlib_the_curve_is_a_table_and_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    results = [
        _row("names", "tokens", mode, seed, 0.5 + 0.01 * seed, budget, rows)
        for budget, rows in ((100, 100), (None, 36023))
        for mode in ("pretrained", "scratch")
        for seed in (1, 2)
    ]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with caplog.at_level(logging.INFO, logger="finetune.report_render"):
        assert plot_curves(results, tmp_path / "curve.png") is None
    assert not (tmp_path / "curve.png").exists()
    assert [r.message for r in caplog.records] == [
        "report: matplotlib is not installed, so the label-efficiency curve is a table only"
    ]
    assert plot_curves(results[:4], tmp_path / "curve.png") is None  # one budget: no curve


def test_each_kind_names_its_metric_and_its_baseline_and_the_baselines_their_seeds() -> None:
    cfg = report_config(model_path=Path("m"), seeds=[1], budgets=[None])
    results = [
        _row(task, kind, mode, 1, 0.5)
        for task, kind in (("ml", "multi_label"), ("names", "tokens"), ("pairs", "pair"))
        for mode in ("pretrained", "tfidf")
    ]
    text = render(results, cfg)
    assert "| ml | macro-F1 | TF-IDF + one-vs-rest logistic regression | 0.5000 |" in text
    assert "| names | entity F1 | window features + logistic regression | 0.5000 |" in text
    assert "| pairs | macro-F1 | classical baseline | 0.5000 |" in text  # pair has none
    assert (
        "The one-vs-rest TF-IDF model (lbfgs) is deterministic, so its seeds agree; the window "
        "tagger (SGD) is seeded.\n" in text
    )
    no_baseline = render([r for r in results if r["mode"] != "tfidf"], cfg)
    assert "deterministic" not in no_baseline and "seeded" not in no_baseline
