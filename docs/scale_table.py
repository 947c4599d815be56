"""The ``scale`` block: time and peak memory of every stage of the competition-scale benchmark
(`bench.scale`), a column group per scale, and whether a stage that streams kept its memory flat."""

from __future__ import annotations

from docs.blocks import (
    Context,
    block_record,
    cell,
    commit_cell,
    duration,
    fmt,
    machine_cell,
    parse_options,
)
from ptm.progress import format_count

# A stage that streams should peak at the same memory at every scale; more growth than this
# between the first and the last scale shown is flagged.
STREAM_GROWTH = 1.25


def scale_table(records: list[tuple[str, dict | None]], commands: bool = True) -> str:
    """Every stage's time, peak memory and throughput per scale, from ``python -m bench.scale``
    records named by their paths (None: not measured yet), and the peak's growth between the
    first and the last measured scale."""
    measured = [r for _, r in records if r is not None]
    if not measured:
        names = ", ".join(f"`{rel}`" for rel, _ in records)
        return f"Not measured yet: `python -m bench.scale` (make scale) writes {names}."
    stages = list(dict.fromkeys(s["stage"] for r in measured for s in r["metrics"]["stages"]))
    by_stage = [{s["stage"]: s for s in r["metrics"]["stages"]} for r in measured]
    scales = [r["metrics"]["scale"] for r in measured]
    head = ["stage"]
    for scale in scales:
        head += [f"{scale} time", f"{scale} peak MB", f"{scale} throughput"]
    growth = len(measured) > 1
    head += [f"peak {scales[-1]} / {scales[0]}"] if growth else []
    lines = [cell(*head), "|" + "---|" * len(head)]
    for name in stages:
        about = next(s[name] for s in by_stage if name in s)
        cells = [f"{name}: {about['what']}" + (" (streams)" if about["streams"] else "")]
        for stage in (s.get(name) for s in by_stage):
            cells += _scale_cells(stage)
        if growth:
            cells.append(_growth(by_stage[0].get(name), by_stage[-1].get(name)))
        lines.append(cell(*cells))
    lines += [
        "",
        "Time: the stage's process from start to exit, interpreter and imports included; peak: its "
        "peak RSS; throughput: over the stage's own clock where it keeps one (corpus, pretraining, "
        "loading, prediction), else over the process's time. "
        f"*grows*: a stage that streams peaked more than {STREAM_GROWTH:g}x higher at the larger "
        "scale; ≥: the stage failed there, after reaching that peak.",
        "",
    ]
    lines += [_scale_setup(rel, r) for rel, r in records]
    if commands:
        first = measured[0]
        lines += ["", f"Stage commands ({first['metrics']['scale']}):", ""]
        lines += [f"- {s['stage']}: `{s['command']}`" for s in first["metrics"]["stages"]]
    return "\n".join(lines)


def _scale_cells(stage: dict | None) -> list[str]:
    """Time, peak and throughput of one stage at one scale (not run: dashes; failed: what
    happened, with the time and peak it reached)."""
    if stage is None:
        return ["—", "—", "—"]
    if "error" in stage:
        rate = f"**failed**: {stage['error']}"
    else:
        unit = stage["unit"]
        rate = f"{format_count(stage['amount'])} {unit}, {format_count(stage['rate'])} {unit}/s"
    return [duration(stage["seconds"]), fmt(stage["peak_rss_mb"]), rate]


def _growth(first: dict | None, last: dict | None) -> str:
    """The stage's peak at the last scale over its peak at the first (at least that, where the
    last failed on its way)."""
    if first is None or last is None or "error" in first:
        return "—"
    ratio = last["peak_rss_mb"] / first["peak_rss_mb"]
    text = f"≥ {ratio:.2f}x" if "error" in last else f"{ratio:.2f}x"
    return f"**{text}** *grows*" if last["streams"] and ratio > STREAM_GROWTH else text


def _scale_setup(rel: str, record: dict | None) -> str:
    if record is None:
        return f"- **{rel}** — not measured yet."
    m = record["metrics"]
    docs = " + ".join(f"{n:,} {name}" for name, n in m["documents"].items())
    disk = m["disk_mb"]
    return (
        f"- **{m['scale']}** — {docs} documents ({format_count(sum(m['ids'].values()))} IDs; "
        f"{fmt(disk['corpus'])} MB of text, {fmt(disk['segments'])} MB of segments, "
        f"{fmt(disk['work_dir'])} MB in all on disk); {machine_cell(record)}; "
        f"{(record.get('finished') or '')[:10]}; commit {commit_cell(record)}; "
        f"{duration(record.get('wall_seconds'))} in all. "
        f"Corpus: `{record['extra']['corpus_command']}`. Command: `{record['command']}`"
    )


def scale_block(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = parse_options(options, ctx, commands=True)
    if not args:
        raise ctx.error("scale names no record", "name results/scale-1x.json and the others")
    records = [(a, block_record(a, ctx, "scale") if ctx.path(a).exists() else None) for a in args]
    return scale_table(records, opts["commands"])
