"""Outputs are whole or absent, built by one process at a time, and a full disk is one line:
what `ptm.files` promises every writer."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ptm import files
from ptm.errors import DiskFullError, InputError
from ptm.files import (
    aside_path,
    exclusive,
    is_disk_full,
    stop_on_full_disk,
    write_file_atomically,
    written_aside,
)
from tests.conftest import ROOT


def test_success_replaces_the_old_folder_whole(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_text("old")
    with written_aside(out) as tmp:
        assert tmp == aside_path(out) and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "config.json").write_text("{}")
        assert (out / "stale.bin").is_file()  # readers still see the old folder meanwhile
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert not aside_path(out).exists()


def test_failure_keeps_the_old_folder_and_removes_the_new(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt), written_aside(out) as tmp:
        (tmp / "weights.bin").write_text("half")
        raise KeyboardInterrupt
    assert (out / "weights.bin").read_text() == "old"
    assert not aside_path(out).exists()
    with pytest.raises(ValueError), written_aside(tmp_path / "new") as tmp:
        raise ValueError
    assert not (tmp_path / "new").exists() and not aside_path(tmp_path / "new").exists()


def test_each_process_writes_aside_under_its_own_name(tmp_path: Path) -> None:
    """Two processes writing the same folder never share (or delete) a temporary folder."""
    out = tmp_path / "model"
    mine = aside_path(out)
    assert mine.parent == tmp_path and mine.name.startswith("model.tmp-")
    assert mine.name.endswith(f"-{os.getpid()}")
    other = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path\nfrom ptm.files import aside_path\n"
         f"print(aside_path(Path({str(out)!r})))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert Path(other.stdout.strip()) not in (mine, out)


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    prefix = aside_path(out).name.rsplit("-", 1)[0]
    left = tmp_path / f"{prefix}-{dead.stdout.strip()}"
    live = tmp_path / f"{prefix}-{os.getppid()}"
    other_host = tmp_path / f"model.tmp-elsewhere-{dead.stdout.strip()}"
    for folder in (left, live, other_host):
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"0" * 100)
    with written_aside(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert not left.exists() and live.is_dir() and other_host.is_dir()


def test_the_lock_makes_others_wait_and_is_gone_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ptm.files")
    out = tmp_path / "cache" / "abc"
    order: list[str] = []
    waiting = threading.Event()

    class Waits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            waiting.set()

    def second() -> None:
        with exclusive(out):
            order.append("second")

    handler = Waits()
    logging.getLogger("ptm.files").addHandler(handler)
    try:
        with exclusive(out):
            assert out.with_name("abc.lock").is_file()
            thread = threading.Thread(target=second)
            thread.start()
            assert waiting.wait(timeout=30)
            order.append("first")
        thread.join(timeout=30)
    finally:
        logging.getLogger("ptm.files").removeHandler(handler)
    assert order == ["first", "second"]
    assert f"waiting for another process building {out}" in caplog.text
    assert list(out.parent.iterdir()) == []


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """flock dies with its holder: the lock file a ``kill -9`` leaves is free to take."""
    out = tmp_path / "abc"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from ptm.files import exclusive\n"
         f"with exclusive(Path({str(out)!r})):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (tmp_path / "abc.lock").is_file()  # left behind, but nobody holds it
    taken = threading.Event()

    def take() -> None:
        with exclusive(out):
            taken.set()

    thread = threading.Thread(target=take, daemon=True)  # daemon: a failure cannot hang pytest
    thread.start()
    assert taken.wait(timeout=30), "the lock of a killed process blocked"
    thread.join(timeout=30)
    assert not (tmp_path / "abc.lock").exists()  # removed by the process that took it over


@pytest.fixture
def free_bytes(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Set what the disk is said to have free once the partial output is gone."""
    return lambda n: monkeypatch.setattr(files, "_free_bytes", lambda path: n)


def test_a_full_disk_keeps_the_old_folder_removes_the_new_and_says_so_in_one_line(
    tmp_path: Path, free_bytes: Callable[[int], None]
) -> None:
    free_bytes(100)
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"w" * 5000)
    with pytest.raises(DiskFullError) as e, written_aside(out) as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert (out / "weights.bin").read_bytes() == b"w" * 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{out}: the disk filled up")
    assert "about 5,000 bytes (5.0 kB) needed, 100 bytes free" in message  # the old folder's
    assert isinstance(e.value, InputError)  # so the stages print it as one line
    free_bytes(2_000_000)  # an estimate below what is free says too little: only "more than"
    more = r"more than 2,000,000 bytes \(2\.0 MB\) needed"
    with pytest.raises(DiskFullError, match=more), written_aside(out):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_inside_torch_or_safetensors_is_recognised(
    tmp_path: Path, free_bytes: Callable[[int], None]
) -> None:
    """torch reports it as a RuntimeError raised while handling the OSError, safetensors (what
    ``save_pretrained`` writes with) as its own error carrying Rust's ``(os error 28)``."""
    with pytest.raises(OSError) as real, open("/dev/full", "wb") as f:  # always full
        f.write(b"x")
    assert is_disk_full(real.value)
    try:
        try:
            raise real.value
        except OSError:  # as torch's archive writer does: no ``from``, the OSError is context
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904
    except RuntimeError as torch_error:
        assert is_disk_full(torch_error)
    assert is_disk_full(Exception("I/O error: No space left on device (os error 28)"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.ENOENT, "No such file"))
    assert not is_disk_full(RuntimeError("unexpected pos"))
    partial = tmp_path / "step-00000010.tmp"
    target = tmp_path / "step-00000010.pt"
    free_bytes(0)
    with (
        pytest.raises(
            DiskFullError, match=r"step-00000010\.pt: .* about 1,900 bytes \(1\.9 kB\) needed"
        ),
        stop_on_full_disk(target, partial, expected_bytes=1000),
    ):
        partial.write_bytes(b"c" * 1900)
        raise Exception("Error while serializing: No space left on device (os error 28)")
    assert not partial.exists()
    with pytest.raises(KeyError), stop_on_full_disk(tmp_path / "x", partial):
        raise KeyError("other errors pass through unchanged")


def test_a_file_written_atomically_is_whole_or_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_bytes: Callable[[int], None]
) -> None:
    free_bytes(0)
    out = tmp_path / "rehearsal" / "sample.txt"
    write_file_atomically(out, b"old\n")
    assert out.read_bytes() == b"old\n"

    def full(self: Path, data: bytes) -> None:
        self.open("wb").write(data[:2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError, match=r"sample\.txt: .* about 9 bytes needed"):
        write_file_atomically(out, b"new text\n")
    monkeypatch.undo()
    assert out.read_bytes() == b"old\n" and sorted(p.name for p in out.parent.iterdir()) == [
        "sample.txt"
    ]


def test_where_files_cannot_be_locked_the_block_runs_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(files.fcntl, "flock", no_locks)
    ran = []
    with exclusive(tmp_path / "abc"):
        ran.append(True)
    assert ran and list(tmp_path.iterdir()) == []
    assert "abc.lock: the file system cannot lock files" in caplog.text
