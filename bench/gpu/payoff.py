"""How long a pretraining run took to reach a held-out loss: the payoff in GPU minutes.

    python -m bench.gpu.payoff RUN_DIR [--target 2.40] [--started EPOCH] [--out payoff.json]

The payoff recipe (``+experiment=payoff``) reached a held-out MLM loss of 2.40 on two CPU cores
after 10,000 steps and about 50 minutes (docs/RECIPES.md). On a GPU the same recipe runs in a
fraction of that; this reads the run's TensorBoard log (``eval/loss`` and the wall-clock time it
was written at) and records when the loss first reached ``--target``: in seconds from the start
of training (``run.json``, written once data and model are set up, before compilation) and,
with ``--started`` (``date +%s`` before the command), from the command's start. The run is not
stopped there: the loop has no loss target (a run to the recipe's budget shows the whole curve).

Writes a record (`ptm.records`, kind ``payoff``) to ``--out`` (default ``RUN_DIR/payoff.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def time_to_target(run_dir: Path, target: float, started: float | None = None) -> dict[str, Any]:
    """When ``eval/loss`` of the run in ``run_dir`` first was at or below ``target``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    if "eval/loss" not in acc.Tags()["scalars"]:
        raise ValueError(f"{run_dir / 'tb'}: no eval/loss logged; is it a pretraining run?")
    evals = sorted(acc.Scalars("eval/loss"), key=lambda e: e.step)
    training_start = (run_dir / "run.json").stat().st_mtime
    first = next((e for e in evals if e.value <= target), None)
    out: dict[str, Any] = {
        "target": target,
        "reached": first is not None,
        "evaluations": len(evals),
        "final_step": evals[-1].step,
        "final_eval_loss": evals[-1].value,
        "seconds_to_final_eval": evals[-1].wall_time - training_start,
    }
    if first is not None:
        out |= {
            "step": first.step,
            "eval_loss": first.value,
            "seconds_from_training_start": first.wall_time - training_start,
        }
        if started is not None:
            out["seconds_from_command_start"] = first.wall_time - started
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu.payoff", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="a pretraining run folder")
    parser.add_argument("--target", type=float, default=2.40, help="held-out MLM loss to reach")
    parser.add_argument("--started", type=float, default=None, help="the command's start (epoch)")
    parser.add_argument("--out", type=Path, default=None, help="the record (RUN_DIR/payoff.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    from ptm.records import RunClock, machine, write_record

    clock = RunClock.start()
    metrics = time_to_target(args.run_dir, args.target, args.started)
    run = json.loads((args.run_dir / "run.json").read_text())
    summary = run["summary"]
    path = write_record(
        args.out or args.run_dir / "payoff.json",
        kind="payoff",
        config=run["config"],
        metrics=metrics,
        clock=clock,
        machine_info=machine(summary.get("device"), summary.get("precision")),
        extra={"run_dir": str(args.run_dir), "run_summary": summary},
    )
    log.info("%s: %s", path, json.dumps(metrics))


if __name__ == "__main__":
    main()
