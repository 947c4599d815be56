"""Training checkpoints: atomic, self-describing, safe to load, and a damaged one is skipped.

A checkpoint holds everything needed to continue as if the run had never stopped: model,
optimizer, scaler, RNG states, step, data position, elapsed time (and whatever else a loop keeps:
fine-tuning adds its best-so-far state and early-stopping counters). The step is stored inside,
never parsed back out of the file name. Files are written under a temporary name, flushed to disk
and renamed, so a crash or a ``kill -9`` mid-write never leaves a file that later loads as valid.
Beside each, ``<name>.sha256`` (``sha256sum -c`` reads it) is checked before loading: torch reads
tensor data without checking the archive's CRCs, so bytes damaged after writing (measured: 200
bytes overwritten mid-file) would otherwise load as silently wrong weights. Loading uses
``weights_only=True``: a checkpoint from elsewhere cannot run code.

A newest checkpoint that does not load — cut short by a full disk, damaged by a copy — is not
the user's problem to solve: `latest_checkpoint` and `load_latest` fall back to the newest intact
one and log a warning naming the file skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ptm.errors import InputError
from ptm.files import aside_path, stop_on_full_disk

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "step-", ".pt"


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"{PREFIX}{step:08d}{SUFFIX}"


def named_step(path: Path) -> int:
    """The step a checkpoint's name says (`checkpoint_path` backwards), for messages; a run
    resumes at the step stored inside."""
    return int(path.name.removeprefix(PREFIX).removesuffix(SUFFIX))


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files are never listed)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically, with its checksum, and keep only the newest ``keep``.

    A disk that fills up while writing leaves the earlier checkpoints as they were, removes the
    partial file and stops with one line naming the path and the bytes needed
    (`ptm.files.stop_on_full_disk`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    tmp, sums = aside_path(path), _sums(path)
    sums_tmp = aside_path(sums)
    earlier = list_checkpoints(folder)
    expected = earlier[-1].stat().st_size if earlier else 0
    with stop_on_full_disk(path, tmp, sums_tmp, expected_bytes=expected):
        # A file object, not a path: torch.save given a path reports a full disk without its
        # errno, which is how the disk-full error is recognised.
        with tmp.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        sums_tmp.write_text(f"{file_sha256(tmp)}  {path.name}\n")
    os.replace(sums_tmp, sums)
    os.replace(tmp, path)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink()
        _sums(old).unlink(missing_ok=True)
    log.info("checkpoint saved: %s", path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(
            path, "no such checkpoint", "point resume at a run folder that has checkpoints/"
        )
    sums = _sums(path)
    if sums.is_file():  # checkpoints written before checksums have none
        expected = sums.read_bytes().decode("ascii", errors="replace").split()[:1]
        if expected != [file_sha256(path)]:
            raise InputError(
                path,
                f"not the checkpoint that was written (its sha256 differs from {sums.name})",
                "resume from an older one",
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        # torch reports a damaged archive as RuntimeError, a cut one as BadZipFile or EOFError.
        raise InputError(
            path, f"not a readable checkpoint ({e.__class__.__name__})", "resume from an older one"
        ) from e


def _sums(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose archive is whole (its index, at the end of the file, reads);
    newer ones that are cut short are skipped with a warning. Cheap: no tensor is read."""
    for path in reversed(list_checkpoints(folder)):
        try:
            with zipfile.ZipFile(path):
                return path
        except (zipfile.BadZipFile, OSError) as e:
            _skipped(path, f"{type(e).__name__}: {e}")
    return None


def load_latest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, and its state; newer ones that do not (cut short,
    corrupt anywhere, or not matching their checksum) are skipped with a warning naming them.
    None when there is none."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except InputError as e:
            cause = e.__cause__
            what = str(e).removeprefix(f"{path}: ").split(" — ")[0]
            _skipped(path, f"{type(cause).__name__}: {cause}" if cause else what)
    return None


def _skipped(path: Path, why: str) -> None:
    log.warning(
        "checkpoint %s is damaged (%s) and was skipped: resuming from an older one",
        path,
        (why.splitlines() or [""])[0][:200],
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
