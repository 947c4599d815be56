"""How much of the tasks' dev and test text the pretraining corpus contains, verbatim.

python -m pretrain.overlap                      # = make overlap: the embedded corpus and tasks
python -m pretrain.overlap data=tianchi 'data.corpus=[train_set.csv,test_a.csv]' \\
    task=tianchi tasks.tianchi.train=train_set.csv tasks.tianchi.test=test_a.csv

Pretraining on the competition's test text is a choice many Tianchi users make on purpose; this
command does not forbid it, it puts a number on it. Every row of every task file (train, dev,
test; each text column) of at least ``min_len`` IDs or characters is searched for inside the
corpus documents (`ptm.data.overlap`). The table is logged and written to ``overlap.json`` in the run
folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ptm.config import register_resolvers, resolve, to_dataclass
from ptm.errors import InputError, exit_on_input_error
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import kind_of
from ptm.tasks.loading import task_table
from ptm.tasks.overlap import measure_overlap, read_texts

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="overlap")
@exit_on_input_error
def main(cfg: DictConfig) -> dict:
    data = resolve(cfg)
    corpus = [Path(p) for p in data["data"]["corpus"]]
    if not corpus:
        raise InputError(None, "data.corpus lists no file", "set data.corpus=[file1,file2,...]")
    tasks = [
        (kind_of(name, settings), to_dataclass(TaskConfig, {"name": name, **settings}))
        for name, settings in data["tasks"].items()
    ]
    held_out = {}
    for kind, task in tasks:
        columns = kind.text_columns(task)  # each text column of the kind
        for split in ("train", "dev", "test"):
            path = getattr(task, split)
            if path is not None:
                held_out[f"{task.name}/{split}"] = read_texts(task_table(task, path), columns)
    column = data["data"]["segments"]["text_column"]
    report = measure_overlap(corpus, column, held_out, data["min_len"])
    out = Path(HydraConfig.get().runtime.output_dir) / "overlap.json"
    out.write_text(json.dumps({"corpus": [str(p) for p in corpus], **report}, indent=2) + "\n")
    log.info(
        "rows of each task file found inside the pretraining corpus (%s):",
        ", ".join(map(str, corpus)),
    )
    for name, row in report.items():
        log.info(
            "  %-24s %7d rows, %7d of >= %d: %6d inside (%.1f%%)",
            name, row["rows"], row["checked"], data["min_len"], row["contained"], 100 * row["share"],
        )  # fmt: skip
    log.info("written to %s", out)
    return report


if __name__ == "__main__":
    register_resolvers()
    main()
