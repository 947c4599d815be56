"""The pretraining stage's typed configuration, mirroring ``conf/pretrain.yaml``'s groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptm.config import PathsConfig
from ptm.data.masking import MaskingConfig
from ptm.data.rawtext import WORD_SEGMENTERS
from ptm.data.segment_builder import SegmentConfig
from ptm.models.mlm import ModelConfig
from ptm.tasks.probe import ProbeConfig
from ptm.training.guard import GuardConfig
from ptm.training.runtime import RuntimeConfig


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    corpus: list[Path]
    tokenizer: str | None
    word_segmenter: str  # none | jieba: whole-word marks for raw text
    general_eval: list[Path]  # also evaluated, whole
    rehearsal: list[Path]  # general text to mix into the corpus
    rehearsal_documents: int  # how many of its documents (0: none)
    cache_dir: Path
    segments: SegmentConfig
    masking: MaskingConfig
    probe: ProbeConfig | None  # labelled tasks of this corpus; null: no probe

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError("data.corpus lists no file: set data.corpus=[file1,file2,...]")
        if self.word_segmenter not in WORD_SEGMENTERS:
            raise ValueError(
                f"data.word_segmenter={self.word_segmenter!r}: use one of {list(WORD_SEGMENTERS)}"
            )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seed: int
    batch_size: int
    micro_batch_size: int
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    warmup_fraction: float
    decay: str
    min_lr_fraction: float
    grad_clip: float
    max_steps: int | None
    max_tokens: int | None
    max_minutes: float | None
    eval_every: int
    eval_max_segments: int
    log_every: int
    save_every: int
    keep_checkpoints: int
    guard: GuardConfig

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            raise ValueError("set a budget: train.max_steps, train.max_tokens or train.max_minutes")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    paths: PathsConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    runtime: RuntimeConfig
    resume: Path | None  # a run folder to continue from its last checkpoint
    run_dir: Path = Path(".")  # Hydra's run folder; set by the entry point, not in conf/
