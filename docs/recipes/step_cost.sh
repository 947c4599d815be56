#!/bin/bash
# Cost of a pretraining step for each knob of the payoff recipe (the rows: knobs.env): 60 steps
# on 2 threads, probe and evaluation off (the step budget set here replaces a row's own);
# metrics.json's tokens/s (whole run, start-up of the loop included, the same for all).
cd "$(dirname "$0")/../.."
source docs/recipes/knobs.env
for name in payoff dropout_0.1 mask_0.15 mask_0.40 batch_16 batch_64 seq_256 whole_word bert_tiny; do
  .venv/bin/python -m pretrain +experiment=payoff ${KNOBS[$name]} train.max_steps=60 data.probe=null \
    train.eval_every=100000 train.save_every=100000 hydra.run.dir=outputs/recipes/cost/$name >/dev/null 2>&1
  python3 -c "import json,sys; m=json.load(open('outputs/recipes/cost/$name/metrics.json')); print('$name', m['tokens_per_s'], round(m['wall_seconds']/m['steps'],3))"
done
