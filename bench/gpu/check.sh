#!/usr/bin/env bash
# One prepared GPU check of ptm, run ON the GPU machine from the repository root. Its steps, in
# the order of what is still unmeasured (issue 31; STEPS= picks some, in this order):
#   ft-bench          the fine-tuning benchmark's GPU row against transformers.Trainer, same batch
#                     (32) and precision (bf16): ptm compiled (reduce-overhead: CUDA graphs) over
#                     length buckets, its eager rate beside it; retried in torch.compile's default
#                     mode if that fails (BENCHMARKS.json: the record of the run)
#   profile-pretrain  where a step of +experiment=bert_mini_full spends its time (bench.gpu.profile:
#                     matmuls, attention, MLM head, optimizer, other kernels, GPU idle)
#   profile-finetune  the same for fine-tuning at batch 32, compiled over buckets
#   bench-mfu         the pretraining benchmark's compiled GPU row: tokens/s and MFU of both sides
#   grid              400 steps of bert_mini_full per cell, one setting changed: CUDA graphs through
#                     runtime.compile_mode=reduce-overhead itself, with gradient accumulation,
#                     batch 1024, max-autotune (each run's log and record)
#   payoff            +experiment=payoff (the CPU payoff recipe: 10,000 steps of 32 x 128) on the
#                     GPU, then bench.gpu.payoff: the seconds until the held-out loss reached
#                     TARGET (2.40, the CPU run's figure)
#   report            the report's 100 / 1,000-row cells from that model, sentiment and names,
#                     seeds 1-3, pretrained / scratch / TF-IDF; the GPU test leg runs beside it
#   gpu-tests         the GPU test leg alone (when report is not among STEPS)
#   full              FULL_MINUTES of bert_mini_full, then fine-tuning from it (measured before)
# Timed steps run alone; the test leg shares the GPU with the report, whose speed is no claim.
# Every step has its own time limit, reports ok / FAILED (steps.txt) and never stops the script;
# after each one everything is packed into $OUT/results.tgz (logs, profile and payoff records,
# BENCHMARKS.*, the runs' metrics.json / record.json / run.json / TensorBoard logs, report.*,
# summary.json), since the device tool brings back only a handful of files; profile traces go
# to $OUT/trace-*.json.gz. What one H200 call held on 2026-11-30: bench/gpu/results/.
#
# Rough times on an H200 (estimates; none of these steps has run yet): ft-bench 3-4 min,
# each profile 1.5-2, bench-mfu 2-3, each grid cell 1-2 (max-autotune more), payoff 2-4,
# report 5-10. One ~9-minute call does not hold them all: start a second (warm machine) with
# STEPS= naming what the first did not finish, e.g. STEPS="payoff report".
#
# Device call (from the repository root; make data first, ~38 MB; for an
# image without hydra/seqeval, their pure-Python wheels in WHEELS):
#   carry = [".gpu", "outputs/data/embedded"], timeout_s 590,
#   command = "PTM_COMMIT=<git rev-parse HEAD> bash bench/gpu/check.sh"
# (a tree copied without .git cannot tell its commit; PTM_COMMIT puts it into the records).
#
# Values in *_ARGS are split on spaces with globbing off: write Hydra's quotes literally, as in
# REPORT_ARGS='finetune_overrides=["train.limit_examples=300"]'.
# Rehearse on a CPU first (about 8 minutes on 2 cores):
#   DEVICE=cpu PREC=fp32 PY=.venv/bin/python OUT=/tmp/gpu-rehearsal WORK=/tmp/gpu-rehearsal-work \
#   FT_BENCH_ARGS="finetune.cpu=true finetune.steps=2 finetune.warmup_steps=1" \
#   PROFILE_ARGS="--steps 2 --skip 1" \
#   PT_ARGS="runtime.compile=false train.batch_size=8 train.micro_batch_size=8" \
#   FT_PROFILE_ARGS="runtime.compile=false" \
#   MFU_ARGS="pretrain.cpu=true pretrain.steps=2 pretrain.warmup_steps=1 pretrain.batch_size=8" \
#   GRID_STEPS=4 GRID="eager-b8:runtime.compile=false,train.batch_size=8,train.micro_batch_size=8" \
#   PAYOFF_ARGS="runtime.compile=false train.max_steps=20 train.eval_every=10 data.probe=null" \
#   TARGET=9 REPORT_ARGS='tasks=[sentiment] seeds=[1] budget_steps=4 budget_evals=1
#     finetune_overrides=["train.limit_examples=200"]' GPU_TESTS=0 bash bench/gpu/check.sh
set -u
set -f  # *_ARGS hold Hydra lists ([...]): no globbing when they are split
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
PY=${PY:-python3}
DEVICE=${DEVICE:-auto}           # DEVICE=cpu rehearses the script on a CPU machine
PREC=${PREC:-auto}
STEPS=${STEPS:-ft-bench profile-pretrain profile-finetune bench-mfu grid payoff report}
FT_BENCH_ARGS=${FT_BENCH_ARGS:-finetune.cpu=false finetune.steps=200 finetune.warmup_steps=60}
PROFILE_ARGS=${PROFILE_ARGS:---steps 20 --skip 60}  # profiled steps, and steps before them
PT_ARGS=${PT_ARGS:-}             # extra overrides of bert_mini_full (profile, grid, full)
FT_PROFILE_ARGS=${FT_PROFILE_ARGS:-runtime.compile=true runtime.compile_mode=reduce-overhead runtime.padding=buckets}
MFU_ARGS=${MFU_ARGS:-pretrain.cpu=false pretrain.steps=100 pretrain.warmup_steps=30 +pretrain.gpu_compile=default}
# The grid: NAME:comma-separated overrides[:ENV=VALUE], each a short bert_mini_full run without
# probe, evaluation or checkpoints; its log's steady tokens/s and its record are the figures.
# Measured on 2026-11-30 (bench/gpu/results/2026-11-30): eager, compiled and (through
# TORCHINDUCTOR_CUDAGRAPHS=1) CUDA graphs at batch 256, batch 512. GRID= (empty) skips the grid.
GRID=${GRID-"cudagraphs-b256:runtime.compile_mode=reduce-overhead cudagraphs-accum:train.micro_batch_size=128,runtime.compile_mode=reduce-overhead compiled-b1024:train.batch_size=1024,train.micro_batch_size=1024 autotune-b256:runtime.compile_mode=max-autotune"}
GRID_STEPS=${GRID_STEPS:-400}
PAYOFF_ARGS=${PAYOFF_ARGS:-runtime.compile=true}
TARGET=${TARGET:-2.40}           # the payoff recipe's held-out loss on CPU (docs/RECIPES.md)
REPORT_ARGS=${REPORT_ARGS:-}
GPU_TESTS=${GPU_TESTS:-1}        # 0: no test leg beside the report
FULL_MINUTES=${FULL_MINUTES:-3}  # for the step "full" only
FT_ARGS=${FT_ARGS:-train.max_minutes=1.5}
TASKS=${TASKS:-sentiment names}
WHEELS=${WHEELS:-.gpu/wheels}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HYDRA_FULL_ERROR=1

