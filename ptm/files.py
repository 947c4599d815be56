"""Outputs that are whole or absent, built by one process at a time, and a full disk in one line.

A model folder, a segment cache or a converted checkpoint that a crash leaves half written looks
complete to the next command (``from_pretrained`` loads it, a cache key finds it). Writing into a
temporary folder beside ``<name>`` and renaming it over ``<name>`` only once everything is in it
means a reader sees the old folder or the new one, never a mixture. Single files (a rehearsal
sample, the embedded corpus' files) go the same way (`write_file_atomically`).

Several processes may want the same output at once: sweep jobs started together on a new corpus,
or several people on one file system, all need the same segment cache. The temporary name
carries the host and process id, so two writers never share (or delete) each other's half-built
folder, and `exclusive` lets the first build a cache while the others wait for it. The lock is an
``flock`` on ``<name>.lock``: the kernel releases it when its holder dies, so a killed build never
blocks the next one.

A disk that fills up mid-write (``ENOSPC``, or a quota's ``EDQUOT``) leaves the previous output
intact and stops with one line naming the path and the bytes needed (`DiskFullError`), not a
traceback, and the partial output that holds the space is removed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ptm.errors import DiskFullError

log = logging.getLogger(__name__)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_CANNOT_LOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def aside_path(out: Path) -> Path:
    """Where this process builds ``out``: ``<out>.tmp-<host>-<pid>`` beside it (the same file
    system, so the rename is atomic; host and pid keep concurrent writers apart)."""
    return out.with_name(f"{out.name}.tmp-{_HOST}-{os.getpid()}")


@contextmanager
def written_aside(out: str | Path, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield an empty folder to fill; on success it replaces ``out``, on an error it is removed
    and ``out`` stays as it was. A full disk becomes a `DiskFullError` whose estimate of the
    bytes needed is at least ``expected_bytes`` (see `stop_on_full_disk`)."""
    out = Path(out)
    tmp = aside_path(out)
    _remove_leftovers(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with stop_on_full_disk(out, tmp, expected_bytes=expected_bytes):
            tmp.mkdir(parents=True)
            yield tmp
            _swap_in(tmp, out)
    except BaseException:  # cleanup only: the error goes on to the caller
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``. A folder cannot be renamed over a non-empty one, so the old
    ``out`` is renamed away first and deleted after: ``out`` is missing only between two
    renames, not for as long as deleting it takes, and a reader's open files stay valid."""
    old = out.with_name(f"{tmp.name}-old")
    try:
        os.replace(out, old)
    except FileNotFoundError:
        old = None
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(out: Path) -> None:
    """Delete the temporary outputs of writers of ``out`` that died on this host (a ``kill
    -9``, a lost node) so their space comes back; those of live processes, and of other hosts
    sharing the file system, are left alone."""
    pattern = re.compile(rf"{re.escape(out.name)}\.tmp-{re.escape(_HOST)}-(\d+)(-old)?")
    if not out.parent.is_dir():
        return
    for path in out.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if found and not _alive(int(found[1])):
            log.info("removing %s, left by a process that stopped", path)
            _remove(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_file_atomically(out: Path, data: bytes) -> None:
    """Write ``data`` to ``out`` through a temporary file and a rename, so a reader (or a
    writer of the same bytes in another process) never sees part of it; a full disk is a
    `DiskFullError`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside_path(out)
    _remove_leftovers(out)
    try:
        with stop_on_full_disk(out, tmp, expected_bytes=len(data)):
            tmp.write_bytes(data)
            os.replace(tmp, out)
    except BaseException:  # cleanup only: the error goes on to the caller
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold the lock of ``out`` (an ``flock`` on ``<out>.lock``) for the block: the first process
    builds ``out``, the others wait, with a log line, and then find it built.

    The lock file is deleted on release. A waiter that then holds the lock of a deleted file
    opens the path again, so exactly one process holds the lock of the file the path names. On
    a file system that cannot lock (Lustre mounted without ``flock``) the block runs unlocked,
    with a warning: the temporary names still keep concurrent builders apart.
    """
    lock = out.with_name(out.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _take(lock, out)
    try:
        yield
    finally:
        if fd is not None:
            lock.unlink(missing_ok=True)
            os.close(fd)


def _take(lock: Path, out: Path) -> int | None:
    """The open, locked lock file (None where the file system cannot lock)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)  # NFS locks need it open for writing
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process building %s (lock %s)", out, lock)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            os.close(fd)
            if e.errno not in _CANNOT_LOCK:
                raise
            lock.unlink(missing_ok=True)
            log.warning("%s: the file system cannot lock files (%s): not waiting", lock, e)
            return None
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # released and deleted while we waited: lock the new one


def _same_file(fd: int, path: Path) -> bool:
    held = os.fstat(fd)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


@contextmanager
def stop_on_full_disk(target: Path, *partial: Path, expected_bytes: int = 0) -> Iterator[None]:
    """Turn a full disk met inside the block into one `DiskFullError` line naming ``target``.

    The ``partial`` outputs (files or folders) are removed first, so the space they hold is free
    again. The bytes needed are estimated as the largest of ``expected_bytes`` (what the caller
    knows it writes), what ``partial`` held when the disk filled and what ``target`` holds now
    (the previous version of the same output). Any other error passes through unchanged.

    A training checkpoint written to ``tmp`` and renamed to ``path`` would use it as::

        with stop_on_full_disk(path, tmp, expected_bytes=previous.stat().st_size):
            with tmp.open("wb") as f:
                torch.save(state, f)
    """
    try:
        yield
    except BaseException as e:
        if not is_disk_full(e):
            raise
        written = sum(disk_usage(p) for p in partial)
        for p in partial:
            _remove(p)
        needed = max(expected_bytes, written, disk_usage(target))
        raise DiskFullError(target, needed, _free_bytes(target)) from e


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, is a full disk.

    torch's archive writer reports it as a ``RuntimeError`` raised while handling the
    ``OSError``; safetensors (``save_pretrained``) as a ``SafetensorError`` whose message ends
    with Rust's ``(os error 28)``.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        if any(f"(os error {n})" in str(e) for n in DISK_FULL):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_usage(path: Path) -> int:
    """Bytes in the file, or in every file under the folder (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):
        if folder.is_dir():
            return shutil.disk_usage(folder).free
    return 0


def tensor_bytes(module: Any) -> int:
    """What a module's parameters and buffers take: the size a saved model folder will have,
    for the bytes a full disk says it needs (a torch ``nn.Module``; no torch import here)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
