"""One error type for bad user input, so every stage can report it as a single line.

A user who feeds a malformed corpus should read *which file, which line, what is wrong and what
to do* — not a traceback from deep inside numpy or tokenizers. Library code raises `InputError`;
the stage entry points turn it into a one-line message and a non-zero exit
(`exit_on_input_error`).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)
STATUS_FILE = "status.json"


class InputError(ValueError):
    """Bad input the user can fix: names the file (and line), the problem and the fix."""

    def __init__(
        self, path: str | Path | None, message: str, fix: str, line: int | None = None
    ) -> None:
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message} — {fix}")
        self.path = None if path is None else Path(path)
        self.line = line


class DivergenceError(RuntimeError):
    """Training diverged; the message names the step, the learning rate and the likely fix."""


class DiskFullError(InputError):
    """The disk filled up while writing ``path`` (``ENOSPC`` or a quota): how many bytes the
    output needs and how many are free, so the user knows how much to clear
    (`ptm.files.stop_on_full_disk` raises it, after removing the partial output)."""

    def __init__(self, path: str | Path, needed: int, free: int) -> None:
        # ``needed`` is an estimate; one below what is free now (the partial output was removed)
        # says too little, so the message says only that more than that is needed.
        need = f"about {_size(needed)}" if needed > free else f"more than {_size(free)}"
        super().__init__(
            path,
            f"the disk filled up while writing this: {need} needed, {_size(free)} free",
            "free space there, or write elsewhere (paths.output_dir, paths.data_dir),"
            " and run again",
        )
        self.needed, self.free = needed, free


def _size(n: int) -> str:
    """``1,946,112 bytes (1.9 MB)``: exact for scripts, readable for people."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def exit_on_input_error(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Report an `InputError` or `DivergenceError` escaping a Hydra job as one line.

    A single run prints ``error: ...`` on stderr and exits with status 2. In a multirun sweep the
    failure is logged and written to the job's ``status.json`` instead, so one diverging job
    does not stop the others and the sweep summary can mark it failed.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        job_dir = _multirun_job_dir()
        try:
            result = fn(*args, **kwargs)
        except (InputError, DivergenceError) as e:
            if job_dir is None:
                print(f"error: {e}", file=sys.stderr)
                raise SystemExit(2) from e
            log.error("job failed: %s", e)
            _write_status(job_dir, {"status": "failed", "error": str(e)})
            return None
        if job_dir is not None:
            _write_status(job_dir, {"status": "ok"})
        return result

    return wrapper


def _multirun_job_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def _write_status(job_dir: Path, status: dict[str, str]) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / STATUS_FILE).write_text(json.dumps(status) + "\n")
