"""`python -m sweeps.serve_tensorboard` as a user runs it: started over two tiny finished runs on
a free loopback port, asked over HTTP (TensorBoard's own data API, as its web page asks) for the
runs, the scalar tags and values and the HParams table, then stopped. Loopback only, every wait
bounded."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pretrain.train import run as pretrain
from ptm.config import PathsConfig, to_dataclass
from ptm.errors import InputError
from sweeps.serve_tensorboard import TensorBoardConfig, serve, tensorboard_argv
from tests.conftest import compose_config, pretrain_config

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60
LOAD_TIMEOUT_S = 30
# Proxies from the environment must not see loopback requests.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


class Server:
    """The entry point in a subprocess; its address is read from TensorBoard's own banner."""

    def __init__(self, *overrides: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweeps.serve_tensorboard", *overrides],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)

    def url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            found = re.search(r"TensorBoard [\d.]+ at (http://\S+/) ", line)
            if found:
                return found.group(1)
            if self.proc.poll() is not None and self.lines.empty():
                break
        raise AssertionError(f"no TensorBoard address in time; stderr: {''.join(self.seen)}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            raise


def test_the_default_is_this_machine_only() -> None:
    config = to_dataclass(TensorBoardConfig, compose_config("tensorboard", []))
    argv = tensorboard_argv(config)
    assert "--host=127.0.0.1" in argv and "--port=6006" in argv
    assert not any(a.startswith("--bind_all") for a in argv)
    assert config.logdir == Path("./outputs")


def test_serves_runs_scalars_and_hparams_on_loopback(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "out"
    metrics = {}
    for name, lr in (("a", "1e-3"), ("b", "3e-3")):
        run_dir = out / "pretrain" / name
        metrics[name] = pretrain(pretrain_config(tmp_path, corpus, run_dir, f"train.lr={lr}"))

    server = Server(f"logdir={out}", "port=0", f"hydra.run.dir={tmp_path / 'log'}")
    try:
        url = server.url().rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        runs: list[str] = []
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline and not {"pretrain/a/tb", "pretrain/b/tb"} <= set(runs):
            time.sleep(0.2)
            runs = get(f"{url}/data/runs")
        assert {"pretrain/a/tb", "pretrain/b/tb"} <= set(runs), runs

        tags = get(f"{url}/data/plugin/scalars/tags")
        assert {"train/loss", "eval/loss", "train/lr"} <= set(tags["pretrain/a/tb"])
        query = urllib.parse.urlencode({"run": "pretrain/a/tb", "tag": "eval/loss"})
        points = get(f"{url}/data/plugin/scalars/scalars?{query}")  # [wall time, step, value]
        assert points[-1][1] == metrics["a"]["steps"] == 20
        assert points[-1][2] == pytest.approx(metrics["a"]["eval/loss"], rel=1e-5)

        experiment = get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"]: h for h in experiment["hparamInfos"]}
        assert {"train.lr", "model.hidden_size", "data.segments.max_seq_len"} <= set(hparams)
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"hparam/eval/loss", "hparam/eval/accuracy"} <= metric_tags

        groups = get(
            f"{url}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 100,
            },
        )
        rows = {g["name"]: g for g in groups["sessionGroups"]}
        assert rows["pretrain/a/tb"]["hparams"]["train.lr"] == pytest.approx(1e-3)
        assert rows["pretrain/b/tb"]["hparams"]["train.lr"] == pytest.approx(3e-3)
        loss = {m["name"]["tag"]: m["value"] for m in rows["pretrain/b/tb"]["metricValues"]}
        assert loss["hparam/eval/loss"] == pytest.approx(metrics["b"]["eval/loss"], rel=1e-5)
    finally:
        status = server.stop()
    assert status == 0


def test_a_missing_logdir_is_a_one_line_error(tmp_path: Path) -> None:
    config = TensorBoardConfig(PathsConfig(), logdir=tmp_path / "nothing")
    with pytest.raises(InputError, match=r"nothing: no such folder — run a stage first"):
        serve(config)
