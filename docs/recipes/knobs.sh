#!/bin/bash
# The knob table of docs/RECIPES.md: the payoff recipe's knobs for 1,600 steps of 32 x 128
# (6.4 M tokens) with one knob changed per run (the rows: knobs.env), and with two other seeds
# for the spread a single knob has to beat.
# Two runs at a time, one thread each, so a 2-core machine does the table in about 2.5 hours;
# step budgets make every run the same whatever else the machine does. Then:
#   python -m sweeps.summary dir=outputs/recipes/knobs          # ranked by held-out loss
#   python docs/recipes/knob_table.py                            # the table of docs/RECIPES.md
# One name as an argument runs that row only: bash docs/recipes/knobs.sh mask_0.40
cd "$(dirname "$0")/../.."
source docs/recipes/knobs.env
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
