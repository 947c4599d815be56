"""The classical baselines (`ptm.tasks.baselines`): chosen by the kind, fitted on the rows the
fine-tuning runs read, settings chosen on dev — the multi-label one by the kind's own rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from finetune.config import build_config
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError
from ptm.tasks.baselines import BASELINES, fit_baseline, split_rows
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import KINDS, MultiLabel, load_task
from tests.conftest import compose_config, task_config
from tests.finetune_helpers import tiny_model_dir, write_multilabel, write_pairs
from tests.test_finetune_report import embedded_model


def test_every_kind_names_a_baseline_there_is_or_none() -> None:
    named = {kind.baseline for kind in KINDS.values()} - {None}
    assert named == set(BASELINES)
    assert all(b.label and b.note for b in BASELINES.values())


@pytest.mark.parametrize("task_name", ["sentiment", "names"])
def test_the_baseline_learns_from_the_rows_the_models_learn_from(
    task_name: str, tmp_path: Path, embedded_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "embedded").symlink_to(embedded_dir, target_is_directory=True)
    overrides = [
        f"task={task_name}",
        f"paths.data_dir={data_dir}",
        f"tasks.{task_name}.train_rows=60",
        f"tasks.{task_name}.train_rows_seed=3",
    ]
    ft = build_config(OmegaConf.to_container(compose_config("finetune", overrides), resolve=True))
    task = ft.tasks[0]
    tokenizer = load_tokenizer(embedded_model(tmp_path / "model", embedded_dir))
    data = load_task(task, tokenizer, limit=400)
    rows = split_rows(task, limit=400)["train"]
    assert data.splits["train"].n_rows == len(rows.texts) == 60
    texts = [
        " ".join(tokenizer.convert_ids_to_tokens(ids[1:-1].tolist()))
        for ids in data.splits["train"].input_ids
    ]
    if data.kind.head == "token":  # windows of one row: compare rows, not examples
        assert data.splits["train"].stats["examples"] == len(texts)
        joined = {}
        for r, t in zip(data.splits["train"].row, texts, strict=True):
            joined[r] = f"{joined[r]} {t}" if r in joined else t
        texts = [joined[r] for r in sorted(joined)]
        assert texts == rows.texts
    else:
        assert [t.split()[:16] for t in texts] == [r.split()[:16] for r in rows.texts]  # cut
        assert [data.labels[i] for i in data.splits["train"].labels] == rows.answers


def multilabel_task(tmp_path: Path, **values) -> TaskConfig:
    files = write_multilabel(tmp_path / "ml")
    return task_config(name="ml", kind="multi_label", max_seq_len=64, **files, **values)


def test_the_multi_label_baseline_reads_the_models_rows_and_scores_label_sets(
    tmp_path: Path,
) -> None:
    task = multilabel_task(tmp_path, train_rows=50, train_rows_seed=3)
    data = load_task(task, load_tokenizer(tiny_model_dir(tmp_path / "model")))
    rows = split_rows(task, limit=None)
    train = data.splits["train"]
    chosen = [",".join(data.labels[i] for i in np.flatnonzero(hot)) for hot in train.row_labels()]
    assert len(rows["train"].texts) == 50
    assert chosen == [",".join(sorted(a.split(","))) for a in rows["train"].answers]
    assert len(rows["test"].answers) == data.splits["test"].n_rows == 30
    scores = fit_baseline(task, seed=1)
    assert set(scores) == {"dev", "test"} and scores["test"] > 0.6  # markers are TF-IDF words
    assert fit_baseline(task, seed=2) == scores  # lbfgs: deterministic


def test_the_multi_label_baseline_chooses_its_threshold_by_the_kind_s_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[tuple[int, int], float]] = []
    real = MultiLabel.threshold_on

    def recording(self, truth: np.ndarray, probs: np.ndarray) -> float:
        seen.append((probs.shape, real(self, truth, probs)))
        return seen[-1][1]

    monkeypatch.setattr(MultiLabel, "threshold_on", recording)
    fit_baseline(multilabel_task(tmp_path), seed=1)
    assert [shape for shape, _ in seen] == [(40, 3)] * 4  # on dev, once per C
    assert all(t in MultiLabel.THRESHOLDS for _, t in seen)


def test_a_dev_label_train_never_had_is_an_error_naming_its_line(tmp_path: Path) -> None:
    task = multilabel_task(tmp_path)
    lines = task.dev.read_text().splitlines()
    lines[3] = "pos,other\t" + lines[3].split("\t")[1]
    task.dev.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"dev.csv:4: label 'other' does not occur"):
        fit_baseline(task, seed=1)


def test_a_kind_without_a_baseline_says_so(tmp_path: Path) -> None:
    files = write_pairs(tmp_path / "pair")
    task = task_config(name="p", kind="pair", train=files["train"], dev=files["dev"])
    with pytest.raises(InputError, match="the pair kind has no classical baseline"):
        fit_baseline(task, seed=1)
