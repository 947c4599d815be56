"""One source of defaults: a value is set in conf/ or in code, never in both.

Every stage turns its composed Hydra config into dataclasses (`ptm.config.to_dataclass`). A
dataclass field with a default of its own, for a key the YAML also sets, is a second source that
can drift from the first (it did: the dataclasses once said max_steps=400 where make pretrain
ran 1000). Fields the YAML does not carry (set by the entry point, like run_dir, or optional per
task) may keep a default: that default is then the only one.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from ptm.config import compose
from ptm.data.embedded import EmbeddedConfig
from ptm.tf.convert import ConvertConfig

# Root dataclass of each entry config (and the overrides that fill its required values).
ROOTS: list[tuple[str, type, tuple[str, ...]]] = [
    ("corpus", EmbeddedConfig, ()),
    ("convert", ConvertConfig, ("input=x", "output=y")),
]


def _roots() -> list[tuple[str, type, tuple[str, ...]]]:
    from docs.config_reference import ReferenceConfig
    from finetune.config import FinetuneConfig
    from finetune.ensemble import EnsembleConfig
    from finetune.predict import PredictConfig
    from finetune.report import ReportConfig
    from pretrain.config import PretrainConfig
    from sweeps.serve_tensorboard import TensorBoardConfig
    from sweeps.summary import SummaryConfig

    return [
        *ROOTS,
        ("pretrain", PretrainConfig, ()),
        ("finetune", FinetuneConfig, ()),
        ("summary", SummaryConfig, ()),
        ("tensorboard", TensorBoardConfig, ()),
        ("config_reference", ReferenceConfig, ()),
        ("report", ReportConfig, ()),
        ("ensemble", EnsembleConfig, ("runs=[a,b]",)),
        ("predict", PredictConfig, ()),
    ]


def doubled(cls: type, node: dict[str, Any], where: str) -> list[str]:
    """Fields of ``cls`` (recursively) that carry a default although ``node`` sets them."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in node:
            continue
        has_default = f.default is not dataclasses.MISSING or (
            f.default_factory is not dataclasses.MISSING
        )
        if has_default:
            out.append(f"{where}.{f.name}")
        for tp, value, at in _nested(hints[f.name], node[f.name], f"{where}.{f.name}"):
            out += doubled(tp, value, at)
    return out


def _nested(tp: Any, value: Any, where: str) -> list[tuple[type, dict, str]]:
    """The dataclass nodes under one field: itself, the items of a list of dataclasses, or the
    named items of a mapping (``tasks: {sentiment: {...}}``; `ptm.config` names them)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return [(tp, value, where)]
    if len(args) == 1 and not dataclasses.is_dataclass(tp):
        inner = args[0]
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(inner):
            items = value.items() if isinstance(value, dict) else enumerate(value or [])
            return [(inner, v, f"{where}.{k}") for k, v in items if isinstance(v, dict)]
        return _nested(inner, value, where)
    return []


def test_the_check_looks_inside_tasks_and_probe_tasks() -> None:
    """A default on a task setting would be a second source beside conf/task/_base.yaml: the
    check finds one in every task of a run and of the probe."""
    from ptm.tasks.config import TaskConfig

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Doubled(TaskConfig):
        max_seq_len: int | None = 128

    tasks = compose("finetune", ("task=multitask",))["tasks"]
    assert _nested(list[Doubled], tasks, "tasks") == [
        (Doubled, tasks["sentiment"], "tasks.sentiment"),
        (Doubled, tasks["names"], "tasks.names"),
    ]
    assert doubled(Doubled, tasks["names"], "tasks.names") == ["tasks.names.max_seq_len"]
    probe_tasks = compose("pretrain")["data"]["probe"]["tasks"]
    found = [doubled(Doubled, v, at) for _, v, at in _nested(list[Doubled], probe_tasks, "p")]
    assert found == [["p.sentiment.max_seq_len"], ["p.names.max_seq_len"]]


@pytest.mark.parametrize("config_name", [r[0] for r in _roots()])
def test_no_field_has_a_default_the_yaml_also_sets(config_name: str) -> None:
    (cls, overrides) = next((c, o) for n, c, o in _roots() if n == config_name)
    node = compose(config_name, overrides)
    assert doubled(cls, node, config_name) == []
