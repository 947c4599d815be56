"""The downstream probe: linear models on a frozen encoder's states, run during pretraining."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForMaskedLM

from pretrain.train import run
from ptm.config import from_conf
from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError
from ptm.tasks.config import TaskConfig
from ptm.tasks.probe import Probe, ProbeConfig, spread
from tests.conftest import pretrain_config, task_config
from tests.finetune_helpers import tiny_model_dir, write_classification, write_tags


def probe_config(**values) -> ProbeConfig:
    """The probe settings of the embedded corpus (conf/data/embedded.yaml), ``values`` changed."""
    return from_conf(ProbeConfig, "pretrain", "data.probe", **values)


def probe_tasks(folder: Path, max_seq_len: int = 128) -> list[TaskConfig]:
    cls = write_classification(folder / "cls")
    tags = write_tags(folder / "tags", long_every=7)  # some dev rows are windowed
    return [
        task_config(
            name="cls", kind="classification", train=cls["train"], dev=cls["dev"],
            max_seq_len=max_seq_len,
        ),
        task_config(
            name="tags", kind="tokens", train=tags["train"], dev=tags["dev"],
            label_column="tags", max_seq_len=max_seq_len,
        ),
    ]  # fmt: skip


def test_the_probe_reads_lexical_signal_from_random_features(tmp_path: Path) -> None:
    """At step 0 the encoder is random, yet each position's state still tells which ID sits
    there: the token probe finds the names, and the mean of the states finds the class marker.
    The fits are deterministic, and the encoder is left in the mode it was in."""
    model_dir = tiny_model_dir(tmp_path / "model", max_positions=128)
    cfg = probe_config(every=10, train_rows=160, dev_rows=40, tasks=probe_tasks(tmp_path))
    probe = Probe(cfg, load_tokenizer(model_dir), positions=128)
    encoder = AutoModelForMaskedLM.from_pretrained(model_dir).bert  # as pretraining holds it
    encoder.train()
    first = probe(encoder, torch.device("cpu"), "fp32", step=0)
    assert encoder.training
    again = probe(encoder, torch.device("cpu"), "fp32", step=10)
    assert first["probe/tags/entity_f1"] > 0.6  # measured 0.79
    assert first["probe/cls/macro_f1"] > 0.8  # measured 0.97; chance is ~0.5
    for key in ("probe/cls/macro_f1", "probe/tags/entity_f1"):
        assert first[key] == again[key]
    assert [h["step"] for h in probe.history] == [0, 10]
    summary = probe.summary(wall_seconds=100.0)
    assert summary["seconds"] == pytest.approx(
        first["probe/seconds"] + again["probe/seconds"], abs=0.01
    )
    assert probe.due(20, False) and not probe.due(25, False) and probe.due(25, True)


def test_rows_are_spread_over_the_file_and_capped() -> None:
    assert spread(10, 4).tolist() == [0, 3, 6, 9]
    assert spread(3, 10).tolist() == [0, 1, 2]


def test_a_probe_task_names_a_kind_the_probe_reads() -> None:
    """No guessed kind; and a kind whose answers a linear probe cannot fit is refused by name."""
    with pytest.raises(InputError, match=r"ProbeConfig\.tasks\.t: .*missing .*'kind'"):
        probe_config(tasks={"t": {"train": "a.csv", "dev": "b.csv"}})
    multi = task_config(kind="multi_label", train=Path("a.csv"), dev=Path("b.csv"))
    with pytest.raises(
        InputError, match=r"kind='multi_label'; use one of \['classification', 'tokens'\]"
    ):
        probe_config(tasks=[multi])


def test_probe_files_from_another_vocabulary_are_refused(tmp_path: Path) -> None:
    """The embedded tasks with a user's corpus would score nonsense: a one-line error instead."""
    model_dir = tiny_model_dir(tmp_path / "model")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    rows = "".join(
        f"{i % 2}\t{' '.join(str(9000 + (i * 7 + k) % 50) for k in range(6))}\n" for i in range(20)
    )
    for name in ("train", "dev"):
        (foreign / f"{name}.csv").write_text("label\ttext\n" + rows)
    task = task_config(
        name="other", kind="classification", train=foreign / "train.csv", dev=foreign / "dev.csv"
    )
    with pytest.raises(InputError, match=r"unknown to the corpus.s vocabulary.*data\.probe=null"):
        Probe(probe_config(tasks=[task]), load_tokenizer(model_dir), positions=64)


def test_pretraining_logs_the_probe_at_step_0_every_n_steps_and_at_the_end(
    tmp_path: Path, corpus: Path
) -> None:
    tasks = probe_tasks(tmp_path / "tasks", max_seq_len=64)
    run_dir = tmp_path / "run"
    cfg = pretrain_config(tmp_path, corpus, run_dir)
    probe = probe_config(every=8, train_rows=100, dev_rows=40, corpus=None, tasks=tasks)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, probe=probe))
    metrics = run(cfg)
    history = metrics["probe"]["history"]
    assert [h["step"] for h in history] == [0, 8, 16, 20]
    assert 0 < metrics["probe"]["share_of_wall"] < 1
    assert json.loads((run_dir / "metrics.json").read_text())["probe"]["history"] == history
    events = EventAccumulator(str(run_dir / "tb")).Reload()
    steps = [e.step for e in events.Scalars("probe/tags/entity_f1")]
    assert steps == [0, 8, 16, 20]
    assert np.allclose(
        [e.value for e in events.Scalars("probe/cls/macro_f1")],
        [h["probe/cls/macro_f1"] for h in history],
    )


def test_a_corpus_of_ones_own_gets_no_probe_of_the_embedded_tasks(
    tmp_path: Path, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded probe belongs to the embedded corpus (data.probe.corpus): pretraining on a
    corpus of the user's own with data=embedded's settings runs without it, and says so."""
    run_dir = tmp_path / "run"
    cfg = pretrain_config(tmp_path, corpus, run_dir, "train.max_steps=2")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, probe=probe_config()))
    with caplog.at_level("INFO", logger="pretrain.train"):
        metrics = run(cfg)
    assert "probe" not in metrics
    assert "no downstream probe: its tasks (sentiment, names) come from" in caplog.text
