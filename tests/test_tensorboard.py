"""`python -m sweeps.serve_tensorboard` as a user runs it: started over two tiny finished runs on
a free loopback port, asked over HTTP (TensorBoard's own data API, as its web page asks) for the
runs, the scalar tags and values and the HParams table, then stopped. Loopback only, every wait
bounded."""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pretrain.train import run as pretrain
from ptm.config import from_conf, to_dataclass
from ptm.errors import InputError
from sweeps.serve_tensorboard import TensorBoardConfig, serve, tensorboard_argv
from tests.conftest import compose_config, pretrain_config
from tests.tensorboard_server import Server, get


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
        url = server.url()
        assert url.startswith("http://127.0.0.1:")
        runs = server.runs(url, {"pretrain/a/tb", "pretrain/b/tb"})
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
    config = from_conf(TensorBoardConfig, "tensorboard", logdir=tmp_path / "nothing")
    with pytest.raises(InputError, match=r"nothing: no such folder — run a stage first"):
        serve(config)
