"""The whole pipeline on the embedded corpus, tiny: pretrain -> fine-tune from the command line ->
metrics, submission and model checked, as `make pretrain && make finetune` does at full size."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pretrain.train import run as pretrain
from tests.conftest import pretrain_config, run_module


def test_pretrain_then_finetune_on_the_embedded_corpus(tmp_path: Path, embedded_dir: Path) -> None:
    pretrained = tmp_path / "pretrain"
    pretrain(pretrain_config(tmp_path, embedded_dir / "pretrain.txt", pretrained))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "embedded").symlink_to(embedded_dir, target_is_directory=True)

    run_dir = tmp_path / "finetune"
    result = run_module(
        "finetune",
        "+experiment=finetune_tiny",
        f"paths.data_dir={data}",
        f"model.path={pretrained / 'model'}",
        "train.limit_examples=null",
        "train.max_steps=150",
        "train.batch_size=16",
        "train.micro_batch_size=16",
        "train.lr=3e-3",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # The task file asks 128 positions: the length follows the tiny model's 64 (README's pair).
    assert "task sentiment: max_seq_len 128 capped at the model's 64 positions" in output
    for where in ("model:", "metrics:", "submission:", "probabilities:", "tensorboard:"):
        assert where in output  # the run says where everything went

    metrics = json.loads((run_dir / "metrics.json").read_text())
    sentiment = metrics["tasks"]["sentiment"]
    assert metrics["steps"] == 150 and sentiment["labels"] == ["0", "1"]
    for split in ("dev", "test"):  # a tiny model already beats chance on reviews
        assert sentiment[split]["macro_f1"] > 0.55, sentiment[split]
        assert sentiment[split]["per_class"]["1"]["support"] > 800

    test_rows = (embedded_dir / "sentiment" / "test.csv").read_text().splitlines()[1:]
    with (run_dir / "predictions" / "sentiment" / "submission.csv").open() as f:
        submission = list(csv.reader(f, delimiter="\t"))
    assert submission[0] == ["label"] and len(submission) - 1 == len(test_rows)
    assert {row[0] for row in submission[1:]} <= {"0", "1"}
    assert (run_dir / "model" / "config.json").is_file()
    assert json.loads((run_dir / "model" / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"
    ]
