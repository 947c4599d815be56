"""Run the benchmarks, record every row, and render BENCHMARKS.md (``make bench``).

python -m bench                         # everything
python -m bench 'only=[segments]'       # one benchmark; the other rows are kept

Each row of BENCHMARKS.json is the record (`ptm.records`) of the run that measured it: the
command that reruns just that benchmark, the commit, the machine (its label names the device and
precision the row ran on), the benchmark's settings, and the wall and CPU time of the whole
benchmark run (all its rows). BENCHMARKS.md's table is rendered from that file by
`docs.render`, the code ``make docs`` renders every results table with.
"""

from __future__ import annotations

import importlib
import json
import logging
import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from bench.common import BenchRow
from docs.blocks import fmt
from docs.render import write_benchmarks_report
from ptm.records import RunClock, dump, machine, make_record

log = logging.getLogger(__name__)


# In the order `make bench` runs them. Each module is imported only when its benchmark runs: they
# need different libraries (segments: jieba, for its baseline), which a GPU image may lack.
BENCHMARKS = ("segments", "pretrain", "feed", "finetune", "predict", "attention", "convert")


def runner(name: str, cfg: DictConfig):
    """The benchmark's ``run`` with its section of conf/bench.yaml (convert has none)."""
    module = importlib.import_module(f"bench.{name}")
    section = cfg.get(name)
    return (lambda: module.run(**section)) if section is not None else module.run


def row_record(row: BenchRow, command: str, config: dict, clock: RunClock) -> dict:
    """One BENCHMARKS.json row: the record of the run that measured it."""
    return make_record(
        kind="bench",
        command=command,
        config=config,
        metrics={
            "metric": row.metric,
            "ours": row.ours,
            "baseline": row.baseline,
            "ratio": row.ratio,
            "ours_peak_mb": row.ours_peak_mb,
            "baseline_peak_mb": row.baseline_peak_mb,
        },
        clock=clock,
        machine_info=machine(row.device, row.precision),
        extra={"benchmark": row.benchmark, "setup": row.setup},
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    results_path = Path(cfg.results)
    rows: dict[str, dict] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    overrides = [shlex.quote(a) for a in sys.argv[1:] if not a.startswith("only=")]
    wanted = list(cfg.only) if cfg.only else list(BENCHMARKS)
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(
            f"conf/bench.yaml only: no benchmark {unknown}; choose from {list(BENCHMARKS)}"
        )
    skipped = []
    for name in [b for b in BENCHMARKS if b in wanted]:
        try:
            fn = runner(name, cfg)
        except ModuleNotFoundError as e:  # a library the benchmark needs; said, never dropped
            if (e.name or "").split(".")[0] in {"bench", "ptm", "pretrain", "finetune", "convert"}:
                raise  # our own code broken, not a library missing
            log.error(
                "benchmark %s skipped: %s (install it, or leave %s out of only=)", name, e, name
            )
            skipped.append(name)
            continue
        log.info("benchmark %s ...", name)
        # Each row names the command that reruns just it, with this run's other overrides.
        command = " ".join(["python -m bench", f"'only=[{name}]'", *overrides])
        section = cfg.get(name)
        config = {
            "only": [name],
            **({name: OmegaConf.to_container(section)} if section is not None else {}),
        }
        clock = RunClock.start()
        measured = fn()
        for row in measured:
            assert isinstance(row, BenchRow), f"{name} returned {type(row).__name__}, not BenchRow"
            rows[row.benchmark] = row_record(row, command, config, clock)
            log.info(
                "%s: ours %s, baseline %s %s",
                row.benchmark,
                fmt(row.ours),
                fmt(row.baseline),
                row.metric,
            )
        # Written after every benchmark: a run cut short (a GPU call's time limit) keeps what it
        # measured.
        if measured:
            dump(results_path, rows)
            write_benchmarks_report(Path(cfg.report), results_path)
    log.info("wrote %s\n%s", cfg.report, OmegaConf.to_yaml(cfg))
    if skipped:
        raise SystemExit(f"benchmarks skipped for a missing library: {skipped}")


if __name__ == "__main__":
    main()
