#!/bin/bash
# Cost of a pretraining step for each knob of the payoff recipe: 60 steps on 2 threads, probe and
# evaluation off; metrics.json's tokens/s (whole run, start-up of the loop included, same for all).
cd "$(dirname "$0")/../.."
declare -A KNOBS=(
  [payoff]=""
  [dropout_0.1]="model.hidden_dropout_prob=0.1 model.attention_probs_dropout_prob=0.1"
  [mask_0.15]="data.masking.rate=0.15"
  [mask_0.40]="data.masking.rate=0.4"
  [batch_16]="train.batch_size=16 train.micro_batch_size=16"
  [batch_64]="train.batch_size=64 train.micro_batch_size=64"
  [seq_256]="data.segments.max_seq_len=256 train.batch_size=16 train.micro_batch_size=16"
  [whole_word]="data.masking.whole_word=true"
  [bert_tiny]="model=bert_tiny model.hidden_dropout_prob=0 model.attention_probs_dropout_prob=0"
  [make_pretrain_default]="model.hidden_dropout_prob=0.1 model.attention_probs_dropout_prob=0.1 data.masking.rate=0.15 train.batch_size=16 train.micro_batch_size=16"
)
for name in payoff dropout_0.1 mask_0.15 mask_0.40 batch_16 batch_64 seq_256 whole_word bert_tiny make_pretrain_default; do
  .venv/bin/python -m pretrain +experiment=payoff ${KNOBS[$name]} train.max_steps=60 data.probe=null \
    train.eval_every=100000 train.save_every=100000 hydra.run.dir=outputs/recipes/cost/$name >/dev/null 2>&1
  python3 -c "import json,sys; m=json.load(open('outputs/recipes/cost/$name/metrics.json')); print('$name', m['tokens_per_s'], round(m['wall_seconds']/m['steps'],3))"
done
