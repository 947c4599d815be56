#!/usr/bin/env bash
# One prepared GPU check of ptm, sized to fit a single device call (~9 minutes at most): the GPU
# test leg, the GPU rows of the benchmarks, a few minutes of the full BERT-mini recipe, and
# fine-tuning from that model and from scratch (TASKS). Run it ON the GPU machine
# from the repository root; it writes gpu-check.log, steps.txt, summary.json and BENCHMARKS.md
# under $OUT (./gpu-out when unset) and never stops at the first failure: every step has its own
# time limit and reports ok / FAILED with its exit code.
#
# Carry: the embedded corpus (make data here; ~31 MB) and, for images without hydra/seqeval,
# the pure-Python wheels in WHEELS (default .gpu/wheels; see the session kit's README):
#   carry = [".gpu", "outputs/data/embedded"], command = "bash bench/gpu/check.sh", timeout_s 560
# The step limits add up to more than one call allows; on an H200 the steps end well before them,
# and steps.txt records every finished step if the call is cut short.
# Rehearse on a CPU first (minutes):
#   DEVICE=cpu PREC=fp32 FULL_MINUTES=1 BENCH=0 GPU_TESTS=0 FT_ARGS=train.max_steps=20 \
#     PT_ARGS="runtime.compile=false train.batch_size=32 train.micro_batch_size=32" \
#     PY=.venv/bin/python OUT=/tmp/gpu-rehearsal bash bench/gpu/check.sh
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
FULL_MINUTES=${FULL_MINUTES:-2}  # minutes of the full BERT-mini recipe
PY=${PY:-python3}
DEVICE=${DEVICE:-auto}           # DEVICE=cpu rehearses the script on a CPU machine
PREC=${PREC:-auto}
PT_ARGS=${PT_ARGS:-}             # extra overrides of the full-recipe pretraining (a rehearsal: runtime.compile=false)
FT_ARGS=${FT_ARGS:-train.max_minutes=0.75}  # fine-tuning budget (a rehearsal: train.max_steps=20)
TASKS=${TASKS:-sentiment names}  # embedded tasks fine-tuned from the full-recipe model and from scratch
BENCH=${BENCH:-1}                # 0 skips the benchmarks
BENCH_ARGS=${BENCH_ARGS:-pretrain.steps=40 pretrain.warmup_steps=5 finetune.steps=40 finetune.warmup_steps=5}
GPU_TESTS=${GPU_TESTS:-1}        # 0 skips the gpu test leg
WHEELS=${WHEELS:-.gpu/wheels}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HYDRA_FULL_ERROR=1

if ls "$WHEELS"/*.whl >/dev/null 2>&1 && ! $PY -c "import hydra, seqeval" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}

declare -a RESULTS
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$? dt=$((SECONDS - t0))
  local verdict=ok; [ $rc -ne 0 ] && verdict="FAILED rc=$rc"
  echo "=== $name: $verdict in ${dt}s" | tee -a "$LOG"
  RESULTS+=("$name: $verdict (${dt}s)")
  echo "$name: $verdict (${dt}s)" >>"$OUT/steps.txt"   # survives a run cut short
  # Flat names: the device tool does not bring back deeply nested folders.
  [ -d "${W:-}" ] && (cd "$W" && find . \( -name metrics.json -o -name run_summary.json -o -path '*/tb/*' \) \
    -type f | while read -r f; do cp "$f" "$OUT/runs/$(echo "${f#./}" | tr / _)"; done) 2>/dev/null
}

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'transformers', transformers.__version__)"
  nproc
} >>"$LOG" 2>&1

DATA=outputs/data/embedded
[ -f "$DATA/pretrain.txt" ] || { echo "no $DATA: build it with make data and carry it" | tee -a "$LOG"; exit 2; }
RT="runtime.device=$DEVICE runtime.precision=$PREC"
W=${WORK:-/tmp/gpu-work}; mkdir -p "$W" "$OUT/runs"  # models stay here; their metrics and TensorBoard logs go to $OUT/runs

# 1. The gpu test leg: tiny pretraining eager and compiled in bf16, exact fp32 resume with
#    deterministic kernels, tiny fine-tuning and the exports loading back.
[ "$GPU_TESTS" = 1 ] && step gpu-tests 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py

# 2. Benchmarks: pretraining and fine-tuning (their GPU rows, bf16, with MFU) and the host feed.
if [ "$BENCH" = 1 ]; then
  step bench 240 $PY -m bench 'only=[pretrain,finetune,feed]' pretrain.cpu=false finetune.cpu=false $BENCH_ARGS
  cp BENCHMARKS.md BENCHMARKS.json "$OUT/" 2>/dev/null
fi

# 3. The full BERT-mini recipe for a few minutes, then fine-tuning from it and from scratch.
step full-pretrain $((FULL_MINUTES * 60 + 60)) $PY -m pretrain +experiment=bert_mini_full $RT \
  train.max_steps=null train.max_minutes=$FULL_MINUTES train.eval_every=500 \
  "data.corpus=[$DATA/pretrain.txt]" hydra.run.dir=$W/full $PT_ARGS
for task in $TASKS; do
  step ft-$task-pretrained 75 $PY -m finetune $RT task=$task model.path=$W/full/model \
    hydra.run.dir=$W/ft-$task-pretrained $FT_ARGS
  step ft-$task-scratch 75 $PY -m finetune $RT task=$task model.path=$W/full/model \
    model.init=scratch hydra.run.dir=$W/ft-$task-scratch $FT_ARGS
done

$PY - "$W" "$OUT/summary.json" "${RESULTS[@]}" <<'PYEOF' >>"$LOG" 2>&1
import json, pathlib, sys
work, dest, steps = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
out = {"steps": steps, "metrics": {}}
for p in sorted(work.rglob("metrics.json")):
    try:
        out["metrics"][str(p.relative_to(work))] = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # reported, never hidden
        out["metrics"][str(p.relative_to(work))] = f"unreadable: {e}"
pathlib.Path(dest).write_text(json.dumps(out, indent=1))
print(json.dumps(out)[:4000])
PYEOF
printf '%s\n' "${RESULTS[@]}"
tail -c 3000 "$LOG" > "$OUT/gpu-check-tail.log"
