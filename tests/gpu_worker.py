"""A stand-in for a sweep's worker process in ``tests/test_gpus.py``: claims a GPU, reports it and
holds it until told to let go. Apart from the tests so that a spawned worker imports ``ptm.training.gpus``
only (not torch) and starts in well under a second."""

from __future__ import annotations

from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

from ptm.training.gpus import claim_gpu


def hold_gpu(ids: list[str], lock_dir: Path, report: Connection, release: Event) -> None:
    report.send(claim_gpu(ids, lock_dir, poll_seconds=0.05).gpu)
    release.wait(120)
