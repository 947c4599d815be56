"""Result records: the small JSON file a measuring command leaves, so that every number the docs
quote can be traced to the command, code, machine and settings that produced it.

A record is plain JSON (readable with no ptm installed) and small (a few kilobytes: no weights,
no per-step history):

* ``schema``, ``kind`` (pretrain, finetune, report, bench, gpu_check, ...), ``command`` — the
  command line as a user types it (``python -m pretrain +experiment=payoff``);
* ``commit`` — the git commit of the code and whether the tree had uncommitted changes (null
  outside a git checkout);
* ``machine`` — CPU model, cores, torch's intra-op threads, the instruction-set extensions that
  change CPU speed (AMX, AVX-512, AVX2), GPUs, precision, versions, and a short ``label``
  ("Intel Xeon (AMX) x2, bf16", "NVIDIA H200, bf16") that docs name a timing by;
* ``started`` / ``finished`` (UTC), ``wall_seconds`` and ``cpu_seconds`` (user + system time of
  this process and the child processes it waited for: the CPU time divided by the wall time
  shows how many cores the work really used);
* ``metrics``, ``per_seed`` (where there are seeds), ``config`` (resolved), ``extra``.

Paths under the working directory are written relative to it and the home directory as ``~``,
so a record says ``outputs/pretrain/...`` rather than where one user's checkout happened to be.
A non-finite metric is written as the string ``"nan"`` / ``"inf"`` (JSON has no such numbers).

A run writes ``record.json`` into its run folder; the records behind the numbers in the docs are
copied into the repository's ``results/`` with

    python -m ptm.records add outputs/pretrain/latest pretrain-payoff   # -> results/pretrain-payoff.json
    make record RUN=outputs/pretrain/latest NAME=pretrain-payoff

and ``make docs`` renders the tables between ``<!-- generated: ... -->`` markers from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import math
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ptm.errors import InputError

log = logging.getLogger(__name__)
SCHEMA = 1
RECORD = "record.json"  # the name a run folder's record has
# Tracked files that measuring commands write: records and the documents rendered from them (a
# tree whose only changes are these still runs the commit's code).
RECORD_OUTPUTS = ("BENCHMARKS.json", "BENCHMARKS.md", "README.md", "results/", "docs/")
RENDERED_SUFFIXES = (".json", ".md", ".png")
ROOT = Path(__file__).resolve().parents[1]  # the checkout ptm runs from (editable install)
RESULTS = ROOT / "results"
# CPU features that decide CPU training speed: AMX runs bf16 matrix products ~3x faster than
# AVX-512 (BENCHMARKS.md's attention rows); without AVX-512, fp32 kernels fall back to AVX2.
ISA_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
# A record past this size holds something it should not (a per-step history, predictions).
LARGE_BYTES = 256 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VENDORS = ("Intel", "AMD", "Apple", "Ampere", "ARM", "Neoverse", "Graviton")


# ----------------------------------------------------------------------------- the machine


def machine(device: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """What a timing depends on, with a short ``label``. ``device`` is the one the run used
    ("cpu", "cuda", "cuda:1"; None: a GPU if there is one); ``precision`` as the run resolved it
    (fp32, bf16, fp16), or None where it does not apply."""
    import torch  # here, not at import: reading records needs no torch

    cpu, flags = _cpu()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = torch.cuda.get_device_name(0) if gpus else None
    on_gpu = (device is None and gpus > 0) or (device is not None and device.startswith("cuda"))
    info = {
        "label": "",
        "cpu": cpu,
        "isa": {name: name in flags for name in ISA_FLAGS} if flags else None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "gpu_count": gpus,
        "device": ("cuda" if on_gpu else "cpu") if device is None else device,
        "precision": precision,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "platform": platform.platform(terse=True),
    }
    info["label"] = machine_label(info)
    return info


def machine_label(info: dict[str, Any]) -> str:
    """ "Intel Xeon (AMX) x2, bf16", "AMD EPYC x2, fp32", "NVIDIA H200, bf16": the words a table
    names a timing's machine by (from a `machine` dict)."""
    if str(info.get("device") or "cpu").startswith("cuda") and info.get("gpu"):
        count = info.get("gpu_count") or 1
        label = info["gpu"] + (f" x{count}" if count > 1 else "")
    else:
        amx = " (AMX)" if (info.get("isa") or {}).get("amx_bf16") else ""
        label = (
            f"{short_cpu_name(info.get('cpu') or 'unknown CPU')}{amx} x{info.get('usable_cores')}"
        )
    return f"{label}, {info['precision']}" if info.get("precision") else label


