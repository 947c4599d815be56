"""What every block of `make docs` shares (`docs.render`): the block as written, the context it
renders in, its options and records, and the formatting of numbers and cells."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptm.errors import InputError
from ptm.records import read_record

ROOT = Path(__file__).resolve().parents[1]


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


def cell(*cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def parse_options(options: dict[str, str], ctx: Context, **defaults: Any) -> dict[str, Any]:
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


def block_record(rel: str, ctx: Context, kind: str | None = None) -> dict:
    if not ctx.path(rel).exists():
        raise MissingRecord(ctx.path(rel), "no such record", "run the command that writes it")
    record = read_record(ctx.path(rel))
    if kind is not None and record["kind"] != kind:
        raise ctx.error(f"{rel} is a {record['kind']} record", f"name a {kind} record here")
    return record


def machine_cell(record: dict) -> str:
    m = record["machine"]
    return f"{m['label']}; torch {m['torch']}" if m.get("torch") else m["label"]


def commit_cell(record: dict) -> str:
    c = record.get("commit")
    if "legacy" in record.get("extra", {}):
        return "*before records*"
    if not c:
        return "—"
    return c["sha"][:7] + (" (dirty)" if c.get("dirty") else "")
