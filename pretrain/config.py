"""The pretraining stage's typed configuration, mirroring ``conf/pretrain.yaml``'s groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptm.config import PathsConfig
from ptm.data.masking import MaskingConfig
from ptm.data.rawtext import WORD_SEGMENTERS
from ptm.data.segment_builder import SegmentConfig
from ptm.models.mlm import ModelConfig
from ptm.training.guard import GuardConfig
from ptm.training.runtime import RuntimeConfig


@dataclass(frozen=True)
class DataConfig:
    corpus: list[Path]
    tokenizer: str | None = None
    word_segmenter: str = "none"  # none | jieba: whole-word marks for raw text
    general_eval: list[Path] = field(default_factory=list)  # also evaluated, whole
    rehearsal: list[Path] = field(default_factory=list)  # general text to mix into the corpus
    rehearsal_documents: int = 0  # how many of its documents (0: none)
    cache_dir: Path = Path("outputs/data/segments")
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError("data.corpus lists no file: set data.corpus=[file1,file2,...]")
        if self.word_segmenter not in WORD_SEGMENTERS:
            raise ValueError(
                f"data.word_segmenter={self.word_segmenter!r}: use one of {list(WORD_SEGMENTERS)}"
            )


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 42
    batch_size: int = 64
    micro_batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_fraction: float = 0.06
    decay: str = "linear"
    min_lr_fraction: float = 0.0
    grad_clip: float = 1.0
    max_steps: int | None = 400
    max_tokens: int | None = None
    max_minutes: float | None = None
    eval_every: int = 100
    eval_max_segments: int = 512
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2
    guard: GuardConfig = field(default_factory=GuardConfig)

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            raise ValueError("set a budget: train.max_steps, train.max_tokens or train.max_minutes")


@dataclass(frozen=True)
class PretrainConfig:
    paths: PathsConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    runtime: RuntimeConfig
    resume: Path | None = None
    run_dir: Path = Path(".")  # Hydra's run folder; set by the entry point, not in conf/
