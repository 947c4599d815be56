"""The ``run`` and ``validation`` blocks: the key figures of pretraining and fine-tuning runs, and
one model against cross-validation and an ensemble (`docs.validation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docs.blocks import Context, block_record, cell, duration, parse_options
from docs.validation import validation_table


def run_table(records: list[tuple[str, dict]], decimals: int = 4) -> str:
    """Key figures of pretraining or fine-tuning records, a row per run (per task for
    fine-tuning), named by the record file."""
    kinds = {r["kind"] for _, r in records}
    if kinds == {"pretrain"}:
        lines = [
            cell(
                "run",
                "held-out loss",
                "accuracy",
                "unigram entropy",
                "steps",
                "tokens",
                "wall",
                "CPU time",
                "machine",
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in records:
            m = r["metrics"]
            lines.append(
                cell(
                    name,
                    _num(m.get("eval/loss"), decimals),
                    _num(m.get("eval/accuracy"), decimals),
                    _num(m.get("unigram_entropy"), decimals),
                    _int(m.get("steps")),
                    _int(m.get("tokens")),
                    duration(r.get("wall_seconds")),
                    duration(r.get("cpu_seconds")),
                    r["machine"]["label"],
                )
            )
        return "\n".join(lines)
    if kinds == {"finetune"}:
        lines = [
            cell("run", "task", "metric", "dev", "test", "steps", "wall", "machine"),
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in records:
            m = r["metrics"]
            for task, t in sorted(m.get("tasks", {}).items()):
                metric = t["metric"]
                dev = _num(t.get("dev", {}).get(metric), decimals)
                test = _num(t.get("test", {}).get(metric), decimals)
                lines.append(
                    cell(
                        name,
                        task,
                        t.get("metric_label", metric),
                        dev,
                        test,
                        _int(m.get("steps")),
                        duration(r.get("wall_seconds")),
                        r["machine"]["label"],
                    )
                )
        return "\n".join(lines)
    raise ValueError(
        f"run tables show pretrain or finetune records of one kind, not {sorted(kinds)}"
    )


def _num(x: Any, decimals: int) -> str:
    return f"{x:.{decimals}f}" if isinstance(x, (int, float)) else "—" if x is None else str(x)


def _int(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "—" if x is None else str(x)


def run_block(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = parse_options(options, ctx, decimals=4)
    if not args:
        raise ctx.error("run names no record", "name one or more pretrain or finetune records")
    records = [(Path(a).stem, block_record(a, ctx)) for a in args]
    try:
        return run_table(records, opts["decimals"])
    except ValueError as e:
        raise ctx.error(str(e), "put pretraining and fine-tuning runs in separate blocks") from e


def validation_block(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = parse_options(options, ctx, single="", cv="", ensemble="", decimals=3)
    if len(args) != 1 or not opts["single"]:
        raise ctx.error(
            "validation names one task and its single= records",
            "write 'validation TASK single=R1,R2 cv=C1,C2 [ensemble=E]'",
        )

    def named(option: str) -> list[tuple[str, dict]]:
        return [(Path(r).stem, block_record(r, ctx)) for r in opts[option].split(",") if r]

    ensemble = named("ensemble")
    try:
        return validation_table(
            args[0], named("single"), named("cv"), ensemble[0] if ensemble else None,
            opts["decimals"],
        )  # fmt: skip
    except ValueError as e:
        raise ctx.error(str(e), "name the task's finetune, cv and ensemble records") from e
