"""One GPU per job (``+launcher=gpus``), on a machine without GPUs: the device count is simulated
(``hydra.callbacks.claim_gpu.gpus=2``, ``CUDA_VISIBLE_DEVICES``) and the claims are made by real
processes, so the locking is the real thing."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ptm.errors import InputError
from ptm.training import gpus
from ptm.training.gpus import ClaimGPU, claim_gpu, gpu_count
from tests.finetune_helpers import run_finetune_sweep, the_sweep
from tests.gpu_worker import hold_gpu

SPAWN = multiprocessing.get_context("spawn")


class Worker:
    """A process that claims one of ``ids`` and holds it until ``stop`` (``tests/gpu_worker.py``);
    each has its own pipe, so killing one leaves the others' reports intact."""

    def __init__(self, ids: list[str], lock_dir: Path) -> None:
        self.reports, sender = SPAWN.Pipe(duplex=False)
        self.release = SPAWN.Event()
        # A daemon: a failing test leaves no worker behind waiting for a GPU.
        args = (ids, lock_dir, sender, self.release)
        self.process = SPAWN.Process(target=hold_gpu, args=args, daemon=True)
        self.process.start()

    def gpu(self, timeout: float = 60) -> str | None:
        """The GPU it claimed, or None while it has none after ``timeout`` seconds."""
        return self.reports.recv() if self.reports.poll(timeout) else None

    def stop(self) -> None:
        self.release.set()
        self.process.join(30)


def test_workers_never_share_a_gpu_and_a_freed_one_goes_to_the_waiting_worker(
    tmp_path: Path,
) -> None:
    ids = ["0", "1"]
    first, second = Worker(ids, tmp_path), Worker(ids, tmp_path)
    held = first.gpu()
    assert sorted([held, second.gpu()]) == ["0", "1"]  # one each, whichever came first

    third = Worker(ids, tmp_path)
    assert third.gpu(timeout=2) is None  # both GPUs are held: the third worker waits
    first.stop()
    assert third.gpu() == held  # and gets the one that was let go

    # A killed worker's claim goes with it: the kernel drops the lock of a dead process.
    os.kill(third.process.pid, signal.SIGKILL)
    third.process.join(30)
    fourth = Worker(ids, tmp_path)
    assert fourth.gpu() == held
    second.stop()
    fourth.stop()


@pytest.fixture
def no_claim_yet(monkeypatch: pytest.MonkeyPatch):
    """This test process as a fresh worker; its claim is dropped afterwards."""
    monkeypatch.setattr(gpus, "_held", None)
    yield
    if gpus._held is not None:
        gpus._held[1].close()


def test_a_worker_keeps_its_gpu_and_maps_it_through_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_claim_yet: None
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7,9")
    callback = ClaimGPU(gpus=2, lock_dir=str(tmp_path))
    callback.on_job_start(OmegaConf.create())
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # the first inherited GPU, not index 0
    assert (tmp_path / "gpu-5.lock").read_text() == f"{os.getpid()}\n"
    callback.on_job_start(OmegaConf.create())  # the next job of the same worker: the same GPU
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert claim_gpu(["7"], tmp_path).gpu == "5"


def test_gpu_count_reads_cuda_visible_devices_else_asks_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert gpu_count() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_count() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert gpu_count() == 4


@pytest.mark.parametrize(
    ("gpus", "n_jobs", "message"),
    [
        (0, 0, r"^\+launcher=gpus found no GPU .* — run the sweep without \+launcher=gpus"),
        (2, 3, r"^hydra.launcher.n_jobs=3 jobs at once, but there are 2 GPUs — .* set 1..2$"),
    ],
)
def test_a_sweep_without_enough_gpus_is_refused(
    tmp_path: Path, gpus: int, n_jobs: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        ClaimGPU(gpus=gpus, lock_dir=str(tmp_path)).check(n_jobs)


def test_a_callback_that_cannot_claim_ends_the_sweep_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_claim_yet: None
) -> None:
    """Hydra only warns about an exception from a callback and runs the job anyway, on GPUs it
    does not own; the callback ends the sweep instead."""
    config = OmegaConf.create({"hydra": {"launcher": {"n_jobs": 1}}})
    with pytest.raises(SystemExit) as stopped:
        ClaimGPU(gpus=0, lock_dir=str(tmp_path)).on_multirun_start(config)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: +launcher=gpus found no GPU (")

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(SystemExit):
        ClaimGPU(gpus=2, lock_dir=str(not_a_folder / "locks")).on_job_start(config)
    assert capsys.readouterr().err == (
        f"error: {not_a_folder / 'locks'}: cannot keep GPU lock files here (Not a directory) — "
        "set hydra.callbacks.claim_gpu.lock_dir to a folder every job can write\n"
    )
    assert gpus._held is None


def test_a_joblib_sweep_gives_each_worker_its_own_gpu(tmp_path: Path) -> None:
    result = run_finetune_sweep(
        tmp_path,
        "+launcher=gpus",
        "hydra.callbacks.claim_gpu.gpus=2",  # a two-GPU machine
        f"hydra.callbacks.claim_gpu.lock_dir={tmp_path / 'locks'}",
        "train.epochs=1",
        "train.batch_size=16",
        "train.lr=1e-3,2e-3",
        "train.seed=1,2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2," in result.stdout
    sweep = the_sweep(tmp_path)
    claims = []
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        assert (job / "status.json").read_text().strip() == '{"status": "ok"}'
        log = (job / "finetune.log").read_text()
        (claim,) = re.findall(r"GPU (\S+) for this job \(held by process (\d+):", log)
        claims.append(claim)
    assert len(claims) == 4
    gpu_of = dict((pid, gpu) for gpu, pid in claims)
    assert set(gpu_of.values()) <= {"0", "1"}
    assert len(set(gpu_of.values())) == len(gpu_of)  # one GPU per worker, a worker per GPU
    assert all(gpu_of[pid] == gpu for gpu, pid in claims)  # a worker never changes GPU
