"""The docs' results tables are rendered from records (``make docs``): every generated block in
the repository is what its records render, a record and a table that disagree fail the check,
and each renderer draws its table from a record exactly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from docs.bench_table import BENCHMARKS
from docs.blocks import ROOT
from docs.render import (
    END,
    documents,
    main,
    parse_blocks,
    render_file,
    render_text,
    run,
    write_benchmarks_report,
)
from docs.report_table import png_text
from ptm.errors import InputError


def record(kind: str, metrics: dict, **more) -> dict:
    return {
        "schema": 1,
        "kind": kind,
        "command": f"python -m {kind}",
        "commit": {"sha": "0" * 40, "dirty": False, "changed": []},
        "machine": {"label": "Intel Xeon (AMX) x2, bf16", "torch": "2.13.0+cpu"},
        "started": "2026-12-01T10:00:00Z",
        "finished": "2026-12-01T10:47:12Z",
        "wall_seconds": 2832.0,
        "cpu_seconds": 5501.5,
        "metrics": metrics,
        "config": {},
        **more,
    }


def report_record() -> dict:
    runs = []
    for budget, rows, scores in (
        (100, 100, {"pretrained": [0.70, 0.72, 0.68], "scratch": [0.63, 0.62, 0.65], "tfidf": [0.70] * 3}),
        (None, 13875, {"pretrained": [0.846, 0.845, 0.847], "scratch": [0.812, 0.81, 0.813], "tfidf": [0.858] * 3}),
    ):  # fmt: skip
        for mode, values in scores.items():
            for seed, value in enumerate(values, 1):
                runs.append(
                    {"task": "sentiment", "kind": "classification", "mode": mode, "seed": seed,
                     "budget": budget, "rows": rows, "status": "ok", "dev": value, "test": value}
                )  # fmt: skip
    runs.append({"task": "names", "kind": "tokens", "mode": "pretrained", "seed": 1, "budget": None,
                 "rows": 36023, "status": "ok", "dev": 0.9, "test": 0.898})  # fmt: skip
    runs.append({"task": "names", "kind": "tokens", "mode": "scratch", "seed": 1, "budget": None,
                 "status": "failed", "error": "diverged"})  # fmt: skip
    tasks = {
        "sentiment": {"metric_label": "macro-F1"},
        "names": {"metric_label": "entity F1"},
    }
    return record("report", {"split": "test", "tasks": tasks}, per_seed=runs)


def write(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def doc_with(tmp_path: Path, spec: str) -> Path:
    doc = tmp_path / "docs" / "RESULTS.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"# Results\n\n<!-- generated: {spec} -->\nold text\n{END}\n\nprose stays\n")
    return doc


def block_of(doc: Path, root: Path) -> str:
    render_file(doc, root)
    text = doc.read_text()
    assert text.startswith("# Results\n\n<!-- generated: ") and text.endswith(
        f"{END}\n\nprose stays\n"
    )
    return text.split("-->\n", 1)[1].rsplit(f"\n{END}", 1)[0].strip("\n")


# ----------------------------------------------------------------------------- the repository


def test_every_generated_block_in_the_repository_is_what_its_records_render() -> None:
    assert run(check=True) == [], "run `make docs` (python -m docs.render)"


def test_benchmarks_md_is_rendered_from_benchmarks_json() -> None:
    blocks = parse_blocks((ROOT / "BENCHMARKS.md").read_text(), ROOT / "BENCHMARKS.md")
    assert [(b.name, b.args) for b in blocks] == [
        ("benchmarks", [BENCHMARKS]),
        ("scale", ["results/scale-1x.json", "results/scale-5x.json"]),  # python -m bench.scale
    ]
    assert ROOT / "BENCHMARKS.md" in documents()


def test_every_benchmark_row_is_a_record_of_the_run_that_measured_it() -> None:
    rows = json.loads((ROOT / BENCHMARKS).read_text())
    for name, r in rows.items():
        assert r["schema"] == 1 and r["kind"] == "bench" and r["extra"]["benchmark"] == name
        assert r["command"].startswith("python -m bench 'only=[")
        assert {"metric", "ours", "baseline", "ours_peak_mb", "baseline_peak_mb"} <= set(
            r["metrics"]
        )
        if "legacy" not in r["extra"]:  # written since the benchmark keeps records
            assert r["commit"] is not None and r["config"]["only"]
            assert r["wall_seconds"] > 0 and r["cpu_seconds"] > 0 and r["machine"]["cpu"]
    # The GPU step grid was read off logs, never recorded: it is not a benchmark row.
    assert not [name for name in rows if name.startswith("pretrain on GPU:")]


# ----------------------------------------------------------------------------- a disagreement


def test_a_record_and_a_table_that_disagree_fail_the_check(tmp_path: Path) -> None:
    for name in (BENCHMARKS, "BENCHMARKS.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "results", tmp_path / "results")  # the scale block's records
    doc = tmp_path / "BENCHMARKS.md"
    assert run(check=True, root=tmp_path) == []
    rows = json.loads((tmp_path / BENCHMARKS).read_text())
    first = sorted(rows)[0]
    rows[first]["metrics"]["ours"] *= 2  # the record changes, the table does not
    (tmp_path / BENCHMARKS).write_text(json.dumps(rows))
    assert run(check=True, root=tmp_path) == [str(doc)]
    assert run(check=False, root=tmp_path) == []  # make docs renders it again
    assert run(check=True, root=tmp_path) == []
    text = doc.read_text()
    ratio = re.search(r"\*\*(\d+\.\d)x\*\*", text)
    typed = f"**{float(ratio.group(1)) + 0.1:.1f}x**"  # a number typed in
    doc.write_text(text[: ratio.start()] + typed + text[ratio.end() :])
    assert run(check=True, root=tmp_path) == [str(doc)]


def test_make_docs_check_exits_2_naming_what_is_out_of_date(tmp_path: Path, capsys) -> None:
    assert main(["check=yes"]) == 2
    assert "unknown argument 'check=yes'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- renderers


def test_the_benchmark_table(tmp_path: Path) -> None:
    rows = {
        "b: second": record(
            "bench",
            {"metric": "tokens/s", "ours": 7106.7, "baseline": 3102.9, "ours_peak_mb": 1869.2,
             "baseline_peak_mb": 2268.7},
            extra={"benchmark": "b: second", "setup": "BERT-mini, fp32"},
        ),
        "a: first": record(
            "bench",
            {"metric": "MB/s", "ours": 236.7, "baseline": None, "ours_peak_mb": 949.6,
             "baseline_peak_mb": None},
            extra={"benchmark": "a: first", "setup": "392 MB", "legacy": "before records"},
        ),
    }  # fmt: skip
    rows["a: first"].update(commit=None, machine={"label": "AMD EPYC x2; no GPU; torch 2.13.0"})
    write(tmp_path / BENCHMARKS, rows)
    doc = doc_with(tmp_path, "benchmarks")
    assert block_of(doc, tmp_path) == "\n".join(
        [
            "| benchmark | metric | ptm | baseline | ratio | ptm peak MB | baseline peak MB | machine | date | commit |",
            "|---|---|---|---|---|---|---|---|---|---|",
            "| a: first | MB/s | 237 | — | — | 950 | — | AMD EPYC x2; no GPU; torch 2.13.0 | 2026-12-01 | *before records* |",
            "| b: second | tokens/s | 7,107 | 3,103 | **2.3x** | 1,869 | 2,269 | Intel Xeon (AMX) x2, bf16; torch 2.13.0+cpu | 2026-12-01 | 0000000 |",
            "",
            "*before records*: written by `python -m bench` before it recorded its commit, settings and times; rerunning the row's command replaces it with a full record.",
            "",
            "Setups and commands:",
            "",
            "- **a: first** — 392 MB. Command: `python -m bench`",
            "- **b: second** — BERT-mini, fp32. Command: `python -m bench`",
        ]
    )  # fmt: skip


def test_bench_writes_its_report_through_the_same_renderer(tmp_path: Path) -> None:
    rows = {"x": record("bench", {"metric": "IDs/s", "ours": 1e6, "baseline": 1e5, "ours_peak_mb": 1.0,
                                  "baseline_peak_mb": 2.0}, extra={"benchmark": "x", "setup": "s"})}  # fmt: skip
    results = Path(write(tmp_path / "b.json", rows))
    report = tmp_path / "b.md"
    write_benchmarks_report(report, results, root=tmp_path)
    text = report.read_text()
    assert text.startswith("# Benchmarks\n") and "<!-- generated: benchmarks b.json -->" in text
    assert "| x | IDs/s | 1,000,000 | 100,000 | **10.0x** |" in text
    report.write_text("# Mine\n")
    with pytest.raises(InputError, match="no benchmarks block"):
        write_benchmarks_report(report, results, root=tmp_path)


def test_the_report_table(tmp_path: Path) -> None:
    write(tmp_path / "results" / "report.json", report_record())
    doc = doc_with(tmp_path, "report results/report.json gap=true")
    assert block_of(doc, tmp_path) == "\n".join(
        [
            "| task | training rows | pretrained → fine-tuned | same model from scratch | classical baseline | pretrained − scratch |",
            "|---|---|---|---|---|---|",
            "| sentiment (macro-F1) | 100 | **0.700** (0.680–0.720) | 0.630 (0.620–0.650) | **0.700** | +0.070 |",
            "| sentiment | all (13,875) | 0.846 (0.845–0.847) | 0.812 (0.810–0.813) | **0.858** | +0.034 |",
            "| names (entity F1) | all (36,023) | **0.898** | —, 1 of 1 failed | — | — |",
        ]
    )  # fmt: skip


def test_the_report_table_beside_another_report(tmp_path: Path) -> None:
    write(tmp_path / "results" / "report.json", report_record())
    other = report_record()
    for r in other["per_seed"]:
        r["test"] = 0.5
    write(tmp_path / "results" / "older.json", other)
    spec = "report results/report.json decimals=2 also=results/older.json also_label='6,000 steps'"
    lines = block_of(doc_with(tmp_path, spec), tmp_path).split("\n")
    assert lines[0].endswith("| classical baseline | 6,000 steps |")
    assert (
        lines[2]
        == "| sentiment (macro-F1) | 100 | **0.70** (0.68–0.72) | 0.63 (0.62–0.65) | **0.70** | 0.50 |"
    )


def test_the_run_tables(tmp_path: Path) -> None:
    pretrain = record("pretrain", {"eval/loss": 2.39891, "eval/accuracy": 0.51234,
                                   "unigram_entropy": 6.5549, "steps": 10000, "tokens": 40960000})  # fmt: skip
    write(tmp_path / "results" / "pretrain-payoff.json", pretrain)
    doc = doc_with(tmp_path, "run results/pretrain-payoff.json")
    assert block_of(doc, tmp_path) == "\n".join(
        [
            "| run | held-out loss | accuracy | unigram entropy | steps | tokens | wall | CPU time | machine |",
            "|---|---|---|---|---|---|---|---|---|",
            "| pretrain-payoff | 2.3989 | 0.5123 | 6.5549 | 10,000 | 40,960,000 | 47 min 12 s | 1 h 31 min | Intel Xeon (AMX) x2, bf16 |",
        ]
    )  # fmt: skip
    finetune = record("finetune", {"steps": 1299, "tasks": {"sentiment": {
        "metric": "macro_f1", "metric_label": "macro-F1", "dev": {"macro_f1": 0.8286}, "test": {"macro_f1": 0.85242}}}})  # fmt: skip
    write(tmp_path / "results" / "finetune.json", finetune)
    doc = doc_with(tmp_path, "run results/finetune.json decimals=3")
    assert block_of(doc, tmp_path).split("\n")[2] == (
        "| finetune | sentiment | macro-F1 | 0.829 | 0.852 | 1,299 | 47 min 12 s | Intel Xeon (AMX) x2, bf16 |"
    )
    doc = doc_with(tmp_path, "run results/finetune.json results/pretrain-payoff.json")
    with pytest.raises(InputError, match=r"RESULTS.md:3: .*not \['finetune', 'pretrain'\]"):
        render_file(doc, tmp_path)


def test_a_block_whose_record_does_not_exist_yet_says_so(tmp_path: Path) -> None:
    """A measurement not made yet is named, never left as an old number: the runs that exist
    are shown and the missing record listed."""
    pretrain = record("pretrain", {"eval/loss": 4.8, "eval/accuracy": 0.2, "unigram_entropy": 6.5,
                                   "steps": 3200, "tokens": 6400000})  # fmt: skip
    write(tmp_path / "results" / "pretrain-default.json", pretrain)
    doc = doc_with(tmp_path, "run results/pretrain-default.json results/pretrain-payoff.json")
    lines = block_of(doc, tmp_path).split("\n")
    assert lines[2].startswith("| pretrain-default | 4.8000 |")
    assert lines[-1] == (
        "*Not measured yet: no record `results/pretrain-payoff.json` (see results/README.md).*"
    )
    doc = doc_with(tmp_path, "report results/report-payoff.json")
    assert block_of(doc, tmp_path).startswith("*Not measured yet: no record `results/report")


def test_the_validation_table(tmp_path: Path) -> None:
    """One model against 5-fold cross-validation and an ensemble of the single models: each
    method's estimate of its test score and its test score, over seeds."""

    def task(**scores) -> dict:
        return {"sentiment": {"metric": "macro_f1", "metric_label": "macro-F1", **{
            split: {"macro_f1": value} for split, value in scores.items()}}}  # fmt: skip

    singles, folds = [], []
    for seed, (dev, test, oof, cv_test) in enumerate(
        ((0.83, 0.85, 0.84, 0.86), (0.84, 0.84, 0.845, 0.855), (0.82, 0.86, 0.835, 0.865)), 1
    ):
        singles.append(write(tmp_path / f"results/one-{seed}.json",
                             record("finetune", {"tasks": task(dev=dev, test=test)})))  # fmt: skip
        cv = {"cv": {"folds": 5, "tasks": task(oof=oof, test=cv_test)}}
        folds.append(write(tmp_path / f"results/cv-{seed}.json", record("cv", cv)))
    ensemble = {"ensemble": {"runs": ["a", "b", "c"], "tasks": task(dev=0.845, test=0.862)}}
    write(tmp_path / "results/ens.json", record("ensemble", ensemble))
    rel = [str(Path(p).relative_to(tmp_path)) for p in (*singles, *folds)]
    spec = (f"validation sentiment single={','.join(rel[:3])} cv={','.join(rel[3:])} "
            "ensemble=results/ens.json")  # fmt: skip
    assert block_of(doc_with(tmp_path, spec), tmp_path) == "\n".join(
        [
            "| training | estimate (macro-F1) | test (macro-F1) | estimate − test | runs |",
            "|---|---|---|---|---|",
            "| one model (its dev split) | 0.830 (0.820–0.840) | 0.850 (0.840–0.860) | -0.020, +0.000, -0.040 | 3 |",
            "| 5-fold cross-validation (out of fold; test: the folds' average) | 0.840 (0.835–0.845) | 0.860 (0.855–0.865) | -0.020, -0.010, -0.030 | 3 |",
            "| ensemble of the 3 single models (dev; test) | 0.845 | 0.862 | -0.017 | 1 |",
        ]
    )  # fmt: skip
    doc = doc_with(tmp_path, f"validation sentiment single={rel[3]}")
    with pytest.raises(InputError, match=r"RESULTS.md:3: single= names a cv record"):
        render_file(doc, tmp_path)


