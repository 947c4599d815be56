"""Run folders: the ``latest`` link that names a stage's newest run."""

from __future__ import annotations

import os
from pathlib import Path


def point_latest(run_dir: Path) -> None:
    """``<runs>/latest`` -> ``run_dir``, replaced atomically (readers never see it missing).

    Jobs of a Hydra sweep get no link: the sweep summary names the best one, and TensorBoard
    would follow the link and show a job twice.
    """
    if (run_dir.parent / "multirun.yaml").is_file():
        return
    link = run_dir.parent / "latest"
    if link.resolve() == run_dir.resolve():
        return
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.resolve(), target_is_directory=True)
    os.replace(tmp, link)
