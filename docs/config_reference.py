"""Write ``docs/CONFIGURATION.md``: every key of every file in ``conf/``, its default and the
comment written beside it, generated so the reference cannot drift from the configs.

Regenerate:   python -m docs.config_reference                # = make docs
Check:        python -m docs.config_reference check=true     # exit 2 when the file is out of date
Elsewhere:    python -m docs.config_reference output=/tmp/CONFIGURATION.md

The YAML files are the single source: a key's description is the comment on its line, or the
comment lines directly above it (a comment block at the very top of a file describes the file).
Values are shown as written, interpolations included, so ``${paths.output_dir}/pretrain`` reads
as what it means. PyYAML's node tree gives the structure and line numbers; the comments, which
YAML parsers drop, are read from those lines.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig

from ptm.config import PathsConfig, register_resolvers, to_dataclass
from ptm.errors import InputError, exit_on_input_error

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
OUTPUT = ROOT / "docs" / "CONFIGURATION.md"
COMMAND = "python -m docs.config_reference"
# Stage configs name the program that reads them on their first line: "# python -m pretrain ...".
PROGRAM = re.compile(r"^(python -m [\w.]+)")


@dataclass(frozen=True)
class Entry:
    key: str  # dotted, relative to the file's package
    value: str  # as written; "" for a section (a mapping with keys below it)
    comment: str
    line: int  # 1-based, in the file


@dataclass
class ConfigFile:
    path: Path  # relative to the repository root
    description: str
    package: str | None  # from a "# @package" line
    defaults: list[Entry] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    @property
    def leaves(self) -> list[Entry]:
        return [e for e in self.entries if e.value != ""]


def read_config(path: Path) -> ConfigFile:
    text = path.read_text()
    lines = text.splitlines()
    header, package, top = _header(lines)
    node = yaml.compose(text)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    conf = ConfigFile(shown, header, package)
    if node is None:
        return conf
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"{path}: the top level is not a mapping")
    for key, value in node.value:
        if key.value == "defaults":
            items = value.value if isinstance(value, yaml.SequenceNode) else []
            conf.defaults = [_default(item, lines, top) for item in items]
        else:
            _walk(key, value, "", lines, top, conf.entries)
    return conf


def _default(item, lines: list[str], top: int) -> Entry:
    """One defaults-list entry: ``group: option`` (or ``group@package: option``) or a name."""
    if isinstance(item, yaml.MappingNode) and len(item.value) == 1:
        key, value = item.value[0]
        text = f"{key.value}: {_source(value, lines) or 'null'}"
        return Entry(text, "", _comment(key, value, lines, top), key.start_mark.line + 1)
    return Entry(
        _source(item, lines), "", _comment(item, item, lines, top), item.start_mark.line + 1
    )


def _walk(key, value, prefix: str, lines: list[str], top: int, out: list[Entry]) -> None:
    name = prefix + str(key.value)
    comment = _comment(key, value, lines, top)
    if isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
        if comment:
            out.append(Entry(name, "", comment, key.start_mark.line + 1))
        for k, v in value.value:
            _walk(k, v, name + ".", lines, top, out)
        return
    out.append(Entry(name, _source(value, lines) or "null", comment, key.start_mark.line + 1))


def _header(lines: list[str]) -> tuple[str, str | None, int]:
    """The file's description (its leading comment block), its ``@package`` if any, and the
    number of lines the block takes."""
    text, package, count = [], None, 0
    for line in lines:
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        count += 1
        body = stripped.lstrip("#").strip()
        if body.startswith("@package"):
            package = body.split(None, 1)[1]
        else:
            text.append(body)
    return "\n".join(text).strip(), package, count


def _comment(key, value, lines: list[str], top: int) -> str:
    """The comment lines right above ``key`` (the file's header excepted: line ``top`` on) and
    the comment at the end of its line."""
    row = key.start_mark.line
    above = []
    i = row - 1
    while i >= top and lines[i].strip().startswith("#"):
        above.append(lines[i].strip().lstrip("#").strip())
        i -= 1
    # The line's comment follows the value when the value ends on the key's line, else the colon.
    flat = not isinstance(value, yaml.MappingNode | yaml.SequenceNode) or value.flow_style
    col = value.end_mark.column if flat and value.end_mark.line == row else key.end_mark.column
    rest = lines[row][col:].lstrip().lstrip(":").strip()
    trailing = rest[1:].strip() if rest.startswith("#") else ""
    return " ".join([*reversed(above), trailing]).strip()


def _source(node, lines: list[str]) -> str:
    """A value as written in the file: one line for scalars and flow collections, a flow-style
    list for block sequences."""
    if isinstance(node, yaml.SequenceNode) and not node.flow_style:
        return "[" + ", ".join(_source(item, lines) for item in node.value) + "]"
    if isinstance(node, yaml.MappingNode) and not node.flow_style:
        return "{" + ", ".join(f"{k.value}: {_source(v, lines)}" for k, v in node.value) + "}"
    start, end = node.start_mark, node.end_mark
    if start.line == end.line:
        return lines[start.line][start.column : end.column].strip()
    parts = [lines[start.line][start.column :]]
    parts += lines[start.line + 1 : end.line]
    parts.append(lines[end.line][: end.column])
    return " ".join(p.strip() for p in parts if p.strip())


# The document.


@dataclass(frozen=True)
class Mount:
    """How a stage uses a group: the defaults entry (``finetune_train@train``), the package its
    keys land under, and the default option."""

    stage: str
    entry: str
    package: str
    option: str


def stage_files() -> list[ConfigFile]:
    return [read_config(p) for p in sorted(CONF.glob("*.yaml"))]


def group_files() -> dict[str, list[ConfigFile]]:
    groups = sorted(p for p in CONF.iterdir() if p.is_dir())
    return {g.name: [read_config(p) for p in sorted(g.glob("*.yaml"))] for g in groups}


def mounts(stages: list[ConfigFile]) -> dict[str, list[Mount]]:
    """group -> how each stage uses it, from the stages' defaults lists."""
    out: dict[str, list[Mount]] = {}
    for stage in stages:
        for entry in stage.defaults:
            spec, sep, option = entry.key.partition(":")
            if not sep or spec.startswith("override"):
                continue
            spec = spec.strip().removeprefix("optional ")
            group, _, package = spec.partition("@")
            out.setdefault(group, []).append(
                Mount(stage.path.stem, spec, package or group, option.strip())
            )
    return out


def full_key(conf: ConfigFile, key: str, mount: Mount | None, group: str) -> str:
    """The key as it is overridden on the command line."""
    package = conf.package
    if package is None:
        package = mount.package if mount else group
    if package == "_global_":
        return key
    return f"{package}.{key}" if package else key


def render() -> str:
    stages = stage_files()
    groups = group_files()
    used = mounts(stages)
    out = [
        "# Configuration reference",
        "",
        f"Generated from `conf/` by `{COMMAND}`: do not edit by hand; `make test` fails when it "
        "is out of date. Every key is listed with its default as written in the YAML "
        "(interpolations included) and the comment written beside it.",
        "",
        "Override any key on the command line (`python -m pretrain train.lr=5e-4`), choose a "
        "group's option (`model=bert_small`), add an experiment (`+experiment=tiny`), sweep with "
        "`-m` (`python -m finetune -m train.lr=1e-4,3e-4`).",
        "",
        "## Stages",
        "",
    ]
    for conf in stages:
        program = PROGRAM.match(conf.description)
        title = f"`{conf.path}`" + (f" — `{program.group(1)}`" if program else "")
        out += [f"### {title}", "", *_description(conf.description), ""]
        if conf.defaults:
            out += ["Defaults (choose another option with `group=option`):", ""]
            out += ["| entry | what |", "|---|---|"]
            out += [_row(f"`{e.key}`", e.comment) for e in conf.defaults if e.key != "_self_"]
            out.append("")
        out += _table(conf, lambda k, c=conf: k)
    out += ["## Groups", ""]
    for group, files in groups.items():
        where = used.get(group, [])
        out += [f"### `{group}/`", ""]
        if where:
            out.append("Used by " + "; ".join(_usage(group, where)) + ".")
        else:
            out.append(f"Not selected by default: add one with `+{group}=<option>`.")
        out.append("")
        for conf in files:
            mount = where[0] if where else None
            out += [f"#### `{conf.path}`", ""]
            if conf.description:
                out += [*_description(conf.description), ""]
            inherits = [e.key for e in conf.defaults if e.key != "_self_"]
            if inherits:
                out += ["Defaults: " + ", ".join(f"`{i}`" for i in inherits) + ".", ""]
            out += _table(conf, lambda k, c=conf, m=mount, g=group: full_key(c, k, m, g))
    return "\n".join(out).rstrip() + "\n"


# Where every key must carry a comment (in its file, or in another option of its group): the
# settings that change what a run learns or how it is run. Model shapes keep transformers' own
# names, experiments are overlays of keys documented where they are defined, and the tools'
# configs (bench, convert, corpus, report) are described by their modules.
COMMENTED_GROUPS = ("data", "train", "finetune_train", "task_defaults", "runtime", "task", "head")
COMMENTED_STAGES = ("pretrain", "finetune", "summary", "tensorboard")
# Names that say what they are wherever they appear.
SELF_EXPLANATORY = {"seed", "epochs", "weight_decay", "betas", "eps", "enabled", "log_every"}
SELF_EXPLANATORY |= {"eval_batch_size", "train", "dev", "test"}


def undocumented() -> list[str]:
    """``file: key`` for every key (of the files above) with no comment in its file nor in any
    option of its group; Hydra's own ``hydra:`` settings are left out."""
    found = []
    for conf in stage_files():
        if conf.path.stem in COMMENTED_STAGES:
            found += [f"{conf.path}: {e.key}" for e in _bare(conf.leaves, conf.entries)]
    for group, files in group_files().items():
        if group not in COMMENTED_GROUPS:
            continue
        everything = [e for conf in files for e in conf.entries]
        for conf in files:
            found += [f"{conf.path}: {e.key}" for e in _bare(conf.leaves, everything, conf.package)]
    return found


def _bare(leaves: list[Entry], pool: list[Entry], package: str | None = None) -> list[Entry]:
    def name(e: Entry) -> str:
        # Task files (``@package tasks``) nest their keys under the task's name: compare the rest.
        return e.key.split(".", 1)[-1] if package == "tasks" else e.key

    commented = {name(e) for e in pool if e.comment}
    return [
        e
        for e in leaves
        if name(e) not in commented
        and not e.key.startswith("hydra.")
        and name(e).rsplit(".", 1)[-1] not in SELF_EXPLANATORY
    ]


def _usage(group: str, where: list[Mount]) -> list[str]:
    """``stage, stage (default x; choose with group=<option>)``, one phrase per distinct use."""
    uses: dict[tuple[str, str, str], list[str]] = {}
    for m in where:
        uses.setdefault((m.entry, m.package, m.option), []).append(f"`{m.stage}`")
    phrases = []
    for (entry, package, option), stages in uses.items():
        if "${" in option:  # `optional task_defaults: ${...task...}`: named by another choice
            phrases.append(
                f"{', '.join(stages)} (`{entry}: {option}`; skipped where no such option)"
            )
            continue
        keys = f", keys under `{package}.`" if package != group else ""
        phrases.append(
            f"{', '.join(stages)} (default `{option}`; choose with `{entry}=<option>`{keys})"
        )
    return phrases


def _description(text: str) -> list[str]:
    return [" ".join(text.split())] if text else []


def _table(conf: ConfigFile, name) -> list[str]:
    if not conf.entries:
        return []
    rows = ["| key | default | what |", "|---|---|---|"]
    for e in conf.entries:
        value = f"`{e.value}`" if e.value else "*(section)*"
        rows.append(_row(f"`{name(e.key)}`", value, e.comment))
    return [*rows, ""]


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig:
    paths: PathsConfig
    output: Path
    check: bool


def run(cfg: ReferenceConfig) -> str:
    """Write the reference to ``cfg.output`` or, with ``check``, only compare; returns the text."""
    text = render()
    if cfg.check:
        current = cfg.output.read_text() if cfg.output.is_file() else ""
        if current != text:
            raise InputError(cfg.output, "out of date with conf/", f"run `{COMMAND}`")
        log.info("%s is up to date", cfg.output)
        return text
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(text)
    log.info("wrote %s", cfg.output)
    return text


@hydra.main(version_base="1.3", config_path="../conf", config_name="config_reference")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    run(to_dataclass(ReferenceConfig, cfg))


if __name__ == "__main__":
    register_resolvers()
    main()
