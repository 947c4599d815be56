"""Build (or find) the segment folder for the configured corpus, without training.

Training builds it on first use anyway; building it first is handy before a multi-node
``torchrun`` job, or to inspect ``meta.json`` (counts, packing efficiency, dropped tails).

    python -m pretrain.segments                                  # the embedded corpus
    python -m pretrain.segments data=tianchi 'data.corpus=[train_set.csv,test_a.csv]'
    python -m pretrain.segments data=embedded_raw data.word_segmenter=jieba   # raw Chinese text
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pretrain.config import DataConfig
from pretrain.data import prepare_run_data
from ptm.config import register_resolvers, to_dataclass
from ptm.errors import exit_on_input_error

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
@exit_on_input_error
def main(cfg: DictConfig) -> str:
    data = to_dataclass(DataConfig, cfg.data)
    tokenizer = data.tokenizer or cfg.model.init_from
    folder, general = prepare_run_data(data, tokenizer)
    log.info("segment folder: %s (see its meta.json)", folder)
    if general is not None:
        log.info("general text for evaluation: %s", general)
    return str(folder)


if __name__ == "__main__":
    register_resolvers()
    main()
