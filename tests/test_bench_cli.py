"""`python -m bench` picks benchmarks by name: an unknown name, or one whose library is missing
(the GPU image has no jieba), is said in one line, never silently dropped; each row it writes is
the record of the run that measured it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# jieba hidden the way a machine without it would be: its import fails.
WITHOUT_JIEBA = (
    "import runpy, sys; sys.modules['jieba'] = None; sys.argv = ['bench', *sys.argv[1:]]; "
    "runpy.run_module('bench', run_name='__main__', alter_sys=True)"
)


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    files = [f"results={tmp_path / 'b.json'}", f"report={tmp_path / 'b.md'}"]
    command = [sys.executable, "-c", WITHOUT_JIEBA, *args, *files, f"hydra.run.dir={tmp_path}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_an_unknown_benchmark_is_named_with_the_choices(tmp_path: Path) -> None:
    out = _bench(tmp_path, "only=[segmnts]")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "no benchmark ['segmnts']" in last and "'segments'" in last
    assert "Traceback" not in out.stderr


def test_a_benchmark_whose_library_is_missing_is_named_and_the_run_fails(tmp_path: Path) -> None:
    out = _bench(tmp_path, "only=[segments]")
    assert out.returncode != 0
    said = out.stdout + out.stderr  # Hydra logs to stdout
    assert "benchmark segments skipped" in said and "jieba" in said
    assert (
        out.stderr.strip().splitlines()[-1]
        == "benchmarks skipped for a missing library: ['segments']"
    )
    assert not (tmp_path / "b.json").exists()  # nothing measured, nothing written


def test_a_benchmark_row_is_the_record_of_the_run_that_measured_it() -> None:
    from bench.__main__ import row_record
    from bench.common import BenchRow
    from ptm.records import RunClock

    row = BenchRow(
        "pretrain: x (CPU, bf16)", "tokens/s", 2.0, 1.0, 10.0, 20.0, "setup", "cpu", "bf16"
    )
    rec = row_record(
        row, "python -m bench 'only=[pretrain]'", {"only": ["pretrain"]}, RunClock.start()
    )
    assert rec["kind"] == "bench" and rec["command"] == "python -m bench 'only=[pretrain]'"
    assert rec["metrics"] == {
        "metric": "tokens/s",
        "ours": 2.0,
        "baseline": 1.0,
        "ratio": 2.0,
        "ours_peak_mb": 10.0,
        "baseline_peak_mb": 20.0,
    }
    assert rec["extra"] == {"benchmark": "pretrain: x (CPU, bf16)", "setup": "setup"}
    assert rec["machine"]["label"].endswith(", bf16") and rec["machine"]["device"] == "cpu"
    assert rec["config"] == {"only": ["pretrain"]} and rec["commit"]["sha"]
    assert rec["wall_seconds"] >= 0 and rec["cpu_seconds"] >= 0
