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

import logging
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from docs.bench_table import BENCHMARKS_HEADER, benchmarks_block
from docs.blocks import ROOT, Block, Context, MissingRecord
from docs.report_table import plot_block, report_block
from docs.run_table import run_block, validation_block
from docs.scale_table import scale_block
from ptm.errors import InputError

log = logging.getLogger(__name__)
COMMAND = "python -m docs.render"
START = re.compile(r"^<!-- generated: (.*\S)\s*-->\s*$")
END = "<!-- /generated -->"


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose blocks `make docs` renders: README.md, BENCHMARKS.md, docs/**/*.md."""
    found = [root / "README.md", root / "BENCHMARKS.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in found if p.is_file()]


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


RENDERERS: dict[str, Callable[[list[str], dict[str, str], Context], str]] = {
    "benchmarks": benchmarks_block,
    "report": report_block,
    "run": run_block,
    "validation": validation_block,
    "plot": plot_block,
    "scale": scale_block,
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
