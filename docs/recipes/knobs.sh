#!/bin/bash
# The knob table of docs/RECIPES.md: the `make pretrain` recipe (1,600 steps of 32 x 128 =
# 6.5 M tokens, the payoff recipe's knobs) with one knob changed per run, and with two other
# seeds for the spread a single knob has to beat.
# Two runs at a time, one thread each, so a 2-core machine does the table in about 2.5 hours;
# step budgets make every run the same whatever else the machine does. Then:
#   python -m sweeps.summary dir=outputs/recipes/knobs          # ranked by held-out loss
#   python docs/recipes/knob_table.py                            # the table of docs/RECIPES.md
# One name as an argument runs that row only: bash docs/recipes/knobs.sh mask_0.40
cd "$(dirname "$0")/../.."
declare -A KNOBS=(
  [payoff]=""
  [seed_1]="train.seed=1"
  [seed_2]="train.seed=2"
  [dropout_0.1]="model.hidden_dropout_prob=0.1 model.attention_probs_dropout_prob=0.1"
  [mask_0.15]="data.masking.rate=0.15"
  [mask_0.40]="data.masking.rate=0.4"
  # 40% costs about 1.3x a step of 30% (docs/recipes/step_cost.sh): the same minutes, not steps
  [mask_0.40_same_time]="data.masking.rate=0.4 train.max_steps=1230"
  [lr_5e-4]="train.lr=5e-4"
  [lr_2e-3]="train.lr=2e-3"
  [warmup_0.01]="train.warmup_fraction=0.01"
  [warmup_0.10]="train.warmup_fraction=0.1"
  [batch_16]="train.batch_size=16 train.micro_batch_size=16 train.max_steps=3200"
  [batch_64]="train.batch_size=64 train.micro_batch_size=64 train.max_steps=800 train.eval_every=200 data.probe.every=400"
  [seq_256]="data.segments.max_seq_len=256 train.batch_size=16 train.micro_batch_size=16"
  [whole_word]="data.masking.whole_word=true"
  [bert_tiny]="model=bert_tiny model.hidden_dropout_prob=0 model.attention_probs_dropout_prob=0 train.max_steps=4800"
)
# The two runs that build their own segment caches (256 IDs, word marks) go first, one per lane.
ORDER=(seq_256 whole_word payoff seed_1 seed_2 mask_0.15 mask_0.40 mask_0.40_same_time dropout_0.1 lr_5e-4 lr_2e-3 batch_16 batch_64 bert_tiny warmup_0.01 warmup_0.10)
run_one() {
  local name=$1
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 .venv/bin/python -m pretrain +experiment=payoff train.max_steps=1600 \
    data.probe.every=800 ${KNOBS[$name]} hydra.run.dir=outputs/recipes/knobs/$name \
    >"outputs/recipes/knobs.$name.log" 2>&1 && echo "done: $name" || echo "FAILED: $name (outputs/recipes/knobs.$name.log)"
}
mkdir -p outputs/recipes/knobs
if [ $# -gt 0 ]; then
  for name in "$@"; do run_one "$name"; done
else
  export -f run_one
  export KNOBS_DECL
  KNOBS_DECL=$(declare -p KNOBS)
  printf '%s\n' "${ORDER[@]}" | xargs -P 2 -I{} bash -c 'eval "$KNOBS_DECL"; run_one {}'
fi
