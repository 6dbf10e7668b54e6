#!/usr/bin/env bash
# docs/results.md section 4: BiLSTM students at the demo's scale (4,000 SST-2 rows, the demo teacher of
# scripts/demo.sh in runs/demo): FT on labels, KD (logit MSE), KD on the rows + the demo's Tang-augmented set.
#   nice scripts/bilstm_demo.sh > runs/bilstm.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
T=runs/demo/teacher/model
[ -f "$T/config.json" ] || { echo "run scripts/demo.sh first (it makes $T and runs/demo/transfer-tang)"; exit 2; }
TD=.venv/bin/textdistill
[ -f runs/bilstm/ft/metrics.json ] || $TD finetune -r recipes/bilstm.yaml -o runs/bilstm/ft --overwrite \
  --set teacher=null --set "terms=[]" --set hard_weight=1 --set student.init=$T
[ -f runs/bilstm/kd/metrics.json ] || $TD distill -r recipes/bilstm.yaml -o runs/bilstm/kd --overwrite --teacher $T
[ -f runs/bilstm/kd-tang/metrics.json ] || $TD distill -r recipes/bilstm.yaml -o runs/bilstm/kd-tang --overwrite \
  --teacher $T --set transfer.dir=runs/demo/transfer-tang --set "transfer.augment={method: tang, copies: 5}"
