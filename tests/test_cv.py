"""Cross-validation and ensembles (finetune/cv.py, finetune/ensemble.py): every training row
predicted once out of fold, the test file's probabilities averaged, folds that resume, and the
mean of several runs scored on dev and test."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from finetune.cv import run_folds
from finetune.ensemble import EnsembleConfig
from finetune.ensemble import run as ensemble
from finetune.train import run
from ptm.errors import InputError
from ptm.tasks.loading import fold_of_rows
from ptm.tasks.submission import read_probabilities
from tests.conftest import run_module
from tests.finetune_helpers import (
    finetune_config,
    task_overrides,
    tiny_model_dir,
    write_classification,
    write_tags,
)

FAST = ("train.epochs=4",)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tiny_model_dir(tmp_path / "base")


def cls_overrides(tmp_path: Path, with_dev: bool = True) -> list[str]:
    files = write_classification(tmp_path / "data")
    if not with_dev:
        del files["dev"]
    return task_overrides("cls", files, "classification", max_seq_len=64)


def test_folds_are_stratified_and_a_function_of_the_seed() -> None:
    strata = np.array([0] * 50 + [1] * 20 + [2] * 7)
    folds = fold_of_rows(strata, len(strata), 5, seed=3)
    assert np.array_equal(folds, fold_of_rows(strata, len(strata), 5, seed=3))
    assert not np.array_equal(folds, fold_of_rows(strata, len(strata), 5, seed=4))
    for c, n in ((0, 50), (1, 20), (2, 7)):
        per_fold = np.bincount(folds[strata == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    assert sorted(np.bincount(fold_of_rows(None, 11, 3, seed=0))) == [3, 4, 4]


def test_cross_validation_predicts_every_training_row_once_and_averages_the_test(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "cv"
    cfg = finetune_config(
        tmp_path, model_dir, run_dir, *cls_overrides(tmp_path), "cv.folds=3", *FAST
    )
    out = run_folds(cfg)["cv"]["tasks"]["cls"]
    folds = [run_dir / f"fold-{k}" for k in range(3)]

    # Out of fold: each of the 160 training rows (file lines 2..161) in exactly one fold.
    lines = [
        read_probabilities(f / "predictions/cls/oof_probabilities.csv", ["neg", "pos"])[0]
        for f in folds
    ]
    assert sorted(np.concatenate(lines).tolist()) == list(range(2, 162))
    assert sorted(len(x) for x in lines) == [53, 53, 54]
    assert 0.0 <= out["oof"]["macro_f1"] <= 1.0 and out["oof"]["confusion_matrix"]
    assert sum(map(sum, out["oof"]["confusion_matrix"])) == 160
    # Each fold selected its best step on the task's dev file, the same 40 rows.
    for f in folds:
        dev_lines, _ = read_probabilities(
            f / "predictions/cls/dev_probabilities.csv", ["neg", "pos"]
        )
        assert dev_lines.tolist() == list(range(2, 42))

    # The submission: the mean of the folds' test probabilities, decided by its largest entry.
    probs = [np.loadtxt(f / "predictions/cls/probabilities.csv", skiprows=1) for f in folds]
    mean = np.loadtxt(run_dir / "predictions/cls/probabilities.csv", skiprows=1)
    np.testing.assert_allclose(mean, np.mean(probs, 0), atol=1e-6)
    labels = (run_dir / "predictions/cls/submission.csv").read_text().split()[1:]
    assert labels == [["neg", "pos"][i] for i in mean.argmax(1)]
    metrics = json.loads((run_dir / "metrics.json").read_text())["cv"]["tasks"]["cls"]
    assert metrics["test"]["macro_f1"] == out["test"]["macro_f1"] and len(metrics["folds"]) == 3
    assert json.loads((run_dir / "record.json").read_text())["kind"] == "cv"

    # `latest` names the CV run, not a fold; predicting with it averages the folds' models, as
    # the CV run averaged their test probabilities (both written to six decimals).
    assert (tmp_path / "latest").resolve() == run_dir.resolve()
    assert not (run_dir / "latest").exists()
    result = run_module(
        "finetune.predict", f"run={run_dir}", f"output={tmp_path / 'b'}",
        f"hydra.run.dir={tmp_path / 'log'}", "runtime.device=cpu", "runtime.precision=fp32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    again_probs = np.loadtxt(tmp_path / "b" / "cls" / "probabilities.csv", skiprows=1)
    np.testing.assert_allclose(again_probs, mean, atol=2e-6)
    assert (tmp_path / "b" / "cls" / "submission.csv").read_text().split()[1:] == labels

    # Run again into the same folder: finished folds are reused, a removed one runs again.
    shutil.rmtree(folds[1])
    with caplog.at_level(logging.INFO, logger="finetune.cv"):
        again = run_folds(cfg)["cv"]["tasks"]["cls"]
    assert caplog.text.count("finished before") == 2 and again["oof"] == out["oof"]


def test_without_a_dev_file_each_fold_selects_on_its_held_out_part(
    tmp_path: Path, model_dir: Path
) -> None:
    run_dir = tmp_path / "cv"
    overrides = [*cls_overrides(tmp_path, with_dev=False), "cv.folds=2", *FAST]
    run_folds(finetune_config(tmp_path, model_dir, run_dir, *overrides))
    for k in range(2):
        folder = run_dir / f"fold-{k}" / "predictions" / "cls"
        dev = read_probabilities(folder / "dev_probabilities.csv", ["neg", "pos"])
        oof = read_probabilities(folder / "oof_probabilities.csv", ["neg", "pos"])
        assert np.array_equal(dev[0], oof[0]) and np.array_equal(dev[1], oof[1])


def test_a_token_task_is_not_cross_validated(tmp_path: Path, model_dir: Path) -> None:
    files = write_tags(tmp_path / "tags")
    overrides = [*task_overrides("tags", files, "tokens", label_column="tags", max_seq_len=64)]
    cfg = finetune_config(tmp_path, model_dir, tmp_path / "cv", *overrides, "cv.folds=2")
    with pytest.raises(InputError, match="task tags is of kind tokens, whose predictions are not"):
        run_folds(cfg)


def test_an_ensemble_averages_runs_and_scores_dev_and_test(tmp_path: Path, model_dir: Path) -> None:
    overrides = [*cls_overrides(tmp_path), *FAST]
    runs = [tmp_path / f"seed-{seed}" for seed in (1, 2)]
    for seed, run_dir in zip((1, 2), runs, strict=True):
        run(finetune_config(tmp_path, model_dir, run_dir, *overrides, f"train.seed={seed}"))
    out_dir = tmp_path / "ensemble"
    from ptm.config import from_conf

    given = f"runs=[{','.join(map(str, runs))}]"
    cfg = from_conf(EnsembleConfig, "ensemble", overrides=(given,), run_dir=out_dir)
    out = ensemble(cfg)["ensemble"]["tasks"]["cls"]
    dev = [
        read_probabilities(r / "predictions/cls/dev_probabilities.csv", ["neg", "pos"])[1]
        for r in runs
    ]
    truth = [0, 1] * 20  # write_classification alternates neg / pos
    predicted = np.mean(dev, 0).argmax(1)
    assert out["dev"]["accuracy"] == pytest.approx(np.mean(predicted == truth))
    assert "test" in out and [m["run"] for m in out["members"]] == [str(r) for r in runs]
    mean = np.mean(
        [np.loadtxt(r / "predictions/cls/probabilities.csv", skiprows=1) for r in runs], 0
    )
    np.testing.assert_allclose(
        np.loadtxt(out_dir / "predictions/cls/probabilities.csv", skiprows=1), mean, atol=1e-6
    )
    with pytest.raises(InputError, match="give two runs or more"):
        from_conf(EnsembleConfig, "ensemble", overrides=(f"runs=[{runs[0]}]",), run_dir=out_dir)


def test_cross_validation_runs_in_one_process_and_predict_wants_every_fold(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetune.predict import locate

    cfg = finetune_config(
        tmp_path, model_dir, tmp_path / "cv", *cls_overrides(tmp_path), "cv.folds=3"
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="runs its folds one after another in one process"):
        run_folds(cfg)
    monkeypatch.delenv("WORLD_SIZE")
    run(finetune_config(tmp_path, model_dir, tmp_path / "cv" / "fold-0", *cls_overrides(tmp_path),
                        "cv.folds=3", "cv.fold=0", *FAST))  # fmt: skip
    with pytest.raises(InputError, match="1 of its 3 folds have finished — finish the CV run"):
        locate(tmp_path / "cv")