if ls "$WHEELS"/*.whl >/dev/null 2>&1 && ! $PY -c "import hydra, seqeval" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}

wants() { [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step NAME LIMIT_S COMMAND...  (its output goes to NAME.log in results.tgz)
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$RES/$name.log" 2>&1
  local rc=$? dt=$((SECONDS - t0))
  local verdict=ok; [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  echo "=== $name: $verdict in ${dt}s" | tee -a "$LOG"
  echo "$name: $verdict (${dt}s)" >>"$OUT/steps.txt"   # survives a run cut short
  pack
  return $rc
}
keep() {  # keep FILE NAME: a result file into the archive
  [ -f "$1" ] && cp "$1" "$RES/$2"
}
pack() {  # everything in one archive, replaced whole: a call cut short still brings back the last
  (cd "$W" && find . \( -name metrics.json -o -name record.json -o -name run.json \
      -o -name report.json -o -name report.md -o -path '*/tb/*' \) -type f |
    while read -r f; do cp "$f" "$RES/runs/$(echo "${f#./}" | tr / _)"; done) 2>/dev/null
  cp BENCHMARKS.md BENCHMARKS.json "$RES/" 2>/dev/null
  summarize
  local part="$OUT/.results.$BASHPID"  # steps run side by side: each packs into its own file
  tar czf "$part" -C "$RES" . 2>/dev/null; mv -f "$part" "$OUT/results.tgz"  # a file still being written is fine
}
summarize() {  # summary.json: the finished steps, and every run's metrics and record
  $PY - "$W" "$RES/summary.json" "$OUT/steps.txt" <<'PYEOF' >>"$LOG" 2>&1
import json, pathlib, sys
work, dest, steps = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
out = {"steps": steps.read_text().splitlines() if steps.exists() else [], "metrics": {}, "records": {}}
for name, key in (("metrics.json", "metrics"), ("record.json", "records"), ("profile.json", "records"), ("payoff.json", "records")):
    for p in sorted(work.rglob(name)):
        try:
            out[key][str(p.relative_to(work))] = json.loads(p.read_text())
        except (OSError, ValueError) as e:  # reported, never hidden
            out[key][str(p.relative_to(work))] = f"unreadable: {e}"
pathlib.Path(dest).write_text(json.dumps(out, indent=1))
PYEOF
}

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'transformers', transformers.__version__)"
  nproc; git log -1 --format='%h %s' 2>/dev/null | cut -c1-100; echo "PTM_COMMIT=${PTM_COMMIT:-}"
  echo "STEPS=$STEPS"
} >>"$LOG" 2>&1

DATA=outputs/data/embedded
[ -f "$DATA/pretrain.txt" ] || { echo "no $DATA: build it with make data and carry it" | tee -a "$LOG"; exit 2; }
RT="runtime.device=$DEVICE runtime.precision=$PREC"
FULL="+experiment=bert_mini_full $RT data.corpus=[$DATA/pretrain.txt]"
W=${WORK:-/tmp/gpu-work}; RES=$W/results; mkdir -p "$W" "$RES/runs"  # models stay in $W; logs and metrics go to $RES

profile() {  # profile NAME STAGE ARGS...: bench.gpu.profile into $W/NAME; its table into the archive
  local name=$1; shift
  step "$name" 240 $PY -m bench.gpu.profile "$@" $PROFILE_ARGS --out "$W/$name"
  keep "$W/$name/profile.json" "$name.json"; keep "$W/$name/profile.md" "$name.md"
  cp "$W/$name/trace.json.gz" "$OUT/trace-$name.json.gz" 2>/dev/null
  pack
}

# 1. Fine-tuning against the Trainer on the GPU (the row merges into BENCHMARKS.json by name).
if wants ft-bench; then
  step ft-bench 360 $PY -m bench 'only=[finetune]' $FT_BENCH_ARGS ||
    step ft-bench-default 300 $PY -m bench 'only=[finetune]' $FT_BENCH_ARGS +finetune.gpu_compile=default
fi

# 2. Profiles: the full recipe, and fine-tuning (from a random-weight BERT-mini with the reviews'
#    tokenizer, as the fine-tuning benchmark makes it).
if wants profile-pretrain; then
  profile profile-pretrain pretrain $FULL $PT_ARGS
fi
if wants profile-finetune; then
  step ft-model 120 $PY -c "from pathlib import Path; from bench.finetune import _setup; _setup(Path('$W/ft-model'), 256)"
  profile profile-finetune finetune task=sentiment model.path=$W/ft-model/model $RT $FT_PROFILE_ARGS
fi

# 3. The pretraining benchmark's compiled GPU row: tokens/s and MFU, both sides.
if wants bench-mfu; then
  step bench-mfu 300 $PY -m bench 'only=[pretrain]' $MFU_ARGS
fi

# 4. The speed grid, one run at a time.
if wants grid; then
  for cell in $GRID; do
    IFS=: read -r name overrides envs <<<"$cell"
    step grid-$name 180 env ${envs:-PTM_GRID=1} $PY -m pretrain $FULL \
      train.max_steps=$GRID_STEPS train.max_minutes=null train.log_every=50 \
      train.eval_every=1000000 train.save_every=1000000 data.probe=null \
      hydra.run.dir=$W/grid-$name $PT_ARGS ${overrides//,/ }
  done
fi

# 5. The payoff recipe on the GPU, and when its held-out loss reached TARGET.
if wants payoff; then
  started=$(date +%s)
  step payoff 480 $PY -m pretrain +experiment=payoff $RT hydra.run.dir=$W/payoff $PAYOFF_ARGS
  step payoff-time 60 $PY -m bench.gpu.payoff $W/payoff --target $TARGET --started $started \
    --out $W/payoff/payoff.json
  keep "$W/payoff/payoff.json" payoff.json; pack
fi

# 6. The report's small-budget cells from that model, beside the GPU test leg.
if wants report || wants gpu-tests; then
  if [ "$GPU_TESTS" = 1 ] || wants gpu-tests; then
    step gpu-tests 420 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py &
  fi
  if wants report; then
    step report 540 $PY -m finetune.report model_path=$W/payoff/model 'budgets=[100,1000]' \
      'modes=[pretrained,scratch,tfidf]' hydra.run.dir=$W/report $REPORT_ARGS
  fi
  wait
fi

# 7. A few minutes of the full recipe, then fine-tuning from it and from scratch (2026-11-30).
if wants full; then
  step full-pretrain $((FULL_MINUTES * 60 + 90)) $PY -m pretrain $FULL train.max_steps=null \
    train.max_minutes=$FULL_MINUTES train.eval_every=1000 hydra.run.dir=$W/full $PT_ARGS
  for task in $TASKS; do
    step ft-$task-pretrained 150 $PY -m finetune $RT task=$task model.path=$W/full/model \
      hydra.run.dir=$W/ft-$task-pretrained $FT_ARGS &
    step ft-$task-scratch 150 $PY -m finetune $RT task=$task model.path=$W/full/model \
      model.init=scratch hydra.run.dir=$W/ft-$task-scratch $FT_ARGS &
  done
  wait
fi
pack
cat "$OUT/steps.txt"
