"""Masked-LM pretraining (no next-sentence prediction) of BERT-style models.

CPU smoke run (seconds):   python -m pretrain +experiment=tiny
Default (BERT-mini, CPU):  make pretrain          # = python -m pretrain
One GPU:                   python -m pretrain runtime.device=cuda
Several GPUs / nodes:      torchrun --nproc_per_node=8 -m pretrain +experiment=bert_mini_full train.micro_batch_size=32
                           (add --nnodes=N --node_rank=R --rdzv_endpoint=HOST:PORT for nodes)
Resume a run:              python -m pretrain resume=outputs/pretrain/latest
Continue from a model:     python -m pretrain model.init_from=PATH 'data.corpus=[my.txt]'
Optuna search:             python -m pretrain -m +search=optuna_pretrain
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pretrain.config import PretrainConfig
from pretrain.train import run
from ptm.config import register_resolvers, resolve, to_dataclass
from ptm.errors import exit_on_input_error
from ptm.training.stop import exit_resumable_when_stopped, resume_when_requeued


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
@exit_resumable_when_stopped
@exit_on_input_error
def main(cfg: DictConfig) -> float:
    data = resolve(cfg)
    data["run_dir"] = HydraConfig.get().runtime.output_dir
    data["resume"] = resume_when_requeued(data["resume"], data["run_dir"])
    metrics = run(to_dataclass(PretrainConfig, data))
    # What a Hydra sweeper minimises; NaN (a failed trial to Optuna) when there is no held-out split.
    return metrics.get("eval/loss", float("nan"))


if __name__ == "__main__":
    register_resolvers()
    main()