def short_cpu_name(name: str) -> str:
    """``Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz`` -> ``Intel Xeon``; ``AMD EPYC 7B13`` ->
    ``AMD EPYC``: vendor and family, which is what decides the speed class."""
    words = re.sub(r"\((R|TM)\)|\bCPU\b.*$|\b\d+-Core\b|\bProcessor\b", " ", name, flags=re.I)
    parts = words.split()
    start = next((i for i, w in enumerate(parts) if w in _VENDORS), 0)
    return " ".join(parts[start : start + 2]) or name.strip()


def _cpu() -> tuple[str, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (Linux), else what platform knows."""
    path = Path("/proc/cpuinfo")
    name, flags = "", set()
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return name or platform.processor() or platform.machine() or "unknown CPU", flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- the code


def commit(root: Path = ROOT) -> dict[str, Any] | None:
    """``{"sha": ..., "dirty": bool, "changed": [...]}`` of the git checkout at ``root``, or None
    when it is not one (an installed ptm) or git is missing. ``changed`` lists up to 20 tracked
    files with uncommitted changes: what a dirty record's numbers may also depend on.

    A copy of the tree without ``.git`` (what a GPU machine is handed) says nothing of its
    commit; there ``PTM_COMMIT=<sha>`` names it, recorded as declared (``"dirty": null``)."""
    try:
        sha = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (FileNotFoundError, subprocess.CalledProcessError):
        declared = os.environ.get("PTM_COMMIT")
        return (
            {"sha": declared, "dirty": None, "changed": [], "from": "PTM_COMMIT"}
            if declared
            else None
        )
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    # Records and the docs rendered from them are outputs, not code: a benchmark writing
    # BENCHMARKS.json as it goes does not make the code it measures another.
    code = [
        c for c in changed if not (c.startswith(RECORD_OUTPUTS) and c.endswith(RENDERED_SUFFIXES))
    ]
    return {"sha": sha.strip(), "dirty": bool(code), "changed": code[:20]}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user types it: ``python -m pretrain +experiment=payoff`` (the
    interpreter's path shortened to ``python``, arguments quoted for a shell)."""
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    if not argv:
        return "python"
    words = ["python", *argv[1:]] if Path(argv[0]).name.startswith("python") else argv
    return _portable_text(shlex.join(words))


# ----------------------------------------------------------------------------- time


@dataclass(frozen=True)
class RunClock:
    """Started when the measured work starts; `elapsed` gives the record's time fields."""

    started: datetime
    wall: float  # time.perf_counter() at the start
    cpu: float  # user + system seconds of this process and its waited-for children at the start

    @classmethod
    def start(cls) -> RunClock:
        return cls(datetime.now(timezone.utc), time.perf_counter(), cpu_seconds())

    def elapsed(self) -> dict[str, Any]:
        return {
            "started": _stamp(self.started),
            "finished": _stamp(datetime.now(timezone.utc)),
            "wall_seconds": round(time.perf_counter() - self.wall, 2),
            "cpu_seconds": round(cpu_seconds() - self.cpu, 2),
        }


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------- records


def make_record(
    *,
    kind: str,
    config: Any,
    metrics: dict[str, Any],
    clock: RunClock,
    command: str | None = None,
    per_seed: Any = None,
    machine_info: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record as a dict (see the module docstring): ``command`` defaults to this process's
    command line, ``machine_info`` to `machine()` (pass ``machine(device, precision)`` for the
    label to name the device and precision the run used)."""
    if not _NAME.fullmatch(kind):
        raise ValueError(f"record kind {kind!r}: use a short name such as 'pretrain'")
    record = {
        "schema": SCHEMA,
        "kind": kind,
        "command": command if command is not None else command_line(),
        "commit": commit(),
        "machine": machine_info if machine_info is not None else machine(),
        **clock.elapsed(),
        "metrics": metrics,
    }
    if per_seed is not None:
        record["per_seed"] = per_seed
    record["config"] = config
    if extra is not None:
        record["extra"] = extra
    return plain(record)


def write_record(path: str | Path, **fields: Any) -> Path:
    """`make_record` (same keyword arguments) written to ``path`` (a run folder's
    ``record.json``), whole or not at all; returns the path."""
    return dump(path, make_record(**fields))


def dump(path: str | Path, record: dict[str, Any]) -> Path:
    """Write a record (or any plain JSON value) as records are written: indented, key order
    kept, UTF-8, replacing ``path`` only once complete."""
    path = Path(path)
    text = json.dumps(plain(record), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    if len(text.encode()) > LARGE_BYTES:
        log.warning("%s: record of %d kB; records should stay small", path, len(text) // 1024)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def plain(value: Any) -> Any:
    """``value`` as JSON-native values: dataclasses and mappings to dicts (string keys), tuples
    and sets to lists, numpy/torch scalars to numbers, paths to portable strings, non-finite
    floats to "nan"/"inf"/"-inf"."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, (bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, Path)):
        return _portable_text(str(value))
    if hasattr(value, "item"):  # numpy and torch scalars
        return plain(value.item())
    raise TypeError(f"a record holds plain values; got {type(value).__name__}: {value!r}")


def _portable_text(text: str) -> str:
    cwd, home = str(Path.cwd()), str(Path.home())
    if cwd != "/":
        text = text.replace(cwd + "/", "")
    if home != "/":
        text = text.replace(home + "/", "~/")
    return text


def read_record(path: str | Path) -> dict[str, Any]:
    """A record file, checked to be one (a run folder reads its ``record.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    if not path.is_file():
        raise InputError(
            path, "no such record", "point at a run folder that wrote record.json, or at a record"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not readable JSON ({e})", "copy the record again") from e
    if not isinstance(record, dict) or "kind" not in record or "schema" not in record:
        raise InputError(path, "not a result record (no schema or kind)", "point at a record")
    if record["schema"] > SCHEMA:
        raise InputError(
            path, f"record schema {record['schema']} is newer than {SCHEMA}", "update ptm"
        )
    return record


def add(source: str | Path, name: str, results: Path = RESULTS) -> Path:
    """Copy the record of ``source`` (a run folder or a record file) to ``results/<name>.json``,
    where the docs render it from; returns the new path."""
    name = name.removesuffix(".json")
    if not _NAME.fullmatch(name):
        raise InputError(None, f"record name {name!r}", "use letters, digits, '.', '_' and '-'")
    src = Path(source) / RECORD if Path(source).is_dir() else Path(source)
    record = read_record(src)
    dest = results / f"{name}.json"
    replaced = dest.is_file()
    results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    log.info(
        "%s record (%s) -> %s%s",
        record["kind"],
        record.get("command", "?"),
        dest,
        " (replaced the one there)" if replaced else "",
    )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptm.records", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    put = sub.add_parser("add", help="copy a run's record into results/ (under a name)")
    put.add_argument("source", help="a run folder (its record.json) or a record file")
    put.add_argument("name", help="results/<name>.json")
    put.add_argument("--results", type=Path, default=RESULTS, help="default: %(default)s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dest = add(args.source, args.name, args.results)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
