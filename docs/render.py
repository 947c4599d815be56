"""Render the docs' result tables and plots from result records, between markers
(``make docs``; ``make bench`` renders BENCHMARKS.md through the same code).

Render:   python -m docs.render                 # rewrites every block that differs (= make docs)
Check:    python -m docs.render check=true      # exit 2, naming each block out of date

A number typed into a document drifts from the measurement it came from; a number rendered from
the record the measuring command wrote (`ptm.records`) cannot. In ``README.md``, ``BENCHMARKS.md``
and ``docs/**/*.md`` a block

    <!-- generated: report results/report-payoff.json decimals=3 -->
    ...whatever is here is replaced...
    <!-- /generated -->

is re-rendered from the records it names (paths relative to the repository root); the text
outside the blocks is left as written. ``tests/test_docs_render.py`` fails when a block differs
from what its records render. The blocks:

* ``benchmarks [BENCHMARKS.json] [match=TEXT] [setups=false]`` — the benchmark table (ptm against
  its baseline, ratio, peak memory, machine, date, commit) and each row's setup and command;
* ``report RECORD [split=test] [decimals=3] [gap=true] [also=RECORD also_label=TEXT]`` — a
  ``make report`` record as the label-efficiency table: a row per task and training-row budget,
  a column per model, median (min-max over seeds), the best median in bold; ``also`` adds the
  pretrained column of a second report;
* ``run RECORD [RECORD ...] [decimals=4]`` — the key figures of pretraining runs (held-out loss
  and accuracy, unigram entropy, steps, tokens, wall and CPU time, machine) or of fine-tuning runs
  (dev / test score per task);
* ``scale RECORD [RECORD ...] [commands=true]`` — ``python -m bench.scale`` records (a missing
  one is a scale not measured yet) side by side: time, peak memory and throughput of every stage
  per scale, and how each stage's peak grew from the first scale to the last (flagged where a
  stage that streams grew); below, each scale's corpus, machine and commands;
* ``validation TASK single=R,.. cv=C,.. [ensemble=E]`` — one model against cross-validation and
  an ensemble: each method's estimate of its test score (dev; out of fold) and its test score,
  over the seeds (`docs.validation`);
* ``plot RECORD PNG [split=test]`` — draws a report's label-efficiency curves to ``PNG``
  (matplotlib, the ``report`` extra) and links it. The PNG carries the digest of the numbers it
  shows, so a check compares that digest, not pixels (which differ between matplotlib builds).

Tables are deterministic: fixed decimals, rows in a fixed order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import statistics
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docs.validation import validation_table
from ptm.errors import InputError
from ptm.progress import format_count
from ptm.records import read_record

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python -m docs.render"
START = re.compile(r"^<!-- generated: (.*\S)\s*-->\s*$")
END = "<!-- /generated -->"
BENCHMARKS = "BENCHMARKS.json"
BENCHMARKS_HEADER = """# Benchmarks

