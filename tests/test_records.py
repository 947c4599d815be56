"""Result records: small plain JSON naming the command, commit, machine, settings, times and
metrics of a run; ``python -m ptm.records add`` copies one into results/."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ptm.errors import InputError
from ptm.records import (
    ROOT,
    RunClock,
    add,
    command_line,
    commit,
    machine,
    machine_label,
    main,
    plain,
    read_record,
    short_cpu_name,
    write_record,
)


@dataclass(frozen=True)
class Train:
    lr: float
    betas: tuple[float, float]
    out: Path


def test_the_machine_names_cpu_threads_versions_and_a_label() -> None:
    info = machine("cpu", "fp32")
    assert {
        "cpu",
        "isa",
        "usable_cores",
        "torch_threads",
        "torch",
        "transformers",
        "python",
    } <= set(info)
    assert info["device"] == "cpu" and info["precision"] == "fp32"
    assert info["label"] == machine_label(info) and info["label"].endswith(", fp32")
    assert f" x{info['usable_cores']}" in info["label"]


@pytest.mark.parametrize(
    ("info", "label"),
    [
        (
            {"cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "isa": {"amx_bf16": True},
             "usable_cores": 2, "precision": "bf16"},
            "Intel Xeon (AMX) x2, bf16",
        ),
        (
            {"cpu": "AMD EPYC 7B13", "isa": {"amx_bf16": False}, "usable_cores": 2,
             "precision": "fp32"},
            "AMD EPYC x2, fp32",
        ),
        (
            {"cpu": "Intel(R) Xeon(R) Processor", "gpu": "NVIDIA H200", "gpu_count": 1,
             "device": "cuda", "precision": "bf16"},
            "NVIDIA H200, bf16",
        ),
        (
            {"cpu": "AMD EPYC 9654 96-Core Processor", "gpu": "NVIDIA H100 80GB HBM3",
             "gpu_count": 8, "device": "cuda:0"},
            "NVIDIA H100 80GB HBM3 x8",
        ),
        ({"cpu": "AMD EPYC 9654 96-Core Processor", "isa": None, "usable_cores": 16}, "AMD EPYC x16"),
    ],
)  # fmt: skip
def test_machine_labels(info: dict, label: str) -> None:
    assert machine_label(info) == label


def test_short_cpu_names_keep_vendor_and_family() -> None:
    assert short_cpu_name("13th Gen Intel(R) Core(TM) i7-13700K") == "Intel Core"
    assert short_cpu_name("Apple M2") == "Apple M2"


def test_the_commit_is_read_in_a_checkout_and_absent_outside_one(tmp_path, monkeypatch) -> None:
    found = commit(ROOT)
    assert found is not None and len(found["sha"]) == 40 and isinstance(found["dirty"], bool)
    monkeypatch.delenv("PTM_COMMIT", raising=False)
    assert commit(tmp_path) is None
    monkeypatch.setenv("PTM_COMMIT", "9691f6c")  # a copy without .git (a GPU machine's)
    assert commit(tmp_path) == {
        "sha": "9691f6c",
        "dirty": None,
        "changed": [],
        "from": "PTM_COMMIT",
    }


def test_the_command_reads_as_typed() -> None:
    argv = ["/home/u/ptm/.venv/bin/python3.11", "-m", "pretrain", "+experiment=payoff", "data.corpus=[a.txt]"]  # fmt: skip
    assert command_line(argv) == "python -m pretrain +experiment=payoff 'data.corpus=[a.txt]'"


def test_a_record_is_small_plain_portable_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    clock = RunClock.start()
    # A child process's CPU time counts once it has been waited for.
    subprocess.run([sys.executable, "-c", "sum(range(3 * 10**7))"], check=True)
    path = write_record(
        tmp_path / "run" / "record.json",
        kind="pretrain",
        command="python -m pretrain",
        config={"train": Train(1e-3, (0.9, 0.98), tmp_path / "outputs" / "x"), "home": Path.home() / "c"},
        metrics={"eval/loss": np.float32(2.5), "steps": np.int64(10), "diverged": float("nan")},
        clock=clock,
        per_seed=[{"seed": 1, "test": 0.8}],
        machine_info=machine("cpu", "bf16"),
        extra={"note": "x"},
    )  # fmt: skip
    text = path.read_text()
    assert len(text) < 20_000 and "NaN" not in text
    record = json.loads(text)
    assert list(record)[:4] == ["schema", "kind", "command", "commit"]
    assert record["kind"] == "pretrain" and record["command"] == "python -m pretrain"
    assert record["config"] == {
        "train": {"lr": 1e-3, "betas": [0.9, 0.98], "out": "outputs/x"},
        "home": "~/c",
    }
    assert record["metrics"] == {"eval/loss": 2.5, "steps": 10, "diverged": "nan"}
    assert record["per_seed"] == [{"seed": 1, "test": 0.8}] and record["extra"] == {"note": "x"}
    assert record["machine"]["label"].endswith(", bf16")
    assert record["cpu_seconds"] >= 0.2 and record["wall_seconds"] > 0
    assert record["started"] <= record["finished"] and record["finished"].endswith("Z")
    assert read_record(path.parent) == record  # a run folder reads its record.json


def test_plain_refuses_what_json_cannot_hold() -> None:
    assert plain({1: (math.inf, -math.inf)}) == {"1": ["inf", "-inf"]}
    with pytest.raises(TypeError, match="plain values"):
        plain({"x": object()})


def test_reading_something_else_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(InputError, match="not readable JSON"):
        read_record(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not a result record"):
        read_record(tmp_path / "other.json")
    with pytest.raises(InputError, match="no such record"):
        read_record(tmp_path)


def test_add_copies_a_runs_record_into_results(tmp_path: Path, capsys) -> None:
    run = tmp_path / "outputs" / "pretrain" / "2026-12-01"
    write_record(run / "record.json", kind="pretrain", config={}, metrics={"steps": 1},
                 clock=RunClock.start(), command="python -m pretrain", machine_info={"label": "x"})  # fmt: skip
    results = tmp_path / "results"
    dest = add(run, "pretrain-payoff.json", results)
    assert dest == results / "pretrain-payoff.json"
    assert dest.read_bytes() == (run / "record.json").read_bytes()
    assert main(["add", str(run / "record.json"), "again", "--results", str(results)]) == 0
    assert capsys.readouterr().out.strip() == str(results / "again.json")
    assert main(["add", str(run), "../escape", "--results", str(results)]) == 2
    assert "record name '../escape'" in capsys.readouterr().err
    assert main(["add", str(tmp_path), "x", "--results", str(results)]) == 2
    assert sorted(p.name for p in results.iterdir()) == ["again.json", "pretrain-payoff.json"]
