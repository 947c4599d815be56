"""``python -m convert``: TensorFlow BERT checkpoints <-> Hugging Face model folders.

CPU smoke run on the committed fixture (seconds)::

    python -m convert input=tests/fixtures/tf_bert/pretraining output=outputs/models/tiny-tf
    python -m convert direction=hf2tf input=outputs/models/tiny-tf output=outputs/tf/tiny shards=2

A Chinese BERT-wwm release (``bert_config.json``, ``vocab.txt``, ``bert_model.ckpt.*``)::

    python -m convert input=chinese_roberta_wwm_ext_L-12_H-768_A-12 output=outputs/models/roberta-wwm-ext
    make convert CKPT=chinese_roberta_wwm_ext_L-12_H-768_A-12 OUT=outputs/models/roberta-wwm-ext

Conversion is file I/O and checksums on one CPU core: there is no GPU or ``torchrun`` variant.
What each variable became is in ``<output>/conversion_report.json``.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from ptm.config import to_dataclass
from ptm.errors import exit_on_input_error
from ptm.tf.convert import ConvertConfig, run

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="convert")
@exit_on_input_error
def main(cfg: DictConfig) -> dict:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg))
    return run(to_dataclass(ConvertConfig, cfg))


if __name__ == "__main__":
    main()
