"""One error type for bad user input, so every stage can report it as a single line.

A user who feeds a malformed corpus should read *which file, which line, what is wrong and what
to do* — not a traceback from deep inside numpy or tokenizers. Library code raises `InputError`;
the stage entry points turn it into a one-line message and a non-zero exit
(`exit_on_input_error`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


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


def exit_on_input_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an `InputError` or `DivergenceError` escaping ``fn`` into one line on stderr, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (InputError, DivergenceError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from e

    return wrapper