def scale_record(scale: str, peaks: dict[str, float]) -> dict:
    stages = [
        {"stage": "corpus", "what": "write the corpus", "streams": True, "seconds": 61.4,
         "peak_rss_mb": peaks["corpus"], "amount": 227_000_000, "unit": "IDs", "rate": 4.5e6,
         "command": "python -m bench.scale stage=corpus"},
        {"stage": "load", "what": "read and encode the fine-tuning task", "streams": False,
         "seconds": 3725.0, "peak_rss_mb": peaks["load"], "amount": 250_000, "unit": "rows",
         "rate": 5210.0, "command": "python -m bench.scale stage=load"},
    ]  # fmt: skip
    metrics = {
        "scale": scale,
        "documents": {"train": 200000, "dev": 2000, "test": 50000},
        "ids": {"train": 181_000_000, "dev": 1_800_000, "test": 45_000_000},
        "stages": stages,
        "disk_mb": {"corpus": 1130.4, "segments": 460.2, "work_dir": 1700.0},
    }
    extra = {"corpus_command": f"python -m bench.scale scale={scale} stage=corpus"}
    return record("scale", metrics, extra=extra, command=f"python -m bench.scale scale={scale}")


def test_the_scale_table(tmp_path: Path) -> None:
    write(
        tmp_path / "results" / "scale-1x.json", scale_record("1x", {"corpus": 96.0, "load": 4010.0})
    )
    failed = scale_record("5x", {"corpus": 130.0, "load": 9000.0})
    load = failed["metrics"]["stages"][1]
    for key in ("amount", "unit", "rate"):
        del load[key]
    load["error"] = "killed by signal 9 (out of memory?)"  # it reached 9,000 MB on its way
    write(tmp_path / "results" / "scale-5x.json", failed)
    doc = doc_with(tmp_path, "scale results/scale-1x.json results/scale-5x.json commands=false")
    lines = block_of(doc, tmp_path).split("\n")
    assert lines[:4] == [
        "| stage | 1x time | 1x peak MB | 1x throughput | 5x time | 5x peak MB | 5x throughput | peak 5x / 1x |",
        "|---|---|---|---|---|---|---|---|",
        "| corpus: write the corpus (streams) | 1 min 01 s | 96 | 227.0M IDs, 4.5M IDs/s | 1 min 01 s | 130 | 227.0M IDs, 4.5M IDs/s | **1.35x** *grows* |",
        "| load: read and encode the fine-tuning task | 1 h 02 min | 4,010 | 250.0k rows, 5.2k rows/s | 1 h 02 min | 9,000 | **failed**: killed by signal 9 (out of memory?) | ≥ 2.24x |",
    ]  # fmt: skip
    assert lines[-1] == (
        "- **5x** — 200,000 train + 2,000 dev + 50,000 test documents (227.8M IDs; 1,130 MB of "
        "text, 460 MB of segments, 1,700 MB in all on disk); Intel Xeon (AMX) x2, bf16; torch "
        "2.13.0+cpu; 2026-12-01; commit 0000000; 47 min 12 s in all. Corpus: `python -m "
        "bench.scale scale=5x stage=corpus`. Command: `python -m bench.scale scale=5x`"
    )
    # A scale not measured yet is said so; the stage commands come from the first one measured.
    (tmp_path / "results" / "scale-5x.json").unlink()
    doc = doc_with(tmp_path, "scale results/scale-1x.json results/scale-5x.json")
    text = block_of(doc, tmp_path)
    assert "| 1x throughput |\n" in text and "peak 5x" not in text
    assert "- **results/scale-5x.json** — not measured yet." in text
    assert text.endswith(
        "Stage commands (1x):\n\n- corpus: `python -m bench.scale stage=corpus`\n"
        "- load: `python -m bench.scale stage=load`"
    )
    (tmp_path / "results" / "scale-1x.json").unlink()
    assert block_of(doc, tmp_path) == (
        "Not measured yet: `python -m bench.scale` (make scale) writes `results/scale-1x.json`, "
        "`results/scale-5x.json`."
    )
    write(tmp_path / "results" / "scale-1x.json", report_record())
    with pytest.raises(InputError, match=r"scale-1x\.json is a report record"):
        render_file(doc, tmp_path)


