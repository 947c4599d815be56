"""Turning a Hydra/OmegaConf config into plain, typed, frozen dataclasses — once.

Entry points call `to_dataclass` on the composed config; everything below works on ordinary
typed objects and never sees OmegaConf (so nothing can mutate the config mid-run). Unknown or
misspelt keys are an error here rather than a setting silently ignored.

The YAML in ``conf/`` is the one source of defaults: a dataclass field has no default of its own
when the YAML sets it (tests/test_defaults.py fails if one appears). Code that needs a config
outside a stage's command line — benchmarks, tests — composes the real one with `from_conf`, so
it runs what users run plus the overrides it states.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from ptm.errors import InputError
from ptm.training.gpus import gpu_count

T = TypeVar("T")
_FIX = "fix the value in conf/ or in the command-line override"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def register_resolvers() -> None:
    """``${ptm.first:a,b}``: ``a`` unless null or empty, else ``b`` (resume dir, else a new dir).
    ``${ptm.gpu_count:}``: the GPUs this machine offers a sweep (``conf/launcher/gpus.yaml``).
    ``${ptm.run_id:}``: what tells apart runs started in the same second (`run_id`)."""
    if not OmegaConf.has_resolver("ptm.first"):
        OmegaConf.register_new_resolver("ptm.first", lambda a, b: a if a not in (None, "") else b)
    if not OmegaConf.has_resolver("ptm.gpu_count"):
        OmegaConf.register_new_resolver("ptm.gpu_count", gpu_count)
    if not OmegaConf.has_resolver("ptm.run_id"):
        OmegaConf.register_new_resolver("ptm.run_id", run_id, use_cache=True)


def run_id() -> str:
    """A run folder's suffix after its time stamp: jobs of a sweep or of several users started
    in the same second would otherwise write into one folder. The processes of one ``torchrun``
    job share it (its rendezvous id), so they name the same folder; a plain process uses its
    pid."""
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if job and job != "none":
        return hashlib.sha256(job.encode()).hexdigest()[:6]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun without a rendezvous id: its
        return str(os.getppid())  # agent, the parent of every process of this node's job
    return str(os.getpid())


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data; a required value left at ``???`` is a one-line error."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise InputError(
            None, f"{e.full_key} is required", f"set it on the command line: {e.full_key}=..."
        ) from e


def compose(config_name: str, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved config ``python -m <stage> overrides...`` would run with, as plain data."""
    return copy.deepcopy(_compose(config_name, tuple(overrides)))


@functools.lru_cache(maxsize=64)
def _compose(config_name: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    # Inside a running @hydra.main (a benchmark composing the config it measures), Hydra's global
    # state is taken: set it aside for the compose and put it back after.
    running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return resolve(hydra_compose(config_name=config_name, overrides=list(overrides)))
    finally:
        if running is not None:
            GlobalHydra.instance().initialize(running)


def from_conf(
    cls: type[T],
    config_name: str,
    key: str = "",
    overrides: tuple[str, ...] = (),
    **values: Any,
) -> T:
    """``cls`` built from the node ``key`` (dotted; "" for the root) of the composed config
    ``config_name`` with Hydra ``overrides``, then ``values`` replacing fields of that node."""
    node: Any = compose(config_name, overrides)
    for part in filter(None, key.split(".")):
        node = node[part]
    return to_dataclass(cls, {**node, **values})


def to_dataclass(cls: type[T], cfg: DictConfig | dict[str, Any]) -> T:
    """Build ``cls`` from a config, recursing into nested dataclasses."""
    data = resolve(cfg) if isinstance(cfg, DictConfig) else cfg
    return _build(cls, data, cls.__name__)


def _build(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise InputError(None, f"config {where}: expected a mapping, got {data!r}", _FIX)
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(
            None, f"config {where}: unknown key(s) {unknown}; known: {sorted(names)}", _FIX
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise InputError(None, f"config {where}: {e}", _FIX) from e


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else _build(tp, value, where)
    if origin is list and isinstance(value, dict) and _named(get_args(tp)):
        # A mapping of named items (``tasks: {sentiment: {...}}``: task files compose by name)
        # is the list of those items, each with its key as ``name``.
        (item,) = get_args(tp)
        for k, v in value.items():
            if not isinstance(v, dict) or v.get("name", k) != k:
                raise InputError(
                    None, f"config {where}.{k}: expected a mapping of its settings, got {v!r}", _FIX
                )
        return [_build(item, {**v, "name": k}, f"{where}.{k}") for k, v in value.items()]
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InputError(None, f"config {where}: expected a list, got {value!r}", _FIX)
        (item,) = get_args(tp)[:1] or (Any,)
        converted = [_convert(item, v, where) for v in value]
        return tuple(converted) if origin is tuple else converted
    if tp is Path and value is not None:
        return Path(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def _named(args: tuple) -> bool:
    """A list of dataclasses that carry their own ``name``."""
    return (
        len(args) == 1
        and dataclasses.is_dataclass(args[0])
        and any(f.name == "name" for f in dataclasses.fields(args[0]))
    )


def to_plain(obj: Any) -> Any:
    """A dataclass as JSON-ready data (paths as strings), for logs and ``run.json``."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def override_key(item: str) -> str:
    """``+tasks.names.weight=2`` -> ``tasks.names.weight``: the key a command-line override sets
    (``+`` adds it, ``~`` deletes it)."""
    return item.partition("=")[0].lstrip("+~")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: hyperparameters for TensorBoard's HParams tab."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class PathsConfig:
    root: Path
    data_dir: Path
    output_dir: Path
