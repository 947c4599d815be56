"""Serve TensorBoard over the runs under ``outputs/``, on this machine only unless asked.

Every run:           python -m sweeps.serve_tensorboard             # = make tensorboard
One sweep:           python -m sweeps.serve_tensorboard logdir=outputs/finetune-multirun/<time>
Another port:        python -m sweeps.serve_tensorboard port=6007
Reachable remotely:  python -m sweeps.serve_tensorboard host=0.0.0.0   # anyone on the network

Then open http://127.0.0.1:6006 (over SSH: ``ssh -L 6006:127.0.0.1:6006 HOST``). Each run's
``tb/`` folder is one run in TensorBoard; the HParams tab lists every run's configuration and
final metrics side by side (pick the columns under "Hyperparameters" / "Metrics" and sort the
table by a metric). It runs TensorBoard's own program (``tensorboard.program``) with ``--host``
always passed — 127.0.0.1 unless ``host=`` says otherwise — and never ``--bind_all``: the runs'
configs name local paths and nothing here asks for a password.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tensorboard import program

from ptm.config import PathsConfig, register_resolvers, to_dataclass
from ptm.errors import InputError, exit_on_input_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TensorBoardConfig:
    paths: PathsConfig
    logdir: Path
    host: str
    port: int
    load_fast: bool | None  # None: TensorBoard's own choice ("auto")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port}; use 0..65535 (0: any free port)")
        if self.load_fast not in (True, False, None):
            raise ValueError(f"load_fast={self.load_fast!r}; use true, false or null")


def tensorboard_argv(cfg: TensorBoardConfig) -> list[str]:
    """TensorBoard's command line (without the program name) for ``cfg``."""
    return [
        f"--logdir={cfg.logdir}",
        f"--host={cfg.host}",
        f"--port={cfg.port}",
        "--load_fast=" + {True: "true", False: "false", None: "auto"}[cfg.load_fast],
    ]


def serve(cfg: TensorBoardConfig) -> int:
    """Run TensorBoard until interrupted; returns its exit status."""
    if not cfg.logdir.is_dir():
        raise InputError(
            cfg.logdir,
            "no such folder",
            "run a stage first (make pretrain) or pass logdir=<folder>",
        )
    if not _is_loopback(cfg.host):
        log.warning(
            "serving on %s: anyone who can reach this machine on port %d can read the runs",
            cfg.host,
            cfg.port,
        )
    # Werkzeug logs a line per HTTP request (dozens per page view) into the job's log; TensorBoard
    # resets that logger's level when it starts, so a filter keeps the warnings only. TensorBoard's
    # own progress lines go the same way (at INFO its Rust loader logs every reload).
    logging.getLogger("werkzeug").addFilter(lambda record: record.levelno >= logging.WARNING)
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    board = program.TensorBoard()
    board.configure(argv=["", *tensorboard_argv(cfg)])
    log.info("tensorboard %s", " ".join(tensorboard_argv(cfg)))
    try:
        return board.main()
    except KeyboardInterrupt:
        log.info("stopped")
        return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@hydra.main(version_base="1.3", config_path="../conf", config_name="tensorboard")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    config = to_dataclass(TensorBoardConfig, cfg)
    status = serve(config)
    if status != 0:
        raise InputError(
            None,
            f"TensorBoard could not serve on {config.host}:{config.port} (its message is above)",
            f"pick another port, e.g. port={config.port + 1}",
        )


if __name__ == "__main__":
    register_resolvers()
    main()
