"""``docs/CONFIGURATION.md`` is generated from ``conf/`` and must stay so: it is up to date, it
lists every key of the settings that change results, every setting of the typed configs has a
key in ``conf/``, and new keys come with a comment."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from docs.config_reference import (
    COMMAND,
    CONF,
    OUTPUT,
    ReferenceConfig,
    read_config,
    render,
    run,
    undocumented,
)
from finetune.config import FinetuneConfig
from pretrain.config import PretrainConfig
from ptm.config import from_conf
from ptm.errors import InputError
from ptm.tasks.config import TaskConfig
from tests.conftest import compose_config

# Keys without a comment anywhere in their group when this test was written. Remove a line when
# its comment lands; a key that is not listed here must come with a comment.
KNOWN_WITHOUT_COMMENT = {
    "conf/data/embedded.yaml: segments.vocab_min_count",
    "conf/finetune_train/default.yaml: warmup_fraction",
    "conf/finetune_train/default.yaml: min_lr_fraction",
    "conf/finetune_train/default.yaml: min_delta",
    "conf/finetune_train/default.yaml: guard.min_steps",
    "conf/finetune_train/default.yaml: guard.ema",
    "conf/head/cls.yaml: pooling",
    "conf/head/mean.yaml: pooling",
    "conf/head/pooler.yaml: pooling",
    "conf/task/names.yaml: names.kind",
    "conf/task/names.yaml: names.label_column",
    "conf/task/pair.yaml: pair.kind",
    "conf/task/pair.yaml: pair.text_column",
    "conf/task/pair.yaml: pair.text_b_column",
    "conf/task/pair.yaml: pair.label_column",
    "conf/task/sentiment.yaml: sentiment.kind",
    "conf/task/sentiment.yaml: sentiment.head_fraction",
    "conf/task/tianchi.yaml: tianchi.kind",
    "conf/task/tianchi.yaml: tianchi.text_column",
    "conf/task/tianchi.yaml: tianchi.label_column",
    "conf/task/tianchi.yaml: tianchi.dev_fraction",
    "conf/task/tianchi.yaml: tianchi.split_seed",
    "conf/task/tianchi.yaml: tianchi.head_fraction",
    "conf/train/mlm.yaml: min_lr_fraction",
    "conf/train/mlm.yaml: max_tokens",
    "conf/train/mlm.yaml: max_minutes",
    "conf/train/mlm.yaml: keep_checkpoints",
    "conf/train/mlm.yaml: guard.min_steps",
    "conf/train/mlm.yaml: guard.ema",
}
# Typed settings that have no key in conf/ on purpose: the entry point sets the run folder.
NOT_IN_CONF = {"run_dir"}  # set by the entry point
# A task's name is its key under tasks:, not a setting.
TASK_KEYS_NOT_IN_CONF = {"name"}


def test_the_committed_reference_is_up_to_date() -> None:
    committed = OUTPUT.read_text() if OUTPUT.is_file() else ""
    assert committed == render(), f"{OUTPUT.name} is out of date: run `{COMMAND}` to update"


def test_the_tool_writes_the_reference_or_checks_it(tmp_path: Path) -> None:
    output = tmp_path / "docs" / "CONFIGURATION.md"
    stale = re.escape(f"{output}: out of date with conf/ — run `{COMMAND}`")
    with pytest.raises(InputError, match=f"^{stale}$"):
        run(
            from_conf(ReferenceConfig, "config_reference", output=output, check=True)
        )  # missing: out of date
    assert not output.exists()
    run(from_conf(ReferenceConfig, "config_reference", output=output))
    assert output.read_text() == render()
    run(
        from_conf(ReferenceConfig, "config_reference", output=output, check=True)
    )  # now up to date: no error


def leaf_keys(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out += leaf_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_every_key_of_the_settings_that_change_results_is_in_the_reference() -> None:
    """Read with plain PyYAML, not the generator's parser: a key it skipped would show here."""
    text = OUTPUT.read_text()
    groups = ("train", "finetune_train", "task_defaults", "runtime", "data", "task", "head")
    files = [p for g in groups for p in sorted((CONF / g).glob("*.yaml"))]
    assert len(files) >= 12
    for path in files:
        relative = path.relative_to(CONF.parent)
        section = text.split(f"#### `{relative}`\n", 1)[1].split("\n#", 1)[0]
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("defaults", None)
        for key in leaf_keys(data):
            row = re.compile(rf"^\| `(?:[\w.]+\.)?{re.escape(key)}` \| `", re.M)
            assert row.search(section), f"{relative}: {key} is missing from {OUTPUT.name}"


def typed_settings(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of a (nested) config dataclass."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        inner = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        kind = inner[0] if len(inner) == 1 else hints[f.name]
        if typing.get_origin(hints[f.name]) in (
            list,
            tuple,
        ):  # a list (of dataclasses too) is one key
            kind = list
        if dataclasses.is_dataclass(kind):
            out += typed_settings(kind, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_every_typed_setting_has_a_key_in_conf() -> None:
    """A dataclass field with no YAML key would be an option nobody can find in the reference."""
    for stage, cls in (("pretrain", PretrainConfig), ("finetune", FinetuneConfig)):
        composed = OmegaConf.to_container(compose_config(stage, []), resolve=False)
        keys = set(leaf_keys(composed))
        # Task settings (of fine-tuning and of the probe) are the task files' check below.
        settings = [
            s for s in typed_settings(cls) if not s.startswith(("tasks", "data.probe.tasks"))
        ]
        missing = sorted(set(settings) - keys - NOT_IN_CONF)
        assert not missing, f"{stage}: settings with no key in conf/: {missing}"

    task_keys = set()
    for path in (CONF / "task").glob("*.yaml"):
        for key in leaf_keys(yaml.safe_load(path.read_text()) or {}):
            if key != "defaults":  # _base.yaml holds one task's keys; the others, named tasks'
                task_keys.add(key if path.stem == "_base" else key.split(".", 1)[1])
    missing = sorted(set(typed_settings(TaskConfig)) - task_keys - TASK_KEYS_NOT_IN_CONF)
    assert not missing, f"task settings with no key in any conf/task/*.yaml: {missing}"


def test_new_keys_come_with_a_comment() -> None:
    new = sorted(set(undocumented()) - KNOWN_WITHOUT_COMMENT)
    assert not new, f"keys without a comment beside them (add one in the YAML): {new}"


def test_comments_beside_above_and_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(
        "# @package tasks\n"
        "# What this file is for.\n"
        "first: 1\n"
        "plain: [ a, b ]   # a flow list\n"
        "\n"
        "# Above the key,\n"
        "# on two lines.\n"
        "nested:           # the section\n"
        "  inner: x#y      # a hash inside a value\n"
        "  url: 'http://h/#a'  # quoted\n"
        "items:\n"
        "  - one\n"
        "  - two\n"
        "defaults:\n"
        "  - base         # the option below\n"
    )
    conf = read_config(path)
    assert conf.package == "tasks" and conf.description == "What this file is for."
    got = {e.key: (e.value, e.comment) for e in conf.entries}
    assert got == {
        "first": ("1", ""),
        "plain": ("[ a, b ]", "a flow list"),
        "nested": ("", "Above the key, on two lines. the section"),
        "nested.inner": ("x#y", "a hash inside a value"),
        "nested.url": ("'http://h/#a'", "quoted"),
        "items": ("[one, two]", ""),
    }
    assert [(e.key, e.comment) for e in conf.defaults] == [("base", "the option below")]
