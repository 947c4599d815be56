"""Training checkpoints: written whole or not at all, checked before loading, a damaged newest
one skipped for the newest intact one, and a full disk one line that leaves the earlier ones."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from pretrain.train import run
from ptm.errors import DiskFullError
from ptm.training import checkpoint
from ptm.training.checkpoint import latest_checkpoint, load_latest, save_checkpoint
from tests.conftest import pretrain_config


def test_checkpoints_fall_back_past_damaged_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        state = {"step": step, "w": torch.full((1 << 18,), float(step))}  # 1 MB of weights
        save_checkpoint(folder, step, state, keep=3)
    assert (folder / "step-00000003.pt.sha256").read_text().endswith("  step-00000003.pt\n")
    third = folder / "step-00000003.pt"
    third.write_bytes(third.read_bytes()[:100])  # cut short: the archive's index is gone
    second = folder / "step-00000002.pt"
    data = bytearray(second.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # inside the weights: index intact
    second.write_bytes(bytes(data))

    assert latest_checkpoint(folder) == second  # the cheap check: the index reads
    path, state = load_latest(folder)  # a full load: falls back to the first that checks out
    assert path == folder / "step-00000001.pt" and state["step"] == 1
    assert torch.equal(state["w"], torch.ones(1 << 18))
    assert "step-00000003.pt is damaged" in caplog.text
    assert "step-00000002.pt is damaged" in caplog.text and "sha256 differs" in caplog.text
    for p in folder.glob("*.pt"):
        p.write_bytes(b"")
    assert load_latest(folder) is None and latest_checkpoint(folder) is None
    assert load_latest(tmp_path / "none") is None
    save_checkpoint(folder, 4, {"step": 4}, keep=1)
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-00000004.pt",
        "step-00000004.pt.sha256",
    ]


def filling_the_disk(monkeypatch: pytest.MonkeyPatch, on_call: int) -> None:
    """``torch.save`` writes a little, then meets a full disk on its ``on_call``-th call."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < on_call:
            return real(obj, f, *args, **kwargs)
        f.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", save)


def test_a_full_disk_keeps_the_earlier_checkpoints_and_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 1, {"step": 1, "w": torch.ones(1 << 16)}, keep=2)
    filling_the_disk(monkeypatch, on_call=1)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(folder, 2, {"step": 2, "w": torch.ones(1 << 16)}, keep=2)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{folder / 'step-00000002.pt'}: the disk")
    # The estimate is the size of the checkpoint before (this disk is not really full, so the
    # message can only say "more than what is free").
    assert caught.value.needed == (folder / "step-00000001.pt").stat().st_size
    assert " needed, " in message and " free — free space there" in message
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-00000001.pt",
        "step-00000001.pt.sha256",
    ]
    assert load_latest(folder)[1]["step"] == 1


def test_a_pretraining_run_on_a_full_disk_stops_there_and_resumes_after(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step-10 checkpoint is written, the disk fills at step 20's: the run stops with the
    one-line error, and step 10's checkpoint is the one a resume continues from."""
    run_dir = tmp_path / "run"
    extra = ("train.save_every=10", "train.max_steps=30")
    filling_the_disk(monkeypatch, on_call=2)
    with pytest.raises(DiskFullError, match=r"step-00000020\.pt: the disk filled up"):
        run(pretrain_config(tmp_path, corpus, run_dir, *extra))
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == [
        "step-00000010.pt",
        "step-00000010.pt.sha256",
    ]
    monkeypatch.undo()
    metrics = run(pretrain_config(tmp_path, corpus, run_dir, *extra, f"resume={run_dir}"))
    assert metrics["steps"] == 30
