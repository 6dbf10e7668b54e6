#!/usr/bin/env bash
# docs/results.md section 4 at full scale (issue 13): BiLSTM students (Tang et al. 2019) of the MiniLM-L6
# teachers of scripts/teachers.sh on the 20k-row SST-2 sample and on MRPC (siamese BiLSTM): FT on labels vs
# KD (logit MSE) vs KD on the rows + Tang-augmented copies, 3 seeds; beside the 3-layer transformer student
# (scripts/scheme_results.sh's kd runs). Resumable: a run whose metrics.json is in runs/ or results/ is
# skipped; finished runs are copied to results/ (scripts/keep_results.sh).
#   nice -n 19 scripts/bilstm_results.sh [GLUE_DIR] [SEEDS] > runs/bilstm_results.log 2>&1 &
# Augmented copies per row: 5 (Tang used 20 on all of SST-2: 1.3M rows; CPU time). The generated sets and
# teacher caches are built once and shared by the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/bilstm-results
T=runs/teachers
KEEP="bilstm-results teachers"
source scripts/grid.sh "$@"
declare -A SETS=([sst2-20k]="sst2|--set data.train_rows=20000|minilm-sst2-20k" [mrpc]="mrpc||minilm-mrpc")
for seed in $SEEDS; do
  for set in mrpc sst2-20k; do
    IFS='|' read -r task rows tname <<< "${SETS[$set]}"
    d=$OUT/$set c=$OUT/cache/$set tm=$T/$tname/model
    [ -f "$T/$tname/metrics.json" ] || { echo "skip $set: teacher $tname absent (scripts/teachers.sh)"; continue; }
    common=(--task "$task" --seed "$seed" $rows)
    job "$d/ft-s$seed" finetune recipes/bilstm.yaml "${common[@]}" --set teacher=null --set "terms=[]" \
      --set hard_weight=1 --set student.init="$tm"
    job "$d/kd-s$seed" distill recipes/bilstm.yaml "${common[@]}" --teacher "$tm" --set teacher_cache.dir="$c/kd"
    job "$d/kd-tang-s$seed" distill recipes/bilstm.yaml "${common[@]}" --teacher "$tm" \
      --set transfer.dir="$OUT/sets/$set-tang" --set "transfer.augment={method: tang, copies: 5}" \
      --set teacher_cache.dir="$c/tang"
  done
done
echo "=== all done $(date -u +%H:%M:%S)"
