#!/usr/bin/env bash
# docs/results.md (schemes): FT vs offline KD vs online DML (3-layer student), self-distillation
# with exits, born-again generations, several teachers (three seeds of the teacher). Resumable: a run
# with metrics.json is skipped.
# The same runs as a suite file: suites/schemes.yaml (textdistill suite), but for the early-exit sweeps.
#   nice -n 19 scripts/scheme_results.sh [GLUE_DIR] [SEEDS] > runs/schemes.log 2>&1 &
#   TASKS=sst2 scripts/scheme_results.sh ../shared/data/glue "2 3"    (some tasks only; default rte mrpc sst2)
#   PARTS="multi" scripts/scheme_results.sh ...   (some rows only: ft kd dml born-again kd-bf16 self multi mpnet;
#                                                  default all; the OOD evaluation follows the SST-2 runs)
# Needs the MiniLM-L6 teachers of scripts/teachers.sh (runs/teachers/minilm-*). Students keep layers 2, 4, 6.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/schemes
T=runs/teachers
KEEP="schemes teachers"
TASKS=${TASKS:-rte mrpc sst2}
source scripts/grid.sh "$@"
check_tasks rte mrpc sst2
ALL_PARTS="ft kd dml born-again kd-bf16 self multi mpnet"
PARTS=${PARTS:-$ALL_PARTS}
check_names PARTS $ALL_PARTS
part() { [[ " $PARTS " == *" $1 "* ]]; }
# the same 3-layer student from each of the teacher's seeds 1 and 2 alone, and from all three
# (averaged logits, or one KD term per teacher); seed 42's run is kd-s*
multi_teacher() {  # TASK SEED
  local task=$1 seed=$2 rows=${ROWS[$1]} t=$T/minilm-$1${ROWS[$1]:+-20k} d=$OUT/$1
  [ -f "$t-s1/metrics.json" ] && [ -f "$t-s2/metrics.json" ] || { echo "skip $task several teachers (no $t-s1/-s2)"; return; }
  local teachers="[{model: $t/model, name: s42}, {model: $t-s1/model, name: s1}, {model: $t-s2/model, name: s2}]"
  for combine in average per-teacher; do
    job "$d/kd-3teachers-$combine-s$seed" distill recipes/kd.yaml --task "$task" --seed "$seed" $rows \
      --set teacher=null --set "teachers=$teachers" --set combine=$combine --set teacher_cache.dir="$OUT/cache/$task-3teachers"
  done
  for ts in s1 s2; do
    job "$d/kd-teacher-$ts-s$seed" distill recipes/kd.yaml --task "$task" --seed "$seed" $rows \
      --teacher "$t-$ts/model" --set teacher_cache.dir="$OUT/cache/$task-minilm-$ts"
  done
}
declare -A ROWS=([sst2]="--set data.train_rows=20000" [mrpc]="" [rte]="")
declare -A BF16=([sst2]="--set train.mixed_precision=auto" [mrpc]="" [rte]="")
for seed in $SEEDS; do
  for task in $TASKS; do
    rows=${ROWS[$task]}
    teacher=$T/minilm-$task${rows:+-20k}/model
    d=$OUT/$task
    part ft && job "$d/ft-s$seed" finetune recipes/ft.yaml --task "$task" --seed "$seed" $rows
    part kd && job "$d/kd-s$seed" distill recipes/kd.yaml --task "$task" --seed "$seed" $rows --teacher "$teacher" \
      --set teacher_cache.dir="$OUT/cache/$task-minilm"
    # DML trains a 6- and a 3-layer peer: on SST-2's 20k rows under bf16 autocast where bf16 is native (auto:
    # section 13's speed-up; KD on MRPC lost nothing to it, 5.1; fp32 on CPUs without it), MRPC and RTE in fp32
    part dml && job "$d/dml-s$seed" distill recipes/dml.yaml --task "$task" --seed "$seed" $rows ${BF16[$task]}
    # born-again: two generations of 6-layer students (bf16 autocast on every task where it is native: auto)
    part born-again && job "$d/born-again-s$seed" distill recipes/born-again.yaml --task "$task" --seed "$seed" $rows --teacher "$teacher" \
      --set train.mixed_precision=auto
  done
  # the MRPC KD runs again with bf16 autocast (what it costs in accuracy)
  in_tasks mrpc && part kd-bf16 && job "$OUT/mrpc/kd-bf16-s$seed" distill recipes/kd.yaml --task mrpc --seed "$seed" --teacher "$T/minilm-mrpc/model" \
    --set teacher_cache.dir="$OUT/cache/mrpc-minilm" --set train.mixed_precision=bf16
  # SST-2 only: one model with exits
  sst=$OUT/sst2 rows=${ROWS[sst2]}
  in_tasks sst2 && part self && job "$sst/self-s$seed" distill recipes/self-distill.yaml --task sst2 --seed "$seed" $rows
  # the early-exit curve on SST-2 dev (kept beside the run's metrics; seed 1's plot in docs/)
  sweep=results/schemes/sst2/self-s$seed/exit-sweep.json
  # (docs/self-distill-exits-sst2.png: scripts/aggregate_schemes.py --plot, over every seed's sweep)
  if in_tasks sst2 && [ -f "$sst/self-s$seed/metrics.json" ] && [ ! -f "$sweep" ]; then
    .venv/bin/textdistill evaluate --model "$sst/self-s$seed/model" --task sst2 --data-dir "$GLUE" --exit-sweep \
      2>/dev/null | tail -n 1 > "$sweep.tmp" && mv "$sweep.tmp" "$sweep"
  fi
  # SST-2 models out of domain: IMDB's 2,000-review subset (results/**/ood-by-model.json)
  in_tasks sst2 && .venv/bin/python scripts/ood_results.py "$OUT"/sst2/*-s"$seed" "$T"/minilm-sst2-20k --data-dir "$GLUE" || true
  # several teachers: three seeds of the MiniLM teacher (42, 1, 2), where they exist
  for task in $TASKS; do
    if part multi; then multi_teacher "$task" "$seed"; fi
  done
  # a better teacher with another tokenizer (MPNet-12, scripts/teachers.sh; SST-2's on all its rows, as in
  # suites/mpnet12.yaml, the students on the 20k-row sample), alone and beside the MiniLM teacher, where it exists
  for task in rte mrpc sst2; do
    in_tasks "$task" && part mpnet && [ -f "$T/mpnet-$task/metrics.json" ] || continue
    rows=${ROWS[$task]} minilm=$T/minilm-$task${ROWS[$task]:+-20k}/model
    job "$OUT/$task/kd-mpnet-s$seed" distill recipes/kd.yaml --task "$task" --seed "$seed" $rows --teacher "$T/mpnet-$task/model" \
      --set teacher_cache.dir="$OUT/cache/$task-mpnet"
    job "$OUT/$task/kd-mpnet+minilm-s$seed" distill recipes/kd.yaml --task "$task" --seed "$seed" $rows --set teacher=null \
      --set "teachers=[{model: $T/mpnet-$task/model, name: mpnet, cache: $OUT/cache/$task-mpnet}, {model: $minilm, name: minilm, cache: $OUT/cache/$task-minilm}]"
  done
done
echo "=== all done $(date -u +%H:%M:%S)"
