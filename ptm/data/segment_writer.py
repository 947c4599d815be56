"""Writing segments: the binary files of one split, and best-fit packing of short pieces into
segments (the layout is described in `ptm.data.segment_builder`)."""

from __future__ import annotations

import contextlib
from bisect import bisect_left, insort
from pathlib import Path

import numpy as np


class SplitWriter:
    """Appends the segments of one split to its binary files.

    Segments are collected as pieces and written a few megabytes at a time: one concatenation and
    one write per flush instead of several per segment (a corpus has hundreds of thousands).
    """

    FLUSH_POSITIONS = 1 << 22

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, cls_id: int, sep_id: int):
        self.dtype = dtype
        self.cls, self.sep = np.array([cls_id], dtype), np.array([sep_id], dtype)
        self.mark = np.ones(1, bool)
        self.files = {
            n: (out_dir / f"{split}.{n}.bin").open("wb")
            for n in ("tokens", "word_start", "offsets")
        }
        self.files["offsets"].write(memoryview(np.zeros(1, np.int64)))
        self.end = 0  # positions written or pending
        self.tokens: list[np.ndarray] = []
        self.starts: list[np.ndarray] = []
        self.ends: list[np.ndarray] = []
        self.packed_ends: list[int] = []  # ends of packed segments not yet moved to ``ends``
        self.pending = 0
        self.segments = 0

    def add_packed(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """One segment: ``[CLS]`` then each piece followed by ``[SEP]``."""
        self.tokens.append(self.cls)
        self.starts.append(self.mark)
        size = 1
        for ids, starts in pieces:
            self.tokens += (ids, self.sep)
            self.starts += (starts, self.mark)
            size += len(ids) + 1
        self.packed_ends.append(self.end + size)  # before a flush, which writes the ends too
        self.segments += 1
        self._grow(size)

    def add_rows(self, tokens: np.ndarray, marks: np.ndarray) -> None:
        """Many segments of one length at once: the rows of `ptm.data.segment_cutting.frame_rows`' arrays."""
        n, width = tokens.shape
        self.tokens.append(tokens.ravel())
        self.starts.append(marks.ravel())
        self._move_packed_ends()
        self.ends.append(self.end + width * np.arange(1, n + 1, dtype=np.int64))
        self._grow(n * width)
        self.segments += n

    def _grow(self, size: int) -> None:
        self.end += size
        self.pending += size
        if self.pending >= self.FLUSH_POSITIONS:
            self.flush()

    def _move_packed_ends(self) -> None:
        if self.packed_ends:
            self.ends.append(np.array(self.packed_ends, np.int64))
            self.packed_ends = []

    def flush(self) -> None:
        self._move_packed_ends()
        if self.tokens:
            self.files["tokens"].write(memoryview(np.concatenate(self.tokens).astype(self.dtype)))
            self.files["word_start"].write(memoryview(np.concatenate(self.starts).view(np.uint8)))
            self.files["offsets"].write(memoryview(np.concatenate(self.ends)))
        self.tokens, self.starts, self.ends, self.pending = [], [], [], 0

    def close(self) -> None:
        self.flush()
        for f in self.files.values():
            f.close()

    def abandon(self) -> None:
        """Close the files after an error, dropping what is pending: a deleted file still open
        keeps its space, which a full disk's message must count as free."""
        for f in self.files.values():
            with contextlib.suppress(OSError):  # its buffered tail may not fit either
                f.close()


class Packer:
    """Best-fit packing of short pieces into segments, over a bounded window of open segments.

    Open segments are kept sorted by room left (ties by age), so the best fit is one bisection
    instead of a scan of the window per piece.
    """

    def __init__(self, capacity: int, window: int, emit) -> None:
        self.capacity, self.window, self.emit = capacity, window, emit
        self.by_room: list[tuple[int, int]] = []  # (room left, serial number), sorted
        self.pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.serial = 0

    def add(self, ids: np.ndarray, starts: np.ndarray) -> None:
        size = len(ids) + 1  # the piece and its [SEP]
        at = bisect_left(self.by_room, (size, -1))
        if at < len(self.by_room):
            room, key = self.by_room.pop(at)
        else:
            if len(self.by_room) >= self.window:  # close the fullest to make room
                self.emit(self.pieces.pop(self.by_room.pop(0)[1]))
            room, key = self.capacity, self.serial
            self.pieces[key] = []
            self.serial += 1
        insort(self.by_room, (room - size, key))
        self.pieces[key].append((ids, starts))

    def flush(self) -> None:
        for key in sorted(self.pieces):  # oldest first
            self.emit(self.pieces.pop(key))
        self.by_room = []
