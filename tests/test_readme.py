"""The README is the contract: every command it shows must still exist and parse.

Each ``make`` target it names exists in the Makefile, and every ``python -m`` / ``torchrun``
command composes against the real Hydra config with its overrides (Hydra rejects a key that
does not exist, so a renamed option breaks this test, not a reader's first try). The commands
that run quickly are run for real by the stage tests and by CI (`make test`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_OF_MODULE = {
    "pretrain": "pretrain",
    "pretrain.corpus": "corpus",
    "pretrain.segments": "pretrain",
    "finetune": "finetune",
    "finetune.report": "report",
    "convert": "convert",
    "sweeps.summary": "summary",
    "sweeps.serve_tensorboard": "tensorboard",
    "bench": "bench",
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def hydra_call(words: list[str]) -> tuple[str, list[str]] | None:
    """``(module, overrides)`` of a ``python -m``/``torchrun -m`` command, else None."""
    if "-m" not in words or words[0] not in {"python", "torchrun"}:
        return None
    at = words.index("-m")
    module, rest = words[at + 1], words[at + 2 :]
    overrides = []
    for word in rest:
        if word == "-m":  # a multirun: compose its first combination
            continue
        key, _, value = word.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        overrides.append(f"{key}={value}" if value or word.endswith("=") else key)
    return module, overrides


COMMANDS = readme_commands()


def test_readme_has_the_two_setup_commands() -> None:
    quickstart = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "make pretrain" in quickstart and "make test" in quickstart
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(command: str) -> None:
    target = shlex.split(command)[1]
    assert target in make_targets(), f"README runs `{command}` but the Makefile has no {target}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if hydra_call(shlex.split(c))])
def test_stage_commands_compose(command: str) -> None:
    module, overrides = hydra_call(shlex.split(command))
    assert module in CONFIG_OF_MODULE, f"README runs an unknown module: {command}"
    cfg = compose_config(CONFIG_OF_MODULE[module], overrides)
    assert cfg is not None
