"""Folders that are whole or absent: every output folder of ptm is written aside, then renamed.

A model folder, a segment cache or a converted checkpoint that a crash leaves half written looks
complete to the next command (``from_pretrained`` loads it, a cache key finds it). Writing into
``<name>.tmp`` and renaming it over ``<name>`` only once everything is in it means a reader sees
the old folder or the new one, never a mixture.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def aside_path(out: Path) -> Path:
    """Where `written_aside` builds ``out``: ``<out>.tmp`` beside it (same file system)."""
    return out.with_name(out.name + ".tmp")


@contextmanager
def written_aside(out: str | Path) -> Iterator[Path]:
    """Yield an empty folder to fill; on success it replaces ``out``, on an error it is removed
    and ``out`` stays as it was."""
    out = Path(out)
    tmp = aside_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:  # cleanup only: the error goes on to the caller
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
