#!/usr/bin/env bash
# One prepared GPU check of ptm, sized to fit a single device call (~9 minutes): the pretraining
# benchmark's GPU row (ptm vs Trainer, tokens/s and MFU), a few minutes of the full BERT-mini
# recipe, then fine-tuning from that model and from scratch (TASKS) in parallel with the GPU test
# leg, and last a speed grid of the pretraining step (compile, CUDA graphs, micro-batch) that the
# call's limit may cut. Run it ON the GPU machine from the repository root. Under $OUT (./gpu-out
# when unset) it writes gpu-check.log, steps.txt and results.tgz: one log per step, the runs'
# metrics, records (record.json) and TensorBoard logs, summary.json, BENCHMARKS.* (each benchmark
# row is the record of the run that measured it: command, commit, machine, settings, wall and CPU
# time); packed after every step, since the device tool brings back only a handful of files. It
# never stops at the first failure: every step has its own time limit and reports ok / FAILED.
# A copy of the tree without .git cannot tell its commit: start the device command with
# PTM_COMMIT=<sha> (git rev-parse HEAD where the tree came from) to put it into the records.
#
# Carry: the embedded corpus (make data here; ~38 MB) and, for images without hydra/seqeval,
# the pure-Python wheels in WHEELS (default .gpu/wheels; see the session kit's README):
#   carry = [".gpu", "outputs/data/embedded"], command = "bash bench/gpu/check.sh", timeout_s 590
# (bench/gpu/results/2026-11-30: ~9 minutes on an H200 held the benchmark, the full recipe, step 3
# and three grid cells; FULL_MINUTES=0 BENCH=0 leaves a call to the test leg and the grid).
# Timed steps (benchmark, full recipe, grid) run alone; the fine-tunings and tests, whose speed is
# not a claim, share the GPU. steps.txt records every finished step if the call is cut short.
# Rehearse on a CPU first (minutes):
#   DEVICE=cpu PREC=fp32 FULL_MINUTES=1 BENCH=0 GPU_TESTS=0 FT_ARGS=train.max_steps=20 \
#     PT_ARGS="runtime.compile=false train.batch_size=32 train.micro_batch_size=32" \
#     GRID_STEPS=6 GRID="eager-b32:runtime.compile=false,train.batch_size=32,train.micro_batch_size=32" \
#     PY=.venv/bin/python OUT=/tmp/gpu-rehearsal bash bench/gpu/check.sh
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
FULL_MINUTES=${FULL_MINUTES:-3}  # minutes of the full BERT-mini recipe; 0 skips it and the fine-tunings
PY=${PY:-python3}
DEVICE=${DEVICE:-auto}           # DEVICE=cpu rehearses the script on a CPU machine
PREC=${PREC:-auto}
PT_ARGS=${PT_ARGS:-}             # extra overrides of the full-recipe pretraining (a rehearsal: runtime.compile=false)
FT_ARGS=${FT_ARGS:-train.max_minutes=1.5}  # fine-tuning budget (a rehearsal: train.max_steps=20)
TASKS=${TASKS:-sentiment names}  # embedded tasks fine-tuned from the full-recipe model and from scratch
BENCH=${BENCH:-1}                # 0 skips the benchmark
BENCH_ARGS=${BENCH_ARGS:-pretrain.steps=40 pretrain.warmup_steps=5}
GPU_TESTS=${GPU_TESTS:-1}        # 0 skips the gpu test leg
# The grid: NAME:comma-separated overrides[:ENV=VALUE], each a short full-recipe run without probe,
# evaluation or checkpoints; its log's steady tokens/s is the figure. Empty skips it.
# Measured on 2026-11-30 from the logs (bench/gpu/results/2026-11-30; no records, so not in
# BENCHMARKS.md): eager, compiled and CUDA graphs at batch 256, batch 512. Each cell's run
# folder keeps its record.json, which comes back in results.tgz.
# Not yet, in order: CUDA graphs with gradient accumulation, micro-batches of 128 alone, CUDA
# graphs at batch 512. GRID= (empty) skips the grid.
GRID=${GRID-"cudagraphs-accum:train.micro_batch_size=128,runtime.compile_mode=reduce-overhead compiled-m128:train.micro_batch_size=128 cudagraphs-b512:train.batch_size=512,train.micro_batch_size=512,runtime.compile_mode=reduce-overhead"}
GRID_STEPS=${GRID_STEPS:-400}
WHEELS=${WHEELS:-.gpu/wheels}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HYDRA_FULL_ERROR=1

