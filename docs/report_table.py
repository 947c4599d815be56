"""The ``report`` and ``plot`` blocks: a ``make report`` record as the label-efficiency table (a row
per task and training-row budget, a column per model, median and min-max over seeds) and as its
curves, drawn to a PNG that carries the digest of the numbers it shows."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import struct
import zlib
from pathlib import Path
from typing import Any

from docs.blocks import Context, block_record, cell, parse_options
from ptm import plots
from ptm.errors import InputError
from ptm.plots import matplotlib_or_none

log = logging.getLogger(__name__)


MODES = {
    "pretrained": "pretrained → fine-tuned",
    "scratch": "same model from scratch",
    "tfidf": "classical baseline",
}


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
    lines = [cell(*head), "|" + "---|" * len(head)]
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
            lines.append(cell(name, rows_text, *cells))
    return "\n".join(lines)


def report_block(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = parse_options(options, ctx, split="", decimals=3, gap=False, also="", also_label="")
    if len(args) != 1:
        raise ctx.error(f"report takes one record, got {args}", "name a report record")
    record = block_record(args[0], ctx, "report")
    rows = _report_rows(record, ctx)
    also = None
    if opts["also"]:
        other = block_record(opts["also"], ctx, "report")
        also = (opts["also_label"] or Path(opts["also"]).stem, _report_rows(other, ctx))
    split = _split(record, rows, opts["split"] or None)
    return report_table(record, rows, split, opts["decimals"], opts["gap"], also)


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
    """The curves of ``data`` (`curve_data`) as a PNG at ``path``; ``source`` goes into its text
    chunks, so a check can tell what it shows."""
    plt = matplotlib_or_none()
    if plt is None:
        raise InputError(
            path, "matplotlib is needed to draw this plot", "pip install 'ptm[report]'"
        )
    plots.draw_curves(plt, data, {task: f"{split} score" for task in data}, path, source)


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


def plot_block(args: list[str], options: dict[str, str], ctx: Context) -> str:
    opts = parse_options(options, ctx, split="")
    if len(args) != 2:
        raise ctx.error(f"plot takes a report record and a PNG path, got {args}", "name both")
    record = block_record(args[0], ctx, "report")
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
