"""The settings that change a segment folder, and so its cache key (`ptm.data.segment_builder`):
set in ``conf/data/`` under ``segments``."""

from __future__ import annotations

from dataclasses import dataclass

from ptm.errors import InputError


@dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """Everything that changes the segments (and so the cache key)."""

    max_seq_len: int
    tail_drop_fraction: float
    pack: bool
    pack_window: int
    eval_fraction: float
    seed: int
    text_column: str
    vocab_min_count: int
    vocab_max_size: int | None

    def __post_init__(self) -> None:
        if self.max_seq_len < 8:
            raise InputError(None, f"max_seq_len={self.max_seq_len} is too short", "use 8 or more")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise InputError(None, f"eval_fraction={self.eval_fraction}", "use a value in [0, 1)")
