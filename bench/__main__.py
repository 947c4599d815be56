"""Run the benchmarks and rewrite BENCHMARKS.md (``make bench``).

python -m bench                         # everything
python -m bench 'only=[segments]'       # one benchmark; the other rows are kept
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import shlex
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from bench.common import BenchRow

log = logging.getLogger(__name__)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}; {gpu}; torch {torch.__version__}"


# In the order `make bench` runs them. Each module is imported only when its benchmark runs: they
# need different libraries (segments: jieba, for its baseline), which a GPU image may lack.
BENCHMARKS = ("segments", "pretrain", "feed", "finetune", "attention", "convert")


def runner(name: str, cfg: DictConfig):
    """The benchmark's ``run`` with its section of conf/bench.yaml (convert has none)."""
    module = importlib.import_module(f"bench.{name}")
    section = cfg.get(name)
    return (lambda: module.run(**section)) if section is not None else module.run


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def render(rows: dict[str, dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Every speed claim of ptm, measured against a baseline in the same run. Regenerate with",
        "`make bench` (or `python -m bench 'only=[NAME]'` for one row). Peak memory is the peak",
        "RSS of the process that did the work.",
        "",
        "| benchmark | metric | ptm | baseline | ratio | ptm peak MB | baseline peak MB | date | machine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        ratio = f"**{r['ours'] / r['baseline']:.1f}x**" if r["baseline"] else "—"
        lines.append(
            f"| {r['benchmark']} | {r['metric']} | {fmt(r['ours'])} | {fmt(r['baseline'])} | {ratio} | "
            f"{fmt(r['ours_peak_mb'])} | {fmt(r['baseline_peak_mb'])} | {r['date']} | {r['machine']} |"
        )
    lines += ["", "## Setups and commands", ""]
    for r in rows.values():
        lines += [f"- **{r['benchmark']}** — {r['setup']}. Command: `{r['command']}`"]
    return "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    results_path = Path(cfg.results)
    rows: dict[str, dict] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    # Each row names the command that reruns just it, with this run's other overrides.
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
        for row in fn():
            assert isinstance(row, BenchRow), f"{name} returned {type(row).__name__}, not BenchRow"
            rows[row.benchmark] = {
                **asdict(row),
                "date": str(date.today()),
                "machine": machine(),
                "command": " ".join(["python -m bench", f"'only=[{name}]'", *overrides]),
            }
            log.info(
                "%s: ours %s, baseline %s %s",
                row.benchmark,
                fmt(row.ours),
                fmt(row.baseline),
                row.metric,
            )
            # Written after every row: a run cut short (a GPU call's time limit) keeps what it measured.
            results_path.write_text(json.dumps(rows, indent=2) + "\n")
            Path(cfg.report).write_text(render(rows))
    log.info("wrote %s\n%s", cfg.report, OmegaConf.to_yaml(cfg))
    if skipped:
        raise SystemExit(f"benchmarks skipped for a missing library: {skipped}")


if __name__ == "__main__":
    main()