if ls "$WHEELS"/*.whl >/dev/null 2>&1 && ! $PY -c "import hydra, seqeval" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}

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
}
pack() {  # everything in one archive, replaced whole: a call cut short still brings back the last
  (cd "$W" && find . \( -name metrics.json -o -name record.json -o -name run_summary.json \
      -o -path '*/tb/*' \) -type f |
    while read -r f; do cp "$f" "$RES/runs/$(echo "${f#./}" | tr / _)"; done) 2>/dev/null
  local part="$OUT/.results.$BASHPID"  # steps run side by side: each packs into its own file
  tar czf "$part" -C "$RES" . 2>/dev/null; mv -f "$part" "$OUT/results.tgz"  # a file still being written is fine
}

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'transformers', transformers.__version__)"
  nproc; git log -1 --format='%h %s' 2>/dev/null | cut -c1-100
} >>"$LOG" 2>&1

DATA=outputs/data/embedded
[ -f "$DATA/pretrain.txt" ] || { echo "no $DATA: build it with make data and carry it" | tee -a "$LOG"; exit 2; }
RT="runtime.device=$DEVICE runtime.precision=$PREC"
W=${WORK:-/tmp/gpu-work}; RES=$W/results; mkdir -p "$W" "$RES/runs"  # models stay in $W; logs and metrics go to $RES

# 1. The pretraining benchmark's GPU row (bf16, with both sides' MFU), written as a record into
#    BENCHMARKS.json (rows merged by name: copy the returned file over the repository's).
if [ "$BENCH" = 1 ]; then
  step bench 150 $PY -m bench 'only=[pretrain]' pretrain.cpu=false $BENCH_ARGS
  cp BENCHMARKS.md BENCHMARKS.json "$RES/" 2>/dev/null
fi

# 2. The full BERT-mini recipe for a few minutes.
if [ "$FULL_MINUTES" != 0 ]; then
  step full-pretrain $((FULL_MINUTES * 60 + 90)) $PY -m pretrain +experiment=bert_mini_full $RT \
    train.max_steps=null train.max_minutes=$FULL_MINUTES train.eval_every=1000 \
    "data.corpus=[$DATA/pretrain.txt]" hydra.run.dir=$W/full $PT_ARGS
fi

# 3. Fine-tuning from that model and from scratch, beside the gpu test leg (tiny pretraining eager,
#    compiled and with CUDA graphs in bf16, exact fp32 resume with deterministic kernels, tiny
#    fine-tuning, exports; 4 of its 5 tests took 137 s on 2026-11-30).
if [ "$GPU_TESTS" = 1 ]; then
  step gpu-tests 240 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py &
fi
if [ "$FULL_MINUTES" != 0 ]; then
  for task in $TASKS; do
    step ft-$task-pretrained 150 $PY -m finetune $RT task=$task model.path=$W/full/model \
      hydra.run.dir=$W/ft-$task-pretrained $FT_ARGS &
    step ft-$task-scratch 150 $PY -m finetune $RT task=$task model.path=$W/full/model \
      model.init=scratch hydra.run.dir=$W/ft-$task-scratch $FT_ARGS &
  done
fi
wait

$PY - "$W" "$RES/summary.json" "$OUT/steps.txt" <<'PYEOF' >>"$LOG" 2>&1
import json, pathlib, sys
work, dest, steps = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
out = {"steps": steps.read_text().splitlines() if steps.exists() else [], "metrics": {}, "records": {}}
for name, key in (("metrics.json", "metrics"), ("record.json", "records")):
    for p in sorted(work.rglob(name)):
        try:
            out[key][str(p.relative_to(work))] = json.loads(p.read_text())
        except (OSError, ValueError) as e:  # reported, never hidden
            out[key][str(p.relative_to(work))] = f"unreadable: {e}"
pathlib.Path(dest).write_text(json.dumps(out, indent=1))
PYEOF
pack

# 4. The speed grid, one run at a time (what is left of the call's time decides how many finish).
for cell in $GRID; do
  IFS=: read -r name overrides envs <<<"$cell"
  step grid-$name 120 env ${envs:-PTM_GRID=1} $PY -m pretrain +experiment=bert_mini_full $RT \
    train.max_steps=$GRID_STEPS train.max_minutes=null train.log_every=50 \
    train.eval_every=1000000 train.save_every=1000000 data.probe=null \
    "data.corpus=[$DATA/pretrain.txt]" hydra.run.dir=$W/grid-$name ${overrides//,/ }
done
cat "$OUT/steps.txt"
