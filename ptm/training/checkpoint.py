"""Training checkpoints: atomic, self-describing, safe to load, and a damaged one is skipped.

A checkpoint holds everything needed to continue as if the run had never stopped: model,
optimizer, scaler, RNG states, step, data position, elapsed time (and whatever else a loop keeps:
fine-tuning adds its best-so-far state and early-stopping counters). The step is stored inside,
never parsed back out of the file name. Files are written under a temporary name, flushed to disk
and renamed, so a crash or a ``kill -9`` mid-write never leaves a file that later loads as valid.
Loading uses ``weights_only=True``: a checkpoint from elsewhere cannot run code.

A newest checkpoint that does not load — cut short by a full disk, damaged by a copy — is not
the user's problem to solve: `latest_checkpoint` and `load_latest` fall back to the newest intact
one and log a warning naming the file skipped.
"""

from __future__ import annotations

import logging
import os
import zipfile
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
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        # torch reports a damaged archive as RuntimeError, a cut one as BadZipFile or EOFError.
        raise InputError(
            path, f"not a readable checkpoint ({e.__class__.__name__})", "resume from an older one"
        ) from e


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose archive is whole (its index, at the end of the file, reads);
    newer ones that are cut short are skipped with a warning. Cheap: no tensor is read."""
    for path in reversed(list_checkpoints(folder)):
        try:
            with zipfile.ZipFile(path):
                return path
        except (zipfile.BadZipFile, OSError) as e:
            _skipped(path, e)
    return None


def load_latest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, and its state; newer ones that do not (cut short or
    corrupt anywhere) are skipped with a warning naming them. None when there is none."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except InputError as e:
            _skipped(path, e.__cause__ or e)
    return None


def _skipped(path: Path, e: BaseException) -> None:
    log.warning(
        "checkpoint %s is damaged (%s: %s) and was skipped: resuming from an older one",
        path,
        type(e).__name__,
        str(e).splitlines()[0][:120] if str(e) else "",
    )


def rng_state() -> dict[str, Any]:
    """Torch's CPU generator and, where there are GPUs, every CUDA generator."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
