"""Build (or find) the segment folder for the configured corpus, without training.

Training builds it on first use anyway; building it first is handy before a multi-node
``torchrun`` job, or to inspect ``meta.json`` (counts, packing efficiency, dropped tails).

    python -m pretrain.segments                                  # the embedded corpus
    python -m pretrain.segments data=tianchi 'data.corpus=[train_set.csv,test_a.csv]'
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pretrain.config import DataConfig
from ptm.config import register_resolvers, to_dataclass
from ptm.data.segment_builder import prepare_segments
from ptm.errors import exit_on_input_error

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
@exit_on_input_error
def main(cfg: DictConfig) -> str:
    data = to_dataclass(DataConfig, cfg.data)
    tokenizer = data.tokenizer or cfg.model.init_from
    folder = prepare_segments(data.corpus, tokenizer, data.cache_dir, data.segments)
    log.info("segment folder: %s (see its meta.json)", folder)
    return str(folder)


if __name__ == "__main__":
    register_resolvers()
    main()
