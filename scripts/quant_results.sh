#!/usr/bin/env bash
# docs/performance.md section 6 at full scale (issue 13): 3-layer MiniLM students of the MiniLM-L6 teachers of
# scripts/teachers.sh on MRPC and on the 20k-row SST-2 sample, distilled in fp32 (recipes/qat-kd.yaml without
# quantization), then trained on from there with quantization-aware KD (int8 per-channel weights, dynamic int8
# inputs; one epoch, lr 2e-5, from the fp32 student as TernaryBERT starts from its fp32 model). Terms: MRPC
# TinyBERT's (logits + embeddings + hidden + attention, live teacher); SST-2 20k the logits alone from the
# teacher cache (soft CE, T 5, hard_weight 0.5): the live 6-layer teacher for hidden and attention terms on
# 20k rows x 3 epochs is ~2 h on one core here. Resumable: a run whose metrics.json is in runs/ or results/ is
# skipped; finished runs are kept in results/quant/.
#   nice -n 19 scripts/quant_results.sh [GLUE_DIR] [SEEDS] > runs/quant_results.log 2>&1 &
# SEEDS: default 1 here (not grid.sh's 1 2 3: the table is about runtimes; one student per set). Checkpoints
# every 100 steps (this script's --set, after grid.sh's default).
# Then, with nothing else running (latency), the runtimes side by side for each set:
#   .venv/bin/python bench/onnx_speed.py --student runs/quant/sst2-20k/fp32-s1/model \
#     --qat runs/quant/sst2-20k/qat-s1/model --task sst2 --data-dir ../shared/data/glue \
#     --json bench/results/onnx_speed_sst2_20k.json
# The QAT run starts from the fp32 run's model folder: where only the fp32 run's metrics survive (results/),
# the QAT run is skipped with a message (delete results/quant/SET/fp32-sSEED to train both again).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/quant
T=runs/teachers
KEEP="quant"
source scripts/grid.sh "${1:-}" "${2:-${SEEDS:-1}}"
LOGITS="terms=[{name: ds, tap: logits, loss: soft_ce, weight: 0.5, args: {temperature: 5}}]"
declare -A SETS=([sst2-20k]="sst2|--set data.train_rows=20000|minilm-sst2-20k|logits" [mrpc]="mrpc||minilm-mrpc|")
for seed in $SEEDS; do
  for set in mrpc sst2-20k; do
    IFS='|' read -r task rows tname terms <<< "${SETS[$set]}"
    d=$OUT/$set tm=$T/$tname/model
    [ -f "$T/$tname/metrics.json" ] || { echo "skip $set: teacher $tname absent (scripts/teachers.sh)"; continue; }
    common=(--task "$task" --seed "$seed" --teacher "$tm" $rows --set train.checkpoint_every=100)
    [ "$terms" = logits ] && common+=(--set "$LOGITS" --set teacher_cache.dir="$OUT/cache/$set")
    job "$d/fp32-s$seed" distill recipes/qat-kd.yaml "${common[@]}" --set student.quantize=null
    if [ ! -d "$d/fp32-s$seed/model" ] && [ ! -f "results/quant/$set/qat-s$seed/metrics.json" ]; then
      echo "skip $d/qat-s$seed: it starts from $d/fp32-s$seed/model, which is not here"; continue
    fi
    job "$d/qat-s$seed" distill recipes/qat-kd.yaml "${common[@]}" --set student.init="$d/fp32-s$seed/model" \
      --set student.layers=all --set train.lr=2e-5 --set train.epochs=1
  done
done
echo "=== all done $(date -u +%H:%M:%S)"
