"""Training checkpoints: atomic, self-describing, safe to load.

A checkpoint holds everything needed to continue as if the run had never stopped: model,
optimizer, scaler, RNG states, step, data position, elapsed time. The step is stored inside,
never parsed back out of the file name. Files are written under a temporary name and renamed,
so a crash mid-write never leaves a file that later loads as valid. Loading uses
``weights_only=True``: a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ptm.errors import InputError

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "step-", ".pt"


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"{PREFIX}{step:08d}{SUFFIX}"


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files are never listed)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically and keep only the newest ``keep`` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink()
    log.info("checkpoint saved: %s", path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(
            path, "no such checkpoint", "point resume at a run folder that has checkpoints/"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:  # torch reports a damaged zip as RuntimeError
        raise InputError(
            path, f"not a readable checkpoint ({e.__class__.__name__})", "resume from an older one"
        ) from e


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None
