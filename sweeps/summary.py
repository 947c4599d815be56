"""One ranked table of a Hydra multirun sweep: a row per job, best first, failed jobs last.

Newest sweep:        python -m sweeps.summary                      # = make summary
A given sweep:       python -m sweeps.summary dir=outputs/finetune-multirun/2026-11-22_10-00-00
Another metric:      python -m sweeps.summary metric=tasks.sentiment.test.macro_f1 mode=max

Prints the table and writes it as ``summary.md`` and ``summary.csv`` into the sweep folder, so
the comparison stays beside the runs it compares. Safe on a sweep still running: unfinished jobs
are listed as incomplete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ptm.config import PathsConfig, register_resolvers, to_dataclass
from ptm.errors import exit_on_input_error
from sweeps.jobs import MODES, Summary, latest_sweep, read_sweep, summarize

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SummaryConfig:
    paths: PathsConfig
    dir: str | None  # a sweep folder; latest (or null): the newest sweep
    metric: str | None
    mode: str | None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; use one of {list(MODES)}")


def run(cfg: SummaryConfig) -> Summary:
    newest = cfg.dir in (None, "", "latest")
    folder = latest_sweep(cfg.paths.output_dir) if newest else Path(cfg.dir)
    summary = summarize(read_sweep(folder), cfg.metric, cfg.mode)
    text = summary.markdown()
    (folder / "summary.md").write_text(text)
    (folder / "summary.csv").write_text(summary.csv())
    print(text, end="", flush=True)  # the table is this program's output, not a log line
    log.info("written: %s, %s", folder / "summary.md", folder / "summary.csv")
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="summary")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    run(to_dataclass(SummaryConfig, cfg))


if __name__ == "__main__":
    register_resolvers()
    main()