Every speed claim of ptm, measured against a baseline in the same run. Each row is a record that
`python -m bench` wrote into `BENCHMARKS.json` (the command, commit, machine, settings, wall and
CPU time behind it), and this table is rendered from that file by `make bench` and `make docs`.
Regenerate with `make bench` (or `python -m bench 'only=[NAME]'` for one benchmark). Peak memory
is the peak RSS of the process that did the work.
"""
MODES = {
    "pretrained": "pretrained → fine-tuned",
    "scratch": "same model from scratch",
    "tfidf": "classical baseline",
}


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose blocks `make docs` renders: README.md, BENCHMARKS.md, docs/**/*.md."""
    found = [root / "README.md", root / "BENCHMARKS.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in found if p.is_file()]


# ----------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    name: str
    args: list[str]
    options: dict[str, str]
    spec: str  # as written in the start marker
    start: int  # 0-based line of the start marker
    end: int  # 0-based line of the end marker


@dataclass
class Context:
    """What a renderer needs besides its arguments: where paths start, the document it renders
    into, and whether it may write files (plots) or only check them."""

    root: Path
    doc: Path
    check: bool
    line: int = 0  # 1-based line of the block's start marker, for errors
    stale: list[str] = field(default_factory=list)  # files found out of date (check mode)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def error(self, message: str, fix: str) -> InputError:
        return InputError(self.doc, message, fix, line=self.line)


def parse_blocks(text: str, doc: Path) -> list[Block]:
    lines = text.split("\n")
    blocks, start = [], None
    for i, line in enumerate(lines):
        if START.match(line):
            if start is not None:
                raise InputError(doc, "a generated block starts inside another", _FIX, line=i + 1)
            start = i
        elif line.strip() == END:
            if start is None:
                raise InputError(doc, f"{END} without a start marker", _FIX, line=i + 1)
            spec = START.match(lines[start]).group(1)
            try:
                words = shlex.split(spec)
            except ValueError as e:
                raise InputError(doc, f"generated block: {e}", _FIX, line=start + 1) from e
            args = [w for w in words[1:] if "=" not in w]
            options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
            blocks.append(Block(words[0], args, options, spec, start, i))
            start = None
    if start is not None:
        raise InputError(doc, f"generated block without {END}", _FIX, line=start + 1)
    return blocks


_FIX = f"write a block as '<!-- generated: NAME ARGS -->' ... '{END}' (see docs/render.py)"


def render_text(
    text: str, doc: Path, root: Path = ROOT, check: bool = False
) -> tuple[str, list[str]]:
    """``text`` with every block rendered from its records, and the files (plots) out of date
    (check mode; otherwise they are rewritten)."""
    lines = text.split("\n")
    out, pos, stale = [], 0, []
    for block in parse_blocks(text, doc):
        ctx = Context(root=root, doc=doc, check=check, line=block.start + 1)
        body = render_block(block, ctx)
        stale += ctx.stale
        out += lines[pos : block.start + 1]
        out += ["", *body.strip("\n").split("\n"), ""]
        pos = block.end
    out += lines[pos:]
    return "\n".join(out), stale


def render_block(block: Block, ctx: Context) -> str:
    renderer = RENDERERS.get(block.name)
    if renderer is None:
        raise ctx.error(f"no renderer {block.name!r}", f"use one of {sorted(RENDERERS)}")
    missing = _missing_records(block, ctx)
    # A measurement not made yet says so, rather than leaving a number behind: a run table shows
    # the runs that were measured and names the rest; any other block names what it lacks.
    note = "*Not measured yet: no record " + ", ".join(f"`{m}`" for m in missing)
    note += " (see results/README.md).*"
    present = [a for a in block.args if a not in missing]
    args = present if block.name == "run" and present else block.args
    try:
        body = renderer(args, dict(block.options), ctx)
    except MissingRecord:
        return note
    return f"{body}\n\n{note}" if missing else body


def _missing_records(block: Block, ctx: Context) -> list[str]:
    """The records a block names (arguments and options ending in ``.json``, comma lists
    included) that do not exist; the ``scale`` block shows missing scales itself."""
    if block.name in ("scale", "benchmarks"):
        return []
    named = [*block.args, *block.options.values()]
    paths = [x for item in named for x in item.split(",") if x.endswith(".json")]
    return [x for x in paths if not ctx.path(x).is_file()]


def render_file(path: Path, root: Path = ROOT, check: bool = False) -> list[str]:
    """Render (or, with ``check``, compare) one document; returns what is out of date."""
    text = path.read_text(encoding="utf-8")
    new, stale = render_text(text, path, root, check)
    if new != text:
        if check:
            stale.append(str(path))
        else:
            path.write_text(new, encoding="utf-8")
            log.info("rendered %s", path)
    return stale


def run(check: bool = False, root: Path = ROOT, paths: list[Path] | None = None) -> list[str]:
    stale = []
    for path in documents(root) if paths is None else paths:
        stale += render_file(path, root, check)
    return stale


# ----------------------------------------------------------------------------- formatting


def fmt(x: float | None) -> str:
    """Throughputs and sizes: thousands separated, three significant digits below 100."""
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def duration(seconds: float | None) -> str:
    """``47 min 12 s``, ``2 h 05 min``, ``38 s``."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _cell(*cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _options(options: dict[str, str], ctx: Context, **defaults: Any) -> dict[str, Any]:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ctx.error(f"unknown option {unknown}", f"this block takes {sorted(defaults)}")
    out = {}
    for key, default in defaults.items():
        value = options.get(key)
        if value is None:
            out[key] = default
        elif isinstance(default, bool):
            if value not in ("true", "false"):
                raise ctx.error(f"{key}={value}", f"use {key}=true or {key}=false")
            out[key] = value == "true"
        elif isinstance(default, int):
            if not value.isdigit():
                raise ctx.error(f"{key}={value}", f"use a whole number for {key}")
            out[key] = int(value)
        else:
            out[key] = value
    return out


class MissingRecord(InputError):
    """A block names a record that does not exist (yet): `render_block` says so in the doc."""


def _record(rel: str, ctx: Context, kind: str | None = None) -> dict:
    if not ctx.path(rel).exists():
        raise MissingRecord(ctx.path(rel), "no such record", "run the command that writes it")
    record = read_record(ctx.path(rel))
    if kind is not None and record["kind"] != kind:
        raise ctx.error(f"{rel} is a {record['kind']} record", f"name a {kind} record here")
    return record


# ----------------------------------------------------------------------------- benchmarks


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
        _cell(
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
            _cell(
                extra["benchmark"],
                m["metric"],
                fmt(m["ours"]),
                fmt(m.get("baseline")),
                ratio,
                fmt(m.get("ours_peak_mb")),
                fmt(m.get("baseline_peak_mb")),
                _bench_machine(r),
                (r.get("finished") or "")[:10],
                _commit(r),
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


def _bench_machine(record: dict) -> str:
    m = record["machine"]
    return f"{m['label']}; torch {m['torch']}" if m.get("torch") else m["label"]


def _commit(record: dict) -> str:
    c = record.get("commit")
    if "legacy" in record.get("extra", {}):
        return "*before records*"
    if not c:
        return "—"
    return c["sha"][:7] + (" (dirty)" if c.get("dirty") else "")


def _benchmarks(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = _options(options, ctx, match=None, setups=True)
    if len(args) > 1:
        raise ctx.error(f"benchmarks takes one file, got {args}", f"name {BENCHMARKS} or none")
    rows = load_benchmarks(ctx.path(args[0] if args else BENCHMARKS))
    return benchmarks_table(rows, opts["match"], opts["setups"])


def write_benchmarks_report(report: Path, results: Path, root: Path = ROOT) -> None:
    """BENCHMARKS.md (``report``) with its benchmark table rendered from ``results``: the
    document is created with a header when absent; an existing one keeps its prose and must have
    a ``benchmarks`` block."""
    rel = os.path.relpath(results.resolve(), root.resolve())
    spec = f"benchmarks {results.resolve() if rel.startswith('..') else rel}"
    if not report.is_file():
        report.write_text(f"{BENCHMARKS_HEADER}\n<!-- generated: {spec} -->\n{END}\n")
    text = report.read_text(encoding="utf-8")
    if not any(b.name == "benchmarks" for b in parse_blocks(text, report)):
        raise InputError(
            report,
            "no benchmarks block to render the table into",
            f"add '<!-- generated: {spec} -->' and '{END}' lines, or remove the file",
        )
    render_file(report, root)


# ----------------------------------------------------------------------------- report


def _report_rows(record: dict, ctx: Context) -> list[dict]:
    rows = record.get("per_seed")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ctx.error(
            "the report record has no per_seed list of runs",
            "write report records with per_seed=<report.json's rows>",
        )
    return rows


def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("status", "ok") == "ok"]


def _split(record: dict, rows: list[dict], split: str | None) -> str:
    if split:
        return split
    if record.get("metrics", {}).get("split"):
        return record["metrics"]["split"]
    ok = _ok(rows)
    return "test" if ok and all("test" in r for r in ok) else "dev"


def _metric_label(record: dict, rows: list[dict], task: str) -> str | None:
    tasks = record.get("metrics", {}).get("tasks", {})
    if isinstance(tasks.get(task), dict) and tasks[task].get("metric_label"):
        return tasks[task]["metric_label"]
    return next(
        (r["metric_label"] for r in rows if r["task"] == task and "metric_label" in r), None
    )


def _modes(rows: list[dict]) -> list[str]:
    present = {r["mode"] for r in rows}
    return [m for m in MODES if m in present] + sorted(present - set(MODES))


def _budgets(rows: list[dict], task: str) -> list[int | None]:
    found = {r.get("budget") for r in rows if r["task"] == task}
    return sorted(b for b in found if b is not None) + ([None] if None in found else [])


def _median_cell(runs: list[dict], split: str, decimals: int) -> tuple[str, str, float | None]:
    """(median, the rest: spread and failures, median value) of one table cell."""
    good = [r for r in _ok(runs) if split in r]
    med_text, rest, med = "—", "", None
    if good:
        values = [r[split] for r in good]
        med, lo, hi = statistics.median(values), min(values), max(values)
        med_text = f"{med:.{decimals}f}"
        if f"{lo:.{decimals}f}" != f"{hi:.{decimals}f}":
            rest = f" ({lo:.{decimals}f}–{hi:.{decimals}f})"
    if len(good) < len(runs):
        rest += f", {len(runs) - len(good)} of {len(runs)} failed"
    return med_text, rest, med


def report_table(
    record: dict,
    rows: list[dict],
    split: str,
    decimals: int = 3,
    gap: bool = False,
    also: tuple[str, list[dict]] | None = None,
) -> str:
    """The label-efficiency table of a report record (see the module docstring)."""
    modes = _modes(rows)
    head = ["task", "training rows", *(MODES.get(m, m) for m in modes)]
    head += [also[0]] if also else []
    head += ["pretrained − scratch"] if gap else []
    lines = [_cell(*head), "|" + "---|" * len(head)]
    for task in dict.fromkeys(r["task"] for r in rows):
        label = _metric_label(record, rows, task)
        for i, budget in enumerate(_budgets(rows, task)):
            at = [r for r in rows if r["task"] == task and r.get("budget") == budget]
            cells, medians = [], {}
            for mode in modes:
                runs = [r for r in at if r["mode"] == mode]
                med_text, rest, medians[mode] = _median_cell(runs, split, decimals)
                cells.append((med_text, rest))
            shown = {m: c[0] for m, c in zip(modes, cells, strict=True) if medians[m] is not None}
            best = max(shown.values(), key=float, default=None) if len(modes) > 1 else None
            cells = [f"**{t}**{rest}" if t == best else t + rest for t, rest in cells]
            if also:
                other = [
                    r
                    for r in also[1]
                    if r["task"] == task and r.get("budget") == budget and r["mode"] == "pretrained"
                ]
                med_text, rest, _ = _median_cell(other, split, decimals)
                cells.append(med_text + rest if other else "—")
            if gap:
                p, s = medians.get("pretrained"), medians.get("scratch")
                cells.append(f"{p - s:+.{decimals}f}" if p is not None and s is not None else "—")
            counts = [r["rows"] for r in at if r.get("rows")]
            rows_text = f"{max(counts):,}" if counts else "—"
            if budget is None:
                rows_text = f"all ({rows_text})" if counts else "all"
            name = f"{task} ({label})" if i == 0 and label else task
            lines.append(_cell(name, rows_text, *cells))
    return "\n".join(lines)


def _report(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = _options(options, ctx, split="", decimals=3, gap=False, also="", also_label="")
    if len(args) != 1:
        raise ctx.error(f"report takes one record, got {args}", "name a report record")
    record = _record(args[0], ctx, "report")
    rows = _report_rows(record, ctx)
    also = None
    if opts["also"]:
        other = _record(opts["also"], ctx, "report")
        also = (opts["also_label"] or Path(opts["also"]).stem, _report_rows(other, ctx))
    split = _split(record, rows, opts["split"] or None)
    return report_table(record, rows, split, opts["decimals"], opts["gap"], also)


# ----------------------------------------------------------------------------- runs


def run_table(records: list[tuple[str, dict]], decimals: int = 4) -> str:
    """Key figures of pretraining or fine-tuning records, a row per run (per task for
    fine-tuning), named by the record file."""
    kinds = {r["kind"] for _, r in records}
    if kinds == {"pretrain"}:
        lines = [
            _cell(
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
                _cell(
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
            _cell("run", "task", "metric", "dev", "test", "steps", "wall", "machine"),
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in records:
            m = r["metrics"]
            for task, t in sorted(m.get("tasks", {}).items()):
                metric = t["metric"]
                dev = _num(t.get("dev", {}).get(metric), decimals)
                test = _num(t.get("test", {}).get(metric), decimals)
                lines.append(
                    _cell(
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


def _run(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = _options(options, ctx, decimals=4)
    if not args:
        raise ctx.error("run names no record", "name one or more pretrain or finetune records")
    records = [(Path(a).stem, _record(a, ctx)) for a in args]
    try:
        return run_table(records, opts["decimals"])
    except ValueError as e:
        raise ctx.error(str(e), "put pretraining and fine-tuning runs in separate blocks") from e


# ----------------------------------------------------------------------------- scale

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
    lines = [_cell(*head), "|" + "---|" * len(head)]
    for name in stages:
        about = next(s[name] for s in by_stage if name in s)
        cells = [f"{name}: {about['what']}" + (" (streams)" if about["streams"] else "")]
        for stage in (s.get(name) for s in by_stage):
            cells += _scale_cells(stage)
        if growth:
            cells.append(_growth(by_stage[0].get(name), by_stage[-1].get(name)))
        lines.append(_cell(*cells))
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
        f"{fmt(disk['work_dir'])} MB in all on disk); {_bench_machine(record)}; "
        f"{(record.get('finished') or '')[:10]}; commit {_commit(record)}; "
        f"{duration(record.get('wall_seconds'))} in all. "
        f"Corpus: `{record['extra']['corpus_command']}`. Command: `{record['command']}`"
    )


def _scale(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = _options(options, ctx, commands=True)
    if not args:
        raise ctx.error("scale names no record", "name results/scale-1x.json and the others")
    records = [(a, _record(a, ctx, "scale") if ctx.path(a).exists() else None) for a in args]
    return scale_table(records, opts["commands"])


# ----------------------------------------------------------------------------- plots


def curve_data(rows: list[dict], split: str) -> dict[str, dict[str, list[list[float]]]]:
    """task -> model -> [[training rows, median, min, max], ...]: what the plot draws."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        for mode in _modes([r for r in rows if r["task"] == task]):
            points: dict[int, list[float]] = {}
            for r in _ok(rows):
                if r["task"] == task and r["mode"] == mode and r.get("rows") and split in r:
                    points.setdefault(r["rows"], []).append(r[split])
            if points:
                out.setdefault(task, {})[MODES.get(mode, mode)] = [
                    [x, statistics.median(v), min(v), max(v)] for x, v in sorted(points.items())
                ]
    return out


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def draw_curves(data: dict, split: str, path: Path, source: str) -> None:
    """A panel per task: median line and min-max band per model over the training rows (log
    scale). ``source`` goes into the PNG's text chunks, so a check can tell what it shows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise InputError(
            path, "matplotlib is needed to draw this plot", "pip install 'ptm[report]'"
        ) from e
    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 3.6), squeeze=False)
    for ax, (task, models) in zip(axes[0], data.items(), strict=True):
        for model, points in models.items():
            xs, med, lo, hi = zip(*points, strict=True)
            line = ax.plot(xs, med, marker="o", label=model)[0]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training rows")
        ax.set_ylabel(f"{split} score")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None, "Source": source})
    plt.close(fig)


def png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG (no imaging library needed)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return {}
    out, pos = {}, 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        pos += 12 + length
    return out


def _plot(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = _options(options, ctx, split="")
    if len(args) != 2:
        raise ctx.error(f"plot takes a report record and a PNG path, got {args}", "name both")
    record = _record(args[0], ctx, "report")
    rows = _report_rows(record, ctx)
    split = _split(record, rows, opts["split"] or None)
    data = curve_data(rows, split)
    if not data:
        raise ctx.error(f"{args[0]} has no {split} scores with training rows", "check the record")
    png = ctx.path(args[1])
    source = f"{args[0]} {split} sha256:{digest(data)}"
    if not png.is_file() or png_text(png).get("Source") != source:
        if ctx.check:
            ctx.stale.append(f"{png} (not drawn from {args[0]})")
        else:
            draw_curves(data, split, png, source)
            log.info("drew %s", png)
    link = os.path.relpath(png, ctx.doc.parent)
    return (
        f"![{split} score by labelled training rows: median and min–max over seeds, "
        f"from {args[0]}]({link})"
    )


def _validation(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = _options(options, ctx, single="", cv="", ensemble="", decimals=3)
    if len(args) != 1 or not opts["single"]:
        raise ctx.error(
            "validation names one task and its single= records",
            "write 'validation TASK single=R1,R2 cv=C1,C2 [ensemble=E]'",
        )

    def named(option: str) -> list[tuple[str, dict]]:
        return [(Path(r).stem, _record(r, ctx)) for r in opts[option].split(",") if r]

    ensemble = named("ensemble")
    try:
        return validation_table(
            args[0], named("single"), named("cv"), ensemble[0] if ensemble else None,
            opts["decimals"],
        )  # fmt: skip
    except ValueError as e:
        raise ctx.error(str(e), "name the task's finetune, cv and ensemble records") from e


RENDERERS: dict[str, Callable[[list[str], dict[str, str], Context], str]] = {
    "benchmarks": _benchmarks,
    "report": _report,
    "run": _run,
    "validation": _validation,
    "plot": _plot,
    "scale": _scale,
}


def main(argv: list[str]) -> int:
    """``check=true`` only compares; nothing else is taken (``make docs`` passes it through)."""
    check = False
    for arg in argv:
        key, _, value = arg.partition("=")
        if key != "check" or value not in ("true", "false"):
            print(f"error: {COMMAND}: unknown argument {arg!r} — use check=true", file=sys.stderr)
            return 2
        check = value == "true"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stale = run(check)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if stale:
        print(
            f"error: out of date with the records: {', '.join(stale)} — run `{COMMAND}` "
            "(make docs)",
            file=sys.stderr,
        )
        return 2
    if check:
        log.info("every generated block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
