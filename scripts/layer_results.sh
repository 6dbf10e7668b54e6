#!/usr/bin/env bash
# Regenerates the intermediate-layer comparison in docs/results.md: 3-layer students of a MiniLM-L6
# teacher (student init: MiniLM-L6's layers 2, 4, 6 -- not the first 3, whose [CLS] vector does not
# depend on the input, see docs/results.md) with FT, KD, PKD-Skip, PKD-Last, CKD, ALP-KD,
# RAIL-KD_l, RAIL-KD_c and TinyBERT-style terms, on real GLUE tasks in ../shared/data/glue.
# Resumable: finished runs are skipped. Results land in $OUT/<task>/; scripts/aggregate_layers.py
# turns them into the table. Order: seed by seed, cheapest task first, so a partial run is usable.
#   TASKS="rte mrpc" SEEDS="1" scripts/layer_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GLUE=${GLUE:-../shared/data/glue}
OUT=${OUT:-runs/layers}
TD=${TD:-.venv/bin/textdistill}
RECIPES=${RECIPES:-recipes}
TASKS=${TASKS:-"rte mrpc stsb cola sst2"}
SEEDS=${SEEDS:-"1 2 3"}
METHODS=${METHODS:-"ft kd pkd-skip pkd-last ckd alp-kd rail-kd-l rail-kd-c tinybert"}
SST2_ROWS=${SST2_ROWS:-8000}   # SST-2 students train on a random 8,000-row sample (sample_seed 0)
STUDENT_LAYERS=${STUDENT_LAYERS:-every:2}

run() {  # run <folder> <cmd...>: skip runs already done
  local dir=$1; shift
  if [ -f "$dir/metrics.json" ]; then return; fi
  mkdir -p "$(dirname "$dir")"
  echo "$(date +%T) start $dir"
  "$@" -o "$dir" --data-dir "$GLUE" --overwrite > "$dir.log" 2>&1
  echo "$(date +%T) done $dir: $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["dev"], m["train_seconds"], "s")' "$dir/metrics.json")"
}

for seed in $SEEDS; do
  for task in $TASKS; do
    extra=(--set "student.layers=$STUDENT_LAYERS")
    [ "$task" = sst2 ] && extra+=(--set "data.train_rows=$SST2_ROWS")
    # teacher: MiniLM-L6 fine-tuned on the task's full train set (SST-2: the one of sst2_results.sh if present)
    T="$OUT/$task/teacher"
    if [ "$task" = sst2 ] && [ -f runs/results/teacher/metrics.json ]; then T=runs/results/teacher; fi
    run "$T" $TD finetune -r $RECIPES/teacher.yaml --task "$task" --seed 1
    for method in $METHODS; do
      reg=()
      if [ "$task" = stsb ]; then  # regression: MSE to the teacher's output instead of soft targets
        case $method in
          ft) ;;
          kd) reg=(--set terms.kd.loss=mse --set "terms.kd.args={}") ;;
          *) reg=(--set terms.ds.loss=mse --set "terms.ds.args={}") ;;
        esac
      fi
      if [ "$method" = ft ]; then
        run "$OUT/$task/ft-s$seed" $TD finetune -r $RECIPES/ft.yaml --task "$task" --seed "$seed" "${extra[@]}"
      else
        cache=()  # teacher outputs computed once per task and method, shared by the seeds (not for TinyBERT's
        # sequences and attention maps)
        [ "$method" != tinybert ] && cache=(--set "teacher_cache.dir=$OUT/$task/cache-$method")
        run "$OUT/$task/$method-s$seed" $TD distill -r $RECIPES/$method.yaml --task "$task" --teacher "$T/model" \
          --seed "$seed" "${extra[@]}" "${reg[@]}" "${cache[@]}"
      fi
    done
  done
done
echo "$(date +%T) all done"
