#!/usr/bin/env bash
# docs/results.md section 6 (transfer sets): 3-layer MiniLM students (layers 2, 4, 6) of a MiniLM-L6 teacher,
# KD on the training rows vs KD on rows + Tang-augmented / TinyBERT-style-augmented rows vs KD + adversarial
# rows vs data-free KD (no real row) vs two-stage TinyBERT (general + task). Resumable: a run whose
# metrics.json is in runs/ or results/ is skipped; finished runs are copied to results/ (scripts/keep_results.sh).
#   nice -n 19 scripts/transfer_results.sh [GLUE_DIR] [SEEDS] > runs/transfer.log 2>&1 &
#   TASKS="rte mrpc" scripts/transfer_results.sh ../shared/data/glue 1     (some sets only; default all four)
#   METHODS="ft kd adversarial" scripts/transfer_results.sh ...             (some methods only; default all eight:
#     ft kd datafree tang tinybert-aug adversarial tinybert tinybert-2stage) -- e.g. a second process that
#     needs no generated set while the first builds them (two processes never build the same set at once)
# Augmentation copies per row: 20 on the 2k-row SST-2 sample (Tang's n_iter), 2 on the 20k sample and 5 on
# MRPC/RTE (CPU time). Generated sets and teacher caches are built once and shared by the seeds. Every student
# trains under bf16 autocast where bf16 is native (train.mixed_precision: auto; docs/performance.md section 13:
# half the step time on a CPU with native bf16, ~27x slower emulated; KD on MRPC 81.35 ± 0.46 vs fp32 81.39 ±
# 0.49), in fp32 elsewhere (each run's recipe.yaml says which); the teachers are the fp32 ones.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/transfer
T=runs/teachers
KEEP="transfer teachers"
TASKS=${TASKS:-sst2-2k rte mrpc sst2-20k}
source scripts/grid.sh "$@"
check_tasks sst2-2k rte mrpc sst2-20k
ALL_METHODS="ft kd datafree tang tinybert-aug adversarial tinybert tinybert-2stage"
METHODS=${METHODS:-$ALL_METHODS}
check_names METHODS $ALL_METHODS
want() { [[ " $METHODS " == *" $1 "* ]]; }
teacher() {  # NAME TASK ARGS...
  local name=$1 task=$2; shift 2
  [ -f "$T/$name/metrics.json" ] && return
  echo "=== teacher $name $(date -u +%H:%M:%S)"
  .venv/bin/textdistill finetune -r recipes/teacher.yaml -o "$T/$name" --task "$task" --data-dir "$GLUE" \
    --overwrite "$@" 2>&1 | tr '\r' '\n' | grep -E "epoch . step|error|wrote" || true
  .venv/bin/python scripts/compare_teacher.py "$name" || true  # (fine-tuned again: the kept one? informs only)
}
[ -f runs/corpus/general.txt ] || .venv/bin/python scripts/make_corpus.py "$GLUE" runs/corpus/general.txt --exclude SST-2
in_tasks sst2-2k && teacher minilm-sst2-2k sst2 --set data.train_rows=2000
declare -A SETS=([sst2-2k]="sst2|--set data.train_rows=2000|minilm-sst2-2k|20"
                 [rte]="rte||minilm-rte|5" [mrpc]="mrpc||minilm-mrpc|5"
                 [sst2-20k]="sst2|--set data.train_rows=20000|minilm-sst2-20k|2")
for seed in $SEEDS; do
  for set in $TASKS; do
    IFS='|' read -r task rows tname copies <<< "${SETS[$set]}"
    d=$OUT/$set c=$OUT/cache/$set tm=$T/$tname/model
    [ -f "$T/$tname/metrics.json" ] || { echo "skip $set: teacher $tname absent (scripts/teachers.sh)"; continue; }
    common=(--task "$task" --seed "$seed" $rows --set train.mixed_precision=auto)
    want ft && job "$d/ft-s$seed" finetune recipes/ft.yaml "${common[@]}"
    want kd && job "$d/kd-s$seed" distill recipes/kd.yaml "${common[@]}" --teacher "$tm" --set teacher_cache.dir="$c/kd"
    # data-free: 1,000 synthetic rows per class (sentence pairs for MRPC and RTE, 16 words a side)
    want datafree && job "$d/kd-datafree-s$seed" distill recipes/kd.yaml "${common[@]}" --teacher "$tm" --set hard_weight=0 \
      --set terms.kd.weight=1 --set "transfer={dir: $OUT/sets/$set-synthetic, train_rows: false, synthetic: {per_class: 1000, steps: 30}}"
    want tang && job "$d/kd-tang-s$seed" distill recipes/kd-tang.yaml "${common[@]}" --teacher "$tm" \
      --set transfer.dir="$OUT/sets/$set-tang" --set transfer.augment.copies="$copies" --set teacher_cache.dir="$c/tang"
    want tinybert-aug && job "$d/kd-tinybert-aug-s$seed" distill recipes/kd-tinybert-aug.yaml "${common[@]}" --teacher "$tm" \
      --set transfer.dir="$OUT/sets/$set-tinybert" --set transfer.augment.copies="$copies" \
      --set teacher_cache.dir="$c/tinybert-aug"
    want adversarial && job "$d/kd-adversarial-s$seed" distill recipes/kd.yaml "${common[@]}" --teacher "$tm" \
      --set "transfer.adversarial={flips: 2, every: 1}"
    want tinybert && job "$d/tinybert-s$seed" distill recipes/tinybert.yaml "${common[@]}" --teacher "$tm"
    want tinybert-2stage && job "$d/tinybert-2stage-s$seed" distill recipes/tinybert-2stage.yaml "${common[@]}" --teacher "$tm" \
      --set stages.general.data.train_rows=20000
  done
done
echo "=== all done $(date -u +%H:%M:%S)"
