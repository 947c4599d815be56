"""Output folders are whole or absent: what `ptm.files.written_aside` promises every writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptm.files import aside_path, written_aside


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
