"""The ``benchmarks`` block: the benchmark table of BENCHMARKS.md, from ``BENCHMARKS.json`` (each
row the record of the benchmark run that measured it)."""

from __future__ import annotations

import json
from pathlib import Path

from docs.blocks import Context, cell, commit_cell, fmt, machine_cell, parse_options
from ptm.errors import InputError

BENCHMARKS = "BENCHMARKS.json"
BENCHMARKS_HEADER = """# Benchmarks

Every speed claim of ptm, measured against a baseline in the same run. Each row is a record that
`python -m bench` wrote into `BENCHMARKS.json` (the command, commit, machine, settings, wall and
CPU time behind it), and this table is rendered from that file by `make bench` and `make docs`.
Regenerate with `make bench` (or `python -m bench 'only=[NAME]'` for one benchmark). Peak memory
is the peak RSS of the process that did the work.
"""


def load_benchmarks(path: Path) -> dict[str, dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"unreadable ({e})", "rerun make bench") from e
    return rows


def benchmarks_table(rows: dict[str, dict], match: str | None = None, setups: bool = True) -> str:
    """The benchmark table from BENCHMARKS.json's records (sorted by benchmark name)."""
    chosen = [rows[k] for k in sorted(rows) if match is None or match in k]
    lines = [
        cell(
            "benchmark",
            "metric",
            "ptm",
            "baseline",
            "ratio",
            "ptm peak MB",
            "baseline peak MB",
            "machine",
            "date",
            "commit",
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    legacy = False
    for r in chosen:
        m, extra = r["metrics"], r["extra"]
        ratio = f"**{m['ours'] / m['baseline']:.1f}x**" if m.get("baseline") else "—"
        legacy |= "legacy" in extra
        lines.append(
            cell(
                extra["benchmark"],
                m["metric"],
                fmt(m["ours"]),
                fmt(m.get("baseline")),
                ratio,
                fmt(m.get("ours_peak_mb")),
                fmt(m.get("baseline_peak_mb")),
                machine_cell(r),
                (r.get("finished") or "")[:10],
                commit_cell(r),
            )
        )
    if legacy:
        lines += [
            "",
            "*before records*: written by `python -m bench` before it recorded its commit, "
            "settings and times; rerunning the row's command replaces it with a full record.",
        ]
    if setups:
        lines += ["", "Setups and commands:", ""]
        lines += [
            f"- **{r['extra']['benchmark']}** — {r['extra']['setup']}. Command: `{r['command']}`"
            for r in chosen
        ]
    return "\n".join(lines)


def benchmarks_block(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = parse_options(options, ctx, match=None, setups=True)
    if len(args) > 1:
        raise ctx.error(f"benchmarks takes one file, got {args}", f"name {BENCHMARKS} or none")
    rows = load_benchmarks(ctx.path(args[0] if args else BENCHMARKS))
    return benchmarks_table(rows, opts["match"], opts["setups"])
