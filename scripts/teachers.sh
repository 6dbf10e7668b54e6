#!/usr/bin/env bash
# Fine-tune the teachers the result sections use, one after the other, skipping finished ones:
#   nice -n 19 scripts/teachers.sh [GLUE_DIR] >> runs/teachers.log 2>&1 &
# One thread (the other core stays free for work beside it). Teachers land in runs/teachers/NAME; a
# checkpoint every 50 steps, and an interrupted teacher continues (--resume) when the script runs again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
GLUE=${1:-../shared/data/glue}
teacher() {  # NAME TASK ARGS...
  local name=$1 task=$2; shift 2
  [ -f "runs/teachers/$name/metrics.json" ] && { echo "skip $name (done)"; return; }  # (a student needs the model: results/ is not enough)
  local again=(--overwrite)  # an interrupted run (kept with its checkpoint) continues where it stopped
  [ -d "runs/teachers/.$name.partial/checkpoint" ] && again=(--resume --resume-any-version)
  echo "=== $name $(date -u +%H:%M:%S) ${again[*]}"
  .venv/bin/textdistill finetune -r recipes/teacher.yaml -o "runs/teachers/$name" --task "$task" \
    --data-dir "$GLUE" "${again[@]}" --set train.checkpoint_every=50 "$@"
  .venv/bin/python scripts/compare_teacher.py "$name" || true  # (fine-tuned again: the kept one? informs only)
}
# MiniLM-L6 (6 x 384): minutes each
teacher minilm-rte rte
teacher minilm-mrpc mrpc
teacher minilm-sst2-20k sst2 --set data.train_rows=20000
# three seeds of each teacher for the multi-teacher runs (the default seed is 42)
for s in 1 2; do teacher "minilm-rte-s$s" rte --seed "$s"; done
for s in 1 2; do teacher "minilm-mrpc-s$s" mrpc --seed "$s"; done
for s in 1 2; do teacher "minilm-sst2-20k-s$s" sst2 --set data.train_rows=20000 --seed "$s"; done
# MPNet-12 (12 x 768, 110M): ~16 s per step of 16 RTE pairs on one thread, ~40 min per RTE epoch
# train.mixed_precision=auto: bf16 autocast of the training steps where bf16 is native (a CPU with AVX512-BF16 or
# AMX: half the step time of fp32; a GPU), fp32 elsewhere (emulated bf16 is ~27x slower: docs/performance.md 13.1)
# The settings of suites/mpnet12.yaml's teachers (2 epochs; SST-2 on all its rows), linked into that suite's
# teacher folder so that it reuses them instead of training its own
MPNET=(--set student.init=mpnet-12 --set train.lr=2e-5 --set train.batch_size=16 --set train.mixed_precision=auto
       --set train.epochs=2)
mkdir -p runs/suite-mpnet12/teachers
for task in rte mrpc sst2 qnli; do
  teacher "mpnet-$task" "$task" "${MPNET[@]}"
  ln -sfn "../../teachers/mpnet-$task" "runs/suite-mpnet12/teachers/mpnet-$task"
done
echo "=== all done $(date -u +%H:%M:%S)"