def test_the_plot_is_drawn_from_the_record_and_checked_by_its_digest(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = write(tmp_path / "results" / "report.json", report_record())
    doc = doc_with(tmp_path, "plot results/report.json docs/curve.png")
    assert block_of(doc, tmp_path) == (
        "![test score by labelled training rows: median and min–max over seeds, from "
        "results/report.json](curve.png)"
    )
    png = tmp_path / "docs" / "curve.png"
    assert png_text(png)["Source"].startswith("results/report.json test sha256:")
    assert run(check=True, root=tmp_path, paths=[doc]) == []
    changed = report_record()
    changed["per_seed"][0]["test"] = 0.1
    write(Path(path), changed)
    assert run(check=True, root=tmp_path, paths=[doc]) == [
        f"{png} (not drawn from results/report.json)"
    ]
    assert run(check=False, root=tmp_path, paths=[doc]) == []
    assert run(check=True, root=tmp_path, paths=[doc]) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- generated: nothing -->\n<!-- /generated -->\n", r"x.md:1: no renderer 'nothing'"),
        ("<!-- generated: benchmarks -->\n", r"x.md:1: generated block without"),
        ("<!-- /generated -->\n", r"x.md:1: <!-- /generated --> without a start marker"),
        ("<!-- generated: run results/x.json colour=red -->\n<!-- /generated -->\n", r"unknown option \['colour'\]"),
    ],
)  # fmt: skip
def test_a_bad_block_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        render_text(text, tmp_path / "x.md", tmp_path)
