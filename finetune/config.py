"""The fine-tuning stage's typed configuration, mirroring ``conf/finetune.yaml``'s groups."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ptm.config import PathsConfig, to_dataclass
from ptm.errors import InputError
from ptm.models.heads import HeadConfig
from ptm.tasks.collapse import CollapseConfig
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import kind_of
from ptm.training.guard import GuardConfig
from ptm.training.runtime import RuntimeConfig

INITS = ("pretrained", "scratch")


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where the encoder comes from: its weights, or a random init of its config (baseline)."""

    path: Path
    init: str  # pretrained | scratch
    tokenizer: Path | None  # null: the tokenizer saved in the model folder
    dropout: float | None  # hidden and attention dropout while fine-tuning; null: config.json's

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is unknown; use one of {list(INITS)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout}; use a value in [0, 1) or null")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seed: int
    epochs: float
    max_steps: int | None  # caps the epochs when set
    max_minutes: float | None  # ends the run (warm-up and decay follow) when set
    batch_size: int  # global, in examples
    micro_batch_size: int  # per process per forward pass
    eval_batch_size: int
    lr: float
    layer_decay: float  # layer-wise LR decay; 1 turns it off
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    warmup_fraction: float
    decay: str
    min_lr_fraction: float
    grad_clip: float
    eval_every: int | None  # steps; null: once per epoch (and always at the end)
    patience: int | None  # evaluations without a better dev score before stopping
    min_delta: float  # what counts as better
    group_by_length: bool
    length_group: int  # batches per length-sorted mega-batch
    mix_temperature: float  # multi-task: P(task) ~ batches^(1/T); 1 proportional
    log_every: int
    save_every: int | None  # steps between checkpoints; null: at every evaluation
    keep_checkpoints: int  # the newest checkpoints kept
    limit_examples: int | None  # keep only the first rows of every file (smoke runs)
    guard: GuardConfig
    collapse: CollapseConfig

    def __post_init__(self) -> None:
        if self.epochs <= 0 and self.max_steps is None and self.max_minutes is None:
            raise ValueError("set a budget: train.epochs, train.max_steps or train.max_minutes")
        if self.mix_temperature <= 0:
            raise ValueError(f"mix_temperature={self.mix_temperature}; use a positive number")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay={self.layer_decay}; use a value in (0, 1]")
        if self.save_every is not None and self.save_every < 1:
            raise ValueError(f"save_every={self.save_every}; use a positive number or null")


@dataclass(frozen=True, kw_only=True)
class CrossValidation:
    folds: int | None  # null: one run on the whole training file
    fold: int | None  # the one fold this run holds out; null: every fold in turn
    seed: int  # which rows form which fold

    def __post_init__(self) -> None:
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"cv.folds={self.folds}; use 2 or more, or null for one run")
        if self.fold is not None and (self.folds is None or not 0 <= self.fold < self.folds):
            raise ValueError(f"cv.fold={self.fold}; use 0 .. cv.folds-1 (with cv.folds set)")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    paths: PathsConfig
    model: ModelSource
    tasks: list[TaskConfig]
    head: HeadConfig
    train: TrainConfig
    runtime: RuntimeConfig
    cv: CrossValidation
    resume: Path | None  # a run folder to continue from its newest intact checkpoint
    run_dir: Path = Path(".")  # Hydra's run folder; set by the entry point, not in conf/


def build_config(data: dict[str, Any]) -> FinetuneConfig:
    """The typed config from the resolved Hydra one, its tasks checked first: a mapping name ->
    settings in the YAML (so task files compose), each named, of a known kind and complete."""
    tasks = data.get("tasks") or {}
    if not isinstance(tasks, dict) or not tasks:
        raise InputError(
            None,
            "no task configured",
            "choose one with task=sentiment (or another file of conf/task/)",
        )
    for name, settings in tasks.items():
        if not isinstance(settings, dict):
            raise InputError(
                None, f"tasks.{name} is {settings!r}, not a mapping", "see conf/task/*.yaml"
            )
        kind_of(name, settings)  # named, and known: a task without kind: is not guessed
        missing = [
            f.name for f in fields(TaskConfig) if f.name != "name" and f.name not in settings
        ]
        if missing:
            raise InputError(
                None,
                f"tasks.{name} lacks {missing}",
                f"a task without a file of conf/task/ starts from conf/task/_base.yaml: add "
                f"+task@tasks.{name}=_base before its settings",
            )
    names = [
        s.get("submission_name") for s in tasks.values() if s.get("submission_format") == "jsonl"
    ]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            None,
            f"several tasks write the submission file(s) {twice} into one zip",
            "give each task its own submission_name",
        )
    return to_dataclass(FinetuneConfig, data)
