"""Reading a segment folder (see `ptm.data.segment_builder` for how one is built): memory-mapped
token arrays, padded batches, and the unigram entropy a useful MLM must beat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ptm.data.tokenizer import load_tokenizer
from ptm.errors import InputError

SPLITS = ("train", "eval")
FORMAT_VERSION = 1
_REBUILD = "delete {folder} and run again: the segments are rebuilt from the corpus"


class SegmentData:
    """Read-only view of one split of a segment folder, backed by memory maps."""

    def __init__(self, folder: Path, split: str) -> None:
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise InputError(
                folder,
                "not a segment folder (no meta.json)",
                "build it with `python -m pretrain.segments`",
            )
        try:
            self.meta = json.loads(meta_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(meta_path, f"damaged ({e})", _REBUILD.format(folder=folder)) from e
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                folder, "built by another ptm version", "delete the folder to rebuild it"
            )
        self.max_seq_len = int(self.meta["config"]["max_seq_len"])
        self.dtype = np.dtype(self.meta["dtype"])
        self.offsets = np.array(_map(folder / f"{split}.offsets.bin", np.dtype(np.int64)))
        self.tokens_path = folder / f"{split}.tokens.bin"
        self.tokens = _map(self.tokens_path, self.dtype)
        ws = folder / f"{split}.word_start.bin"
        self.word_start = _map(ws, np.dtype(np.uint8)) if ws.is_file() else None
        # Files cut short (a full disk, a partial copy) would read as other segments or fail
        # mid-run: the offsets must end where the tokens (and word marks) do.
        end = int(self.offsets[-1]) if len(self.offsets) else -1
        sizes = [len(self.tokens)] + ([len(self.word_start)] if self.word_start is not None else [])
        if len(self.offsets) < 1 or self.offsets[0] != 0 or any(n != end for n in sizes):
            raise InputError(
                folder / f"{split}.tokens.bin",
                f"damaged: {sizes} tokens where the offsets say {end}",
                _REBUILD.format(folder=folder),
            )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def token_chunks(self, size: int = 1 << 24) -> Iterator[np.ndarray]:
        """Every token of the split, ``size`` at a time, read from the file rather than through
        the memory map. A pass over a whole split through the map would leave every page of the
        file mapped into the process, counted in its resident memory (what `top`, SLURM and
        ``make scale`` report) up to the file's size: 1.8 GB of segments at 5x the Tianchi corpus."""
        with open(self.tokens_path, "rb") as f:
            while len(chunk := np.fromfile(f, self.dtype, size)):
                yield chunk

    def batch(
        self, indices: np.ndarray, pad_id: int, multiple_of: int = 8
    ) -> dict[str, torch.Tensor]:
        """Pad the chosen segments to the longest one (rounded up to ``multiple_of``).

        One gather from the memory map for the whole batch (no loop over rows): the host side
        must keep up with a GPU that eats millions of tokens a second (BENCHMARKS.md measures
        it). ``padded`` says whether any position is padding; when none is, the model can run
        attention without a mask (SDPA's flash kernel).
        """
        lo, hi = self.offsets[indices], self.offsets[indices + 1]
        lengths = hi - lo
        longest = int(lengths.max())
        width = min(-(-longest // multiple_of) * multiple_of, max(self.max_seq_len, longest))
        inside = np.arange(width) < lengths[:, None]  # (B, W)
        at = np.where(inside, lo[:, None] + np.arange(width), 0)
        ids = np.where(inside, self.tokens[at], pad_id).astype(np.int64)
        out = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(inside.astype(np.int64)),
            "padded": bool(not inside.all()),
        }
        if self.word_start is not None:
            out["word_start"] = torch.from_numpy(np.where(inside, self.word_start[at], 1) != 0)
        return out


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    """The file as a read-only array (an empty file, which mmap refuses, as an empty one)."""
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise InputError(path, f"damaged: {size} bytes", _REBUILD.format(folder=path.parent))
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)


def load_segment_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(folder / "tokenizer")


def unigram_entropy(data: SegmentData, special_ids: list[int], vocab_size: int) -> float:
    """Entropy (nats) of the ordinary-token unigram distribution: the loss of a model that
    ignores context. An MLM whose held-out loss is not clearly below it has learned nothing."""
    counts = np.zeros(vocab_size, np.int64)
    for chunk in data.token_chunks():
        counts += np.bincount(chunk, minlength=vocab_size)
    counts[special_ids] = 0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
