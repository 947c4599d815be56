"""`make convert` then `make finetune` from the converted folder, end to end on the command line:
a TensorFlow checkpoint (the committed fixture, written by TensorFlow itself) becomes a model
that the fine-tuning stage starts from, on a Tianchi-format task the test writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tests.conftest import run_module

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tf_bert" / "mlm_only"


def write_task(folder: Path, n: int, with_labels: bool, seed: int) -> Path:
    """Label 1 when ID 7 appears: IDs 0..24 are in the fixture's vocabulary."""
    rng = np.random.default_rng(seed)
    rows = ["label\ttext" if with_labels else "text"]
    for _ in range(n):
        ids = rng.integers(0, 25, int(rng.integers(4, 12)))
        label = int(7 in ids)
        text = " ".join(map(str, ids))
        rows.append(f"{label}\t{text}" if with_labels else text)
    path = folder / ("train.csv" if with_labels else "test.csv")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_converted_checkpoint_fine_tunes(tmp_path: Path) -> None:
    converted = tmp_path / "converted"
    result = run_module(
        "convert", f"input={FIXTURE}", f"output={converted}", f"hydra.run.dir={tmp_path / 'log'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (converted / "model.safetensors").is_file()

    train, test = write_task(tmp_path, 120, True, 0), write_task(tmp_path, 30, False, 1)
    run_dir = tmp_path / "finetune"
    result = run_module(
        "finetune", "+experiment=finetune_tiny", "task=tianchi",
        f"tasks.tianchi.train={train}", f"tasks.tianchi.test={test}",
        "tasks.tianchi.max_seq_len=16",  # the fixture model has 16 positions
        f"model.path={converted}", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["tasks"]["tianchi"]["labels"]) == {"0", "1"}
    assert 0.0 <= metrics["tasks"]["tianchi"]["dev"]["macro_f1"] <= 1.0
    with (run_dir / "predictions" / "tianchi" / "submission.csv").open() as f:
        submission = list(csv.reader(f, delimiter="\t"))
    assert submission[0] == ["label"] and len(submission) == 31
