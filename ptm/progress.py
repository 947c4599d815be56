"""Periodic progress lines with throughput and ETA, for any long loop.

A log line every few seconds rather than a redrawn bar: it reads the same in a terminal, in
Hydra's log file and in a batch job's output.
"""

from __future__ import annotations

import logging
import time


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_count(x: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


class Progress:
    """Log ``what: 42% (done/total) | extra | elapsed, ETA`` at most every ``every_s`` seconds."""

    def __init__(
        self, what: str, total: float, logger: logging.Logger, every_s: float = 10.0
    ) -> None:
        self.what, self.total, self.log, self.every_s = what, total, logger, every_s
        self.start = time.perf_counter()
        self.last = self.start
        self.start_done: float | None = None

    def update(self, done: float, extra: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if self.start_done is None:
            self.start_done = done  # a resumed loop starts part-way: rate counts from here
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        pct = 100.0 * done / self.total if self.total else 100.0
        parts = [f"{self.what}: {pct:3.0f}% ({format_count(done)}/{format_count(self.total)})"]
        if extra:
            parts.append(extra)
        eta_text = format_duration(eta) if eta == eta else "?"
        parts.append(f"{format_duration(elapsed)} elapsed, ETA {eta_text}")
        self.log.info(" | ".join(parts))
