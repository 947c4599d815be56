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
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(node[f.name], dict):
            out += doubled(hints[f.name], node[f.name], f"{where}.{f.name}")
    return out


@pytest.mark.parametrize("config_name", [r[0] for r in _roots()])
def test_no_field_has_a_default_the_yaml_also_sets(config_name: str) -> None:
    (cls, overrides) = next((c, o) for n, c, o in _roots() if n == config_name)
    node = compose(config_name, overrides)
    assert doubled(cls, node, config_name) == []
