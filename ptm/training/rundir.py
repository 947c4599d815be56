"""Run folders: the ``latest`` link that names a stage's newest run, and telling a sweep folder
(one job folder per Hydra job number) from a stage's folder of runs."""

from __future__ import annotations

import os
from pathlib import Path

MULTIRUN_FILE = "multirun.yaml"  # written first by the grid sweeper, not by Optuna


def sweep_started(folder: Path) -> float | None:
    """When the sweep in ``folder`` started (a file time), or None when it is not a sweep: the
    grid sweeper's ``multirun.yaml``, else the first job folder (what an Optuna study leaves)."""
    marker = folder / MULTIRUN_FILE
    if marker.is_file():
        return marker.stat().st_mtime
    if not folder.is_dir():
        return None
    jobs = [p / ".hydra" for p in folder.iterdir() if p.name.isdigit() and (p / ".hydra").is_dir()]
    return min((j.stat().st_mtime for j in jobs), default=None)


def point_latest(run_dir: Path) -> None:
    """``<runs>/latest`` -> ``run_dir``, replaced atomically (readers never see it missing).

    Jobs of a Hydra sweep get no link: the sweep summary names the best one, and TensorBoard
    would follow the link and show a job twice.
    """
    if sweep_started(run_dir.parent) is not None:
        return
    link = run_dir.parent / "latest"
    if link.resolve() == run_dir.resolve():
        return
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.resolve(), target_is_directory=True)
    os.replace(tmp, link)
