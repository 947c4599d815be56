"""Runs that share a cache: three pretraining runs started together on a corpus none has seen all
succeed, and the segment cache is built once (`ptm.files.exclusive`, `prepare_segments`).

Deterministic by construction, not by timing: the test holds the folder's lock itself until
every run has said it waits for it, so all three meet the lock whatever the machine's speed;
then it lets go and the three race for it as real runs do.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ptm.data.segment_builder import build_segments, cache_key
from ptm.files import exclusive
from tests.conftest import ROOT, pretrain_config, tiny_pretrain_overrides, write_corpus
from tests.test_segment_builder import folder_digest

EXTRA = ("train.max_steps=2", "train.eval_every=2", "train.save_every=2", "train.log_every=1")


def test_three_runs_started_together_on_a_new_corpus_all_succeed(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", 120, words=True)
    cfg = pretrain_config(tmp_path, corpus, tmp_path / "unused", *EXTRA)
    data = cfg.data
    tokenizer = data.tokenizer or cfg.model.init_from
    folder = Path(data.cache_dir) / cache_key(
        list(data.corpus), data.segments, tokenizer, data.word_segmenter
    )
    waits = f"waiting for another process building {folder}"
    logs = [tmp_path / f"run{i}.log" for i in range(3)]
    runs = []
    with exclusive(folder):  # as if a fourth run were building it
        for log in logs:
            # As a user starts them: no run folder given (each gets its own, though all three
            # start in the same second: conf/pretrain.yaml's ${ptm.run_id:}).
            args = tiny_pretrain_overrides(tmp_path, corpus, *EXTRA)
            with log.open("w") as out:
                runs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "pretrain", *args],
                        cwd=ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        while not all(waits in log.read_text() for log in logs):
            stopped = [r.args for r in runs if r.poll() is not None]
            assert not stopped and time.monotonic() < deadline, _texts(logs)
            time.sleep(0.1)
        assert not folder.exists()
    codes = [r.wait(timeout=120) for r in runs]
    texts = _texts(logs)
    assert codes == [0, 0, 0], texts
    assert texts.count("Traceback") == 0 and texts.count("error:") == 0, texts
    assert texts.count(f"segments: reusing {folder}") == 2, texts
    assert texts.count(f"-> {folder}") == 1, texts  # built once
    run_dirs = [p for p in (tmp_path / "out" / "pretrain").iterdir() if p.name != "latest"]
    assert len(run_dirs) == 3, texts
    assert all((run / "model" / "config.json").is_file() for run in run_dirs)
    reference = tmp_path / "reference"
    build_segments([corpus], reference, data.segments)
    assert folder_digest(folder) == folder_digest(reference)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no lock, no temp


def _texts(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in logs)
