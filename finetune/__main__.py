"""Fine-tune a pretrained model on labelled tasks: classification, sentence pairs, BIO tagging,
or several at once over one shared encoder.

CPU smoke run (seconds):   python -m finetune +experiment=finetune_tiny
Default (CPU, minutes):    make finetune        # = python -m finetune: embedded review sentiment,
                                                #   from outputs/pretrain/latest/model
One GPU:                   python -m finetune runtime.device=cuda
Several GPUs:              torchrun --nproc_per_node=4 -m finetune train.micro_batch_size=8
Other tasks:               python -m finetune task=names | task=multitask
Your Tianchi data:         python -m finetune task=tianchi tasks.tianchi.train=/data/train_set.csv \\
                               tasks.tianchi.test=/data/test_a.csv
From scratch (baseline):   python -m finetune model.init=scratch
Cross-validation:          python -m finetune task=tianchi ... cv.folds=5   # finetune/cv.py
An ensemble of runs:       python -m finetune.ensemble 'runs=[RUN1,RUN2,RUN3]'
Predict a new file:        python -m finetune.predict run=RUN 'inputs=[test_b.csv]'
Continue a stopped run:    python -m finetune resume=outputs/finetune/<time>   # same overrides
A sweep:                   python -m finetune -m train.lr=5e-5,1e-4,2e-4 train.seed=1,2,3
Optuna search:             python -m finetune -m +search=optuna
One job per GPU:           python -m finetune -m +launcher=gpus train.lr=1e-4,2e-4 train.seed=1,2
On SLURM:                  python -m finetune -m +launcher=slurm hydra.launcher.partition=gpu \\
                               train.lr=1e-4,2e-4
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.config import build_config
from finetune.cv import run_folds
from finetune.train import run
from ptm.config import register_resolvers, resolve
from ptm.errors import exit_on_input_error
from ptm.training.stop import exit_resumable_when_stopped, resume_when_requeued


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
@exit_resumable_when_stopped
@exit_on_input_error
def main(cfg: DictConfig) -> float:
    data = resolve(cfg)  # a required value left at ??? is a one-line error
    data["run_dir"] = HydraConfig.get().runtime.output_dir
    data["resume"] = resume_when_requeued(data["resume"], data["run_dir"])
    cfg = build_config(data)
    if cfg.cv.folds is not None and cfg.cv.fold is None:
        out = run_folds(cfg)["cv"]["tasks"]
        # What a Hydra sweeper optimises: the out-of-fold score (the mean over tasks).
        return float(sum(t["oof"][t["metric"]] for t in out.values()) / len(out))
    metrics = run(cfg)
    return metrics["best"]["dev_score"]  # what a Hydra sweeper optimises


if __name__ == "__main__":
    register_resolvers()
    main()
