"""Shared fixtures: small corpora the tests write themselves, and the real Hydra config shrunk
to a seconds-long CPU run in ``tmp_path`` (as lightning-hydra-template's tests do)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from ptm.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread for the whole session, subprocesses included.

    The tests train models of a few thousand parameters, where threads only add overhead; and
    when another process shares the cores, OpenMP's spin-waiting made a 1-second test take 80
    (measured on 2 cores). Deterministic timing matters more here than parallel kernels.
    """
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def write_corpus(
    path: Path, n_docs: int, seed: int = 0, vocab: int = 60, words: bool = False
) -> Path:
    """Documents of Zipf-ish IDs (lengths 3..300, so some split and some pack)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_docs):
        n = int(rng.integers(3, 300))
        ids = (rng.zipf(1.3, n) % vocab) + 100
        if words:
            parts, i = [], 0
            while i < n:
                k = int(rng.integers(1, 4))
                parts.append("_".join(map(str, ids[i : i + k])))
                i += k
            lines.append(" ".join(parts))
        else:
            lines.append(" ".join(map(str, ids)))
    path.write_text("\n".join(lines) + "\n")
    return path


def segment_config(**values):
    """The segment settings `make pretrain` uses (conf/data), with ``values`` changed."""
    from ptm.config import from_conf
    from ptm.data.segment_builder import SegmentConfig

    return from_conf(SegmentConfig, "pretrain", "data.segments", **values)


def task_config(**values):
    """A `TaskConfig` with the defaults of conf/task/_base.yaml (every task file's), ``values``
    changed; ``kind``, ``train`` and ``name`` (default "t") are the caller's."""
    import yaml

    from ptm.config import to_dataclass
    from ptm.tasks.config import TaskConfig

    base = yaml.safe_load((ROOT / "conf" / "task" / "_base.yaml").read_text())
    return to_dataclass(TaskConfig, {**base, "name": "t", **values})


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=False)


def run_module(
    module: str,
    *args: str,
    processes: int = 1,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository root, as a user runs it; with
    ``processes`` > 1 through torchrun (standalone, gloo on CPU)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run(
        [*launcher, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def tiny_pretrain_sweep(
    tmp_path: Path, corpus: Path, *overrides: str
) -> subprocess.CompletedProcess:
    """``python -m pretrain -m`` on the tiny config, outputs under ``tmp_path``; no gradient
    clipping and a guard that may fire after 3 steps, so a huge learning rate diverges fast."""
    return run_module(
        "pretrain", "-m", "+experiment=tiny", f"data.corpus=[{corpus}]",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path}",
        "train.grad_clip=0", "train.guard.min_steps=3", *overrides,
        timeout=300,
    )  # fmt: skip


def tiny_pretrain_overrides(tmp_path: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        "+experiment=tiny",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_dir={tmp_path / 'out'}",
        f"data.corpus=[{corpus}]",
        *extra,
    ]


def pretrain_config(tmp_path: Path, corpus: Path, run_dir: Path, *extra: str):
    from pretrain.config import PretrainConfig
    from ptm.config import to_dataclass

    cfg = compose_config("pretrain", tiny_pretrain_overrides(tmp_path, corpus, *extra))
    data = OmegaConf.to_container(cfg, resolve=True)
    data["run_dir"] = str(run_dir)
    return to_dataclass(PretrainConfig, data)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt", 120, words=True)


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real embedded corpus, built once per test session (a few seconds)."""
    from ptm.config import from_conf
    from ptm.data.embedded import EmbeddedConfig, build_embedded_corpus

    out = tmp_path_factory.mktemp("embedded")
    build_embedded_corpus(from_conf(EmbeddedConfig, "corpus", out_dir=out))
    return out
